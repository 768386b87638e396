"""Packed runs (issue 24, first part): R networks of the same architecture trained side by
side as one batched program, each replica its own run.

The weights of layer ``i`` of every replica are one tensor ``(R, out, in)`` (biases
``(R, out)``), a batch is ``(R, B, 784)`` (each replica's own examples, from its own data
order) and the analytic engine's derivation (:mod:`gradlab.engines.analytic`) runs along
the leading replica dimension with ``baddbmm``/``bmm``::

    z_i = a_(i-1) W_i^T + b_i            (R, B, out)   baddbmm
    dL/dW_i = (dL/dz_i)^T a_(i-1)         (R, out, in)  bmm
    dL/db_i = sum_b dL/dz_i               (R, out)
    dL/da_(i-1) = dL/dz_i W_i             (R, B, in)    bmm

with the mean's ``1/B`` folded into the last layer's products, as the single-run engine
does. A replica's numbers are those of the same run trained alone (the tests compare them
in float64 over 200 steps); :class:`PackedSGD` updates each replica with its own learning
rate, momentum, dampening and weight decay (tensors along the leading dimension).

Not yet wired into ``gradlab sweep`` (``--pack``): that, the other optimizers and edits,
DP-SGD and the per-replica logs are the rest of the issue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from gradlab.engines.analytic import activate, activation_backward

if TYPE_CHECKING:
    from gradlab.model import MLP

_threshold_backward = torch.ops.aten.threshold_backward.grad_input


def stack_models(models: Sequence[MLP]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The weights and biases of ``models`` (gradlab MLPs of one architecture), layer by
    layer, stacked along a new leading replica dimension (copies)."""
    layers = [list(m.layers) for m in models]
    depth = len(layers[0])
    weights = [torch.stack([ls[i].weight.detach() for ls in layers]).clone() for i in range(depth)]
    biases = [torch.stack([ls[i].bias.detach() for ls in layers]).clone() for i in range(depth)]
    return weights, biases


class PackedAnalyticEngine:
    """Forward and backward of R replicas at once, gradients into preallocated tensors.

    Args:
        weights: per layer ``(R, out, in)``; biases: per layer ``(R, out)`` (updated in place
            by the optimizer; the engine reads them at every step).
        activation: ``relu``, ``tanh`` or ``sigmoid`` after each hidden layer.
        output_relu: ReLU on the logits (``model.output_activation: relu``).
    """

    def __init__(
        self,
        weights: list[torch.Tensor],
        biases: list[torch.Tensor],
        activation: str = "relu",
        output_relu: bool = False,
    ) -> None:
        self.weights, self.biases = weights, biases
        self.activation, self.output_relu = activation, output_relu
        self.weight_grads = [torch.zeros_like(w) for w in weights]
        self.bias_grads = [torch.zeros_like(b) for b in biases]
        self._work: tuple[int, dict[str, list[torch.Tensor]]] | None = None
        self._inputs: torch.Tensor | None = None

    @property
    def replicas(self) -> int:
        return self.weights[0].shape[0]

    def _buffers(self, batch: int) -> dict[str, list[torch.Tensor]]:
        """Work tensors for this batch size (made once, reused at every step): per layer the
        pre-activations ``z``, the activations ``a`` and the gradients ``d``."""
        if self._work is not None and self._work[0] == batch:
            return self._work[1]
        like, r = self.weights[0], self.replicas
        widths = [w.shape[1] for w in self.weights]
        work = {
            "z": [like.new_empty(r, batch, n) for n in widths],
            "a": [like.new_empty(r, batch, n) for n in widths],
            "d": [like.new_empty(r, batch, n) for n in widths],
            "minus_one": [like.new_full((r, batch, 1), -1.0)],
        }
        self._work = (batch, work)
        return work

    def gather(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Each replica's batch ``(R, B, 784)`` of the rows ``idx`` ``(R, B)`` of ``x``, into
        one buffer reused from step to step."""
        r, batch = idx.shape
        if self._inputs is None or self._inputs.shape != (r, batch, x.shape[1]):
            self._inputs = x.new_empty(r, batch, x.shape[1])
        torch.index_select(x, 0, idx.reshape(-1), out=self._inputs.view(r * batch, -1))
        return self._inputs

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of every replica: ``x`` ``(R, B, 784)``, ``y`` ``(R, B)``. Returns each
        replica's mean loss ``(R,)`` and logits ``(R, B, 10)``; fills the gradients."""
        batch = x.shape[1]
        last = len(self.weights) - 1
        w = self._buffers(batch)
        z, a, d = w["z"], w["a"], w["d"]
        inputs = x
        for i in range(last + 1):
            torch.baddbmm(
                self.biases[i].unsqueeze(1), inputs, self.weights[i].transpose(1, 2), out=z[i]
            )
            if i < last:
                activate(self.activation, z[i], a[i])
                inputs = a[i]
        out = torch.clamp_min(z[last], 0, out=a[last]) if self.output_relu else z[last]
        dout = d[last]
        torch.log_softmax(out, dim=2, out=dout)
        loss = dout.gather(2, y.unsqueeze(2)).squeeze(2).mean(1).neg_()
        dout.exp_().scatter_add_(2, y.unsqueeze(2), w["minus_one"][0])  # softmax - onehot
        if self.output_relu:
            _threshold_backward(dout, z[last], 0.0, grad_input=dout)
        inv = 1.0 / batch
        for i in range(last, -1, -1):
            below = a[i - 1] if i > 0 else x
            torch.bmm(d[i].transpose(1, 2), below, out=self.weight_grads[i])
            if i == last:
                self.weight_grads[i].mul_(inv)
                torch.mean(d[i], dim=1, out=self.bias_grads[i])
            else:
                torch.sum(d[i], dim=1, out=self.bias_grads[i])
            if i > 0:
                torch.bmm(d[i], self.weights[i], out=d[i - 1])
                if i == last:
                    d[i - 1].mul_(inv)
                activation_backward(self.activation, d[i - 1], a[i - 1])
        return loss, out


class PackedSGD:
    """``torch.optim.SGD`` for every replica at once, each with its own ``lr``, ``momentum``,
    ``dampening``, ``weight_decay`` (``(R,)`` tensors) and the same ``nesterov``::

        g <- g + weight_decay * w
        b <- g (first step), else momentum * b + (1 - dampening) * g
        g <- g + momentum * b (Nesterov), else b     (replicas with momentum > 0)
        w <- w - lr * g
    """

    def __init__(
        self,
        params: list[torch.Tensor],
        lr: torch.Tensor,
        momentum: torch.Tensor,
        dampening: torch.Tensor,
        weight_decay: torch.Tensor,
        nesterov: bool = False,
    ) -> None:
        self.params = params
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.weight_decay, self.nesterov = weight_decay, nesterov
        self.buffers: list[torch.Tensor] | None = None

    @staticmethod
    def _along(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``(R,)`` values shaped to broadcast over a ``(R, ...)`` tensor."""
        return values.reshape(-1, *([1] * (like.dim() - 1)))

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        updates = []
        for p, g in zip(self.params, grads, strict=True):
            updates.append(g + self._along(self.weight_decay, p) * p)
        if self.buffers is None:
            self.buffers = [u.clone() for u in updates]
        else:
            for b, u in zip(self.buffers, updates, strict=True):
                b.mul_(self._along(self.momentum, b)).add_(self._along(1 - self.dampening, b) * u)
        moving = self.momentum > 0
        for p, u, b in zip(self.params, updates, self.buffers, strict=True):
            step = u + self._along(self.momentum, b) * b if self.nesterov else b
            step = torch.where(self._along(moving, p), step, u)  # no momentum: the gradient
            p.sub_(self._along(self.lr, p) * step)
