"""What every gradient engine offers."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from gradlab.model import MLP

Clip = Callable[[torch.Tensor], torch.Tensor]
"""DP-SGD's clipping: each example's squared gradient norms -> its factors (see
:meth:`gradlab.privacy.Privatizer.clip`)."""


class Engine:
    """Turns a batch into (loss, logits) and fills ``param.grad`` of ``self.model``."""

    name = ""
    model: MLP

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def clipped_step(
        self, x: torch.Tensor, y: torch.Tensor, clip: Clip
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """DP-SGD's backward: ``p.grad = sum_b c_b * dL_b/dp`` with the factors ``c`` that
        ``clip`` returns for each example's squared gradient norms (see
        :class:`gradlab.privacy.Privatizer`)."""
        raise NotImplementedError

    def measured_step(
        self, x: torch.Tensor, y: torch.Tensor, x_norms: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`step` (``p.grad`` bit for bit the same) and the ``(B, K)`` matrix of each
        example's squared gradient norm per tensor (fc1.weight, fc1.bias, ...): the gradient
        of the example's own loss, unscaled, for the probes (:mod:`gradlab.probes`).
        ``x_norms``: each row of ``x``'s L2 norm, when the caller has them (the loop
        computes the training set's once)."""
        raise NotImplementedError

    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named gradients of the mean cross-entropy on (x, y), as copies (for checks)."""
        self.step(x, y)
        return {name: grad_of(p).detach().clone() for name, p in self.model.named_parameters()}


def grad_of(p: torch.Tensor) -> torch.Tensor:
    """``p.grad``, which an engine has filled (a missing one is a bug: RuntimeError)."""
    if p.grad is None:
        raise RuntimeError("the engine left a parameter without a gradient")
    return p.grad
