"""Adam and AdamW (``torch.optim.Adam``, ``torch.optim.AdamW``), with optional AMSGrad."""

from __future__ import annotations

import torch

from gradlab.optimizers.base import Optimizer, Tensors
from gradlab.optimizers.registry import register


@register
class Adam(Optimizer):
    """``torch.optim.Adam`` (Kingma & Ba 2015). Per parameter, at its step ``t``::

    g <- g + weight_decay * w                       (L2: the moments see the decay)
    m <- beta1 * m + (1 - beta1) * g
    v <- beta2 * v + (1 - beta2) * g^2
    v_max <- max(v_max, v)                          (AMSGrad; v_max replaces v below)
    w <- w - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """

    name = "adam"
    keys = ("betas", "eps", "weight_decay", "amsgrad")
    reference = "torch.optim.Adam"
    decoupled_weight_decay = False

    def update(self, names: list[str], params: list[torch.Tensor], grads: Tensors) -> None:
        cfg = self.cfg
        lr, (beta1, beta2), weight_decay = self.lr, cfg.betas, cfg.weight_decay
        buffers = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if cfg.amsgrad else ())
        states = self.states(names, params, *buffers)
        if weight_decay != 0:
            if self.decoupled_weight_decay:
                torch._foreach_mul_(params, 1 - lr * weight_decay)
            else:
                grads = torch._foreach_add(grads, params, alpha=weight_decay)
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)

        # each parameter has its own step count (a frozen one skipped steps)
        steps = [s["step"] for s in states]
        step_sizes = [(lr / (1 - beta1**t)) * -1 for t in steps]
        bias_correction2_sqrt = [(1 - beta2**t) ** 0.5 for t in steps]
        if cfg.amsgrad:
            max_exp_avg_sqs = [s["max_exp_avg_sq"] for s in states]
            torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
            denom = torch._foreach_sqrt(max_exp_avg_sqs)
        else:
            denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, cfg.eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, step_sizes)


@register
class AdamW(Adam):
    """``torch.optim.AdamW`` (Loshchilov & Hutter 2019): Adam with decoupled weight decay,
    ``w <- w * (1 - lr * weight_decay)`` before the update; the moments never see it."""

    name = "adamw"
    reference = "torch.optim.AdamW"
    decoupled_weight_decay = True
