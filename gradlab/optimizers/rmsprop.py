"""RMSprop (``torch.optim.RMSprop``), plain or centered, with optional momentum."""

from __future__ import annotations

import torch

from gradlab.optimizers.base import Optimizer, Tensors
from gradlab.optimizers.registry import register


@register
class RMSprop(Optimizer):
    """``torch.optim.RMSprop`` (Hinton's lecture 6e). Per parameter::

    g <- g + weight_decay * w
    v <- alpha * v + (1 - alpha) * g^2
    a <- alpha * a + (1 - alpha) * g;  d <- sqrt(v - a^2) + eps   (centered)
    d <- sqrt(v) + eps                                            (otherwise)
    b <- momentum * b + g / d;  w <- w - lr * b                   (momentum > 0)
    w <- w - lr * g / d                                           (otherwise)
    """

    name = "rmsprop"
    keys = ("alpha", "eps", "weight_decay", "momentum", "centered")
    reference = "torch.optim.RMSprop"

    def update(self, names: list[str], params: list[torch.Tensor], grads: Tensors) -> None:
        cfg = self.cfg
        lr, alpha = self.lr, cfg.alpha
        buffers = ("square_avg",) + (("momentum_buffer",) if cfg.momentum > 0 else ())
        buffers += ("grad_avg",) if cfg.centered else ()
        states = self.states(names, params, *buffers)
        if cfg.weight_decay != 0:
            grads = torch._foreach_add(grads, params, alpha=cfg.weight_decay)
        square_avgs = [s["square_avg"] for s in states]
        torch._foreach_mul_(square_avgs, alpha)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
        if cfg.centered:
            grad_avgs = [s["grad_avg"] for s in states]
            torch._foreach_lerp_(grad_avgs, grads, 1 - alpha)
            avg = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)
            torch._foreach_sqrt_(avg)
        else:
            avg = torch._foreach_sqrt(square_avgs)
        torch._foreach_add_(avg, cfg.eps)
        if cfg.momentum > 0:
            momentum_buffers = [s["momentum_buffer"] for s in states]
            torch._foreach_mul_(momentum_buffers, cfg.momentum)
            torch._foreach_addcdiv_(momentum_buffers, grads, avg)
            torch._foreach_add_(params, momentum_buffers, alpha=-lr)
        else:
            torch._foreach_addcdiv_(params, grads, avg, value=-lr)
