"""What every gradient engine offers."""

from __future__ import annotations

import torch


class Engine:
    """Turns a batch into (loss, logits) and fills ``param.grad`` of ``self.model``."""

    name = ""
    model: torch.nn.Module

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def clipped_step(
        self, x: torch.Tensor, y: torch.Tensor, clip
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """DP-SGD's backward: ``p.grad = sum_b c_b * dL_b/dp`` with the factors ``c`` that
        ``clip`` returns for each example's squared gradient norms (see
        :class:`gradlab.privacy.Privatizer`)."""
        raise NotImplementedError

    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named gradients of the mean cross-entropy on (x, y), as copies (for checks)."""
        self.step(x, y)
        return {name: p.grad.detach().clone() for name, p in self.model.named_parameters()}
