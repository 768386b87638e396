"""The autograd engine: the network's forward, cross-entropy, (scaled) backward."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gradlab.engines.base import Engine


class AutogradEngine(Engine):
    name = "autograd"

    def __init__(
        self, model: torch.nn.Module, scaler=None, amp_dtype: torch.dtype | None = None
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
