"""What every gradient engine offers."""

from __future__ import annotations

import torch


class Engine:
    """Turns a batch into (loss, logits) and fills ``param.grad`` of ``self.model``."""

    name = ""
    model: torch.nn.Module

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named gradients of the mean cross-entropy on (x, y), as copies (for checks)."""
        self.step(x, y)
        return {name: p.grad.detach().clone() for name, p in self.model.named_parameters()}
