"""SGD with momentum, dampening, Nesterov and weight decay, on lists of tensors at once.

It follows ``torch.optim.SGD``'s update rule to the letter (the tests compare the two), but
works on whole lists with ``torch._foreach_*`` ops and skips the lazy ``torch._dynamo``
import that constructing a ``torch.optim`` optimizer costs (about 2 s per run here).
It has the ``param_groups`` / ``step()`` interface that ``torch.amp.GradScaler`` uses.
"""

from __future__ import annotations

import torch

from gradlab.config import OptimConfig


class SGD:
    """``torch.optim.SGD`` for one parameter group.

    Per parameter, with gradient ``g``::

        g <- g + weight_decay * w
        b <- g (first step), else momentum * b + (1 - dampening) * g
        g <- g + momentum * b (Nesterov), else b          (when momentum > 0)
        w <- w - lr * g

    Parameters in ``frozen`` are left out of the update entirely (no weight decay, no
    momentum), so they stay bit-identical.
    """

    def __init__(self, params: dict[str, torch.Tensor], cfg: OptimConfig, frozen=()) -> None:
        self.names = [name for name in params if name not in set(frozen)]
        self.params = [params[name] for name in self.names]
        self.param_groups = [{"params": list(params.values()), "lr": cfg.lr}]
        self.cfg = cfg
        self.momentum_buffers: list[torch.Tensor] | None = None

    @property
    def lr(self) -> float:
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self.param_groups[0]["lr"] = value

    def zero_grad(self) -> None:
        for p in self.param_groups[0]["params"]:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        if not self.params:
            return
        cfg = self.cfg
        grads = [p.grad for p in self.params]
        if cfg.weight_decay != 0:
            grads = torch._foreach_add(grads, self.params, alpha=cfg.weight_decay)
        if cfg.momentum != 0:
            if self.momentum_buffers is None:
                self.momentum_buffers = [torch.clone(g).detach() for g in grads]
            else:
                torch._foreach_mul_(self.momentum_buffers, cfg.momentum)
                torch._foreach_add_(self.momentum_buffers, grads, alpha=1 - cfg.dampening)
            if cfg.nesterov:
                grads = torch._foreach_add(grads, self.momentum_buffers, alpha=cfg.momentum)
            else:
                grads = self.momentum_buffers
        torch._foreach_add_(self.params, grads, alpha=-self.lr)
