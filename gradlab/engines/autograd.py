"""The autograd engine: the network's forward, cross-entropy, (scaled) backward.

For DP-SGD, :meth:`AutogradEngine.clipped_step` lets autograd compute each layer's output
gradient ``dL/dz`` (under autocast and the GradScaler when they are on) and forms the
per-example norms and clipped sums from them, as the analytic engine does (see
:mod:`gradlab.engines.analytic`): no per-example gradient is materialized."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from gradlab.engines.base import Clip, Engine

if TYPE_CHECKING:
    from gradlab.model import MLP


class AutogradEngine(Engine):
    name = "autograd"

    def __init__(
        self,
        model: MLP,
        scaler: torch.amp.GradScaler | None = None,
        amp_dtype: torch.dtype | None = None,
    ) -> None:
        self.model = model
        self.params = list(model.parameters())
        self.scaler = scaler
        self.amp_dtype = amp_dtype
        self.device_type = self.params[0].device.type

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward on one batch: returns (loss, logits) and fills ``p.grad``
        (multiplied by the loss scale when a GradScaler is on: unscale before use)."""
        with torch.autocast(
            self.device_type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        ):
            logits = self.model(x)
        # the loss in float32 at least: half-precision logits are cast up, float64 ones stay
        wide = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
        loss = F.cross_entropy(wide, y)
        for p in self.params:
            p.grad = None
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return loss.detach(), logits.detach()

    def _traced_loss(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """The forward with each layer's input and pre-activation (:meth:`MLP.trace`, under
        autocast when AMP is on), the mean loss in float32 at least, and the loss as the
        backward takes it (times the loss scale under a GradScaler): (loss, scaled, logits,
        inputs, z)."""
        with torch.autocast(
            self.device_type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        ):
            logits, inputs, z = self.model.trace(x)
        wide = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
        loss = F.cross_entropy(wide, y)
        scaled = self.scaler.scale(loss) if self.scaler is not None else loss
        return loss, scaled, logits, inputs, z

    def measured_step(
        self, x: torch.Tensor, y: torch.Tensor, x_norms: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`step`'s forward and backward, asking autograd for each layer's output
        gradient ``dL/dz`` besides the parameters' (the same graph: the same values in
        ``p.grad``); each example's squared gradient norm per tensor is then
        ``||a_b||^2 ||B d_b||^2`` (weight) and ``||B d_b||^2`` (bias), unscaled."""
        loss, scaled, logits, inputs, z = self._traced_loss(x, y)
        (*grads,) = torch.autograd.grad(scaled, [*self.params, *z])
        for p, g in zip(self.params, grads, strict=False):
            p.grad = g
        dtype, vector_norm = self.params[0].dtype, torch.linalg.vector_norm
        with torch.no_grad():
            rows: list[torch.Tensor] = []  # ||a||, ||d|| per layer
            for a, d in zip(inputs, grads[len(self.params) :], strict=True):
                if x_norms is not None and not rows:  # fc1's input: the caller has them
                    rows.append(x_norms.to(dtype))
                else:
                    rows.append(vector_norm(a, dim=1, dtype=dtype))
                rows.append(vector_norm(d, dim=1, dtype=dtype))
            norms = torch.stack(rows)
            # B / (loss scale) makes each row of the mean's gradient the example's own
            if self.scaler is not None:
                one = torch.ones((), device=loss.device, dtype=torch.float32)
                norms[1::2].mul_(x.shape[0] / self.scaler.scale(one))
            else:
                norms[1::2].mul_(x.shape[0])
            norms.square_()
            norms[0::2].mul_(norms[1::2])  # the weight's ||a||^2 ||d||^2; the bias's ||d||^2
        return loss.detach(), logits.detach(), norms.t()

    def clipped_step(
        self, x: torch.Tensor, y: torch.Tensor, clip: Clip
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward with per-example clipping: fills ``p.grad`` with
        ``sum_b c_b * dL_b/dp`` (times the loss scale under a GradScaler: unscale before use),
        ``c = clip(squared_norms)`` for the ``(B, K)`` matrix of each example's squared
        gradient norm per tensor (computed from the unscaled gradients). Returns (mean loss,
        logits)."""
        # the mean's gradient, d/B per example, keeps fp16 in range as in a plain step
        loss, scaled, logits, inputs, z = self._traced_loss(x, y)
        grads_z = torch.autograd.grad(scaled, z)
        dtype = self.params[0].dtype
        # 1 / (loss scale) * B turns each row into the example's own, unscaled, gradient
        one = torch.ones((), device=loss.device, dtype=torch.float32)
        scale = self.scaler.scale(one) if self.scaler is not None else one
        per_example = x.shape[0] / scale
        with torch.no_grad():
            rows = [g.to(dtype) * per_example for g in grads_z]
            ins = [a.detach().to(dtype) for a in inputs]
            squared = torch.empty(x.shape[0], 2 * len(rows), device=x.device, dtype=dtype)
            for i, (d, a) in enumerate(zip(rows, ins, strict=True)):
                squared[:, 2 * i + 1] = torch.linalg.vector_norm(d, dim=1)
                squared[:, 2 * i] = torch.linalg.vector_norm(a, dim=1) * squared[:, 2 * i + 1]
            squared.square_()
            factors = clip(squared)
            # the sums stay multiplied by the loss scale, as the GradScaler expects
            factors = factors * scale
            for i, (d, a) in enumerate(zip(rows, ins, strict=True)):
                weight, bias = self.params[2 * i], self.params[2 * i + 1]
                weight.grad = (d * factors[:, 2 * i, None]).t() @ a
                bias.grad = d.t() @ factors[:, 2 * i + 1]
        return loss.detach(), logits.detach()
