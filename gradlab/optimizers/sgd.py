"""SGD with momentum, dampening, Nesterov and weight decay (``torch.optim.SGD``)."""

from __future__ import annotations

import torch

from gradlab.optimizers.base import Optimizer, Tensors
from gradlab.optimizers.registry import register


@register
class SGD(Optimizer):
    """``torch.optim.SGD``. Per parameter, with gradient ``g``::

    g <- g + weight_decay * w
    b <- g (first step), else momentum * b + (1 - dampening) * g
    g <- g + momentum * b (Nesterov), else b          (when momentum > 0)
    w <- w - lr * g
    """

    name = "sgd"
    keys = ("momentum", "dampening", "nesterov", "weight_decay")
    reference = "torch.optim.SGD"

    def update(self, names: list[str], params: list[torch.Tensor], grads: Tensors) -> None:
        cfg = self.cfg
        if cfg.weight_decay != 0:
            grads = torch._foreach_add(grads, params, alpha=cfg.weight_decay)
        if cfg.momentum != 0:
            old = [(n, g) for n, g in zip(names, grads, strict=True) if n in self.state]
            if old:
                buffers = [self.state[n]["momentum_buffer"] for n, _ in old]
                torch._foreach_mul_(buffers, cfg.momentum)
                torch._foreach_add_(buffers, [g for _, g in old], alpha=1 - cfg.dampening)
            for n, g in zip(names, grads, strict=True):
                if n not in self.state:  # its first step: the buffer is its gradient
                    self.state[n] = {"momentum_buffer": torch.clone(g).detach()}
            buffers = [self.state[n]["momentum_buffer"] for n in names]
            if cfg.nesterov:
                grads = torch._foreach_add(grads, buffers, alpha=cfg.momentum)
            else:
                grads = buffers
        torch._foreach_add_(params, grads, alpha=-self.lr)
