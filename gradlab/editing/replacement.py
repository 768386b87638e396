"""Replacement: throw the gradient away, or keep only part of its information."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import ConfigDict, Field, model_validator

from gradlab.editing.base import Edit, EditParams, Tensors, global_norm
from gradlab.editing.perturbation import add_gaussian
from gradlab.editing.registry import register

# which optional parameter belongs to which replacement, and its default
_OPTIONS = {"sigma": ("gaussian", 0.1), "scale": ("sign", 1.0), "per_param": ("normalize", False)}


class ReplaceParams(EditParams):
    model_config = ConfigDict(**EditParams.model_config, serialize_by_alias=True)

    with_: Literal["gaussian", "sign", "normalize", "centralize", "zero"] = Field(
        "gaussian", alias="with"
    )
    """What replaces the gradient: `gaussian`, `sign`, `normalize`, `centralize` or `zero`."""
    sigma: float | None = Field(None, ge=0)
    """`with: gaussian`: std of the replacement (default 0.1, the tutorial's)."""
    scale: float | None = Field(None, gt=0)
    """`with: sign`: magnitude of every entry (default 1.0)."""
    per_param: bool | None = None
    """`with: normalize`: normalize each tensor on its own instead of all together (default false)."""

    @model_validator(mode="after")
    def _options_belong_to_their_replacement(self) -> ReplaceParams:
        for option, (owner, default) in _OPTIONS.items():
            value = getattr(self, option)
            if self.with_ == owner and value is None:
                setattr(self, option, default)
            elif self.with_ != owner and value is not None:
                raise ValueError(
                    f"{option} applies only to `with: {owner}`, not `with: {self.with_}`"
                )
        return self


@register
class Replace(Edit):
    """Replace the gradient by something else:

    - ``gaussian``: fresh noise, ``g <- N(0, sigma^2)`` (the tutorial's, sigma 0.1);
    - ``sign``: signSGD (Bernstein et al. 2018), ``g <- scale * sign(g)``;
    - ``normalize``: ``g <- g / ||g||``, over all targets together or per tensor;
    - ``centralize``: gradient centralization (Yong et al. 2020), for weight matrices
      ``g <- g - mean over all dims but the first`` (per output unit); vectors unchanged;
    - ``zero``: ``g <- 0`` (SGD's weight decay and momentum still move the weights; use
      ``freeze`` to stop them).

    Statistic: ``norm``, the L2 norm of the targeted gradients after replacement.
    """

    name = "replace"
    family = "replacement"
    summary = "replace the gradient: gaussian, sign, normalize, centralize or zero"
    Params = ReplaceParams
    params: ReplaceParams
    stats = ("norm",)

    def edit(self, grads: Tensors, weights: Tensors, step: int) -> Tensors:
        p = self.params
        tensors = list(grads.values())
        if p.with_ == "gaussian":
            torch._foreach_zero_(tensors)
            add_gaussian(grads, _set(p.sigma), self.generator)
        elif p.with_ == "sign":
            for g in tensors:
                g.sign_().mul_(_set(p.scale))
        elif p.with_ == "normalize":
            norms = torch.stack(torch._foreach_norm(tensors)).clamp_min(1e-12)
            if p.per_param:
                torch._foreach_div_(tensors, list(norms.unbind()))
            else:
                torch._foreach_div_(tensors, torch.linalg.vector_norm(norms))
        elif p.with_ == "centralize":
            for g in tensors:
                if g.ndim > 1:
                    g.sub_(g.mean(dim=tuple(range(1, g.ndim)), keepdim=True))
        else:
            torch._foreach_zero_(tensors)
        norm = global_norm(tensors)
        return {"norm": norm, "changed": torch.ones_like(norm)}


def _set(value: float | None) -> float:
    """An option of the chosen replacement: its validator has filled in the default."""
    if value is None:
        raise RuntimeError("ReplaceParams left an option of its replacement unset")
    return value
