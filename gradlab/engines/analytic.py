"""The analytic engine: the network's gradients derived by hand, for any depth.

With layers ``i = 1..N``, ``a0 = x``, ``zi = a(i-1) Wi^T + bi``, ``ai = act(zi)`` for the
hidden layers (``i < N``), ``out = zN`` (or ``relu(zN)``) and the mean cross-entropy
``L = -1/B sum_b log softmax(out_b)[y_b]``::

    dL/dout = (softmax(out) - onehot(y)) / B
    dL/dzN  = dL/dout * 1[zN > 0]             (output ReLU only)
    then for i = N down to 1:
    dL/dWi  = (dL/dzi)^T a(i-1),   dL/dbi = sum_b dL/dzi
    dL/da(i-1) = dL/dzi Wi                     (not for i = 1)
    dL/dz(i-1) = dL/da(i-1) * act'(z(i-1))   relu: 1[z > 0]; tanh: 1 - a^2; sigmoid: a (1 - a)

Results go straight into the preallocated ``param.grad`` tensors (``out=``), intermediate
tensors are reused between steps of the same batch size, the ``1/B`` of the mean is folded
into the products of the last layer (the layers below receive gradients already divided),
the ReLU derivative is applied in one op (``threshold_backward``, as autograd does), and no
autograd graph is built. Weight decay stays in the optimizer, as with autograd.

:meth:`AnalyticEngine.clipped_step` (DP-SGD) runs the same backward for the *sum* of the
per-example losses, so row ``b`` of ``dL/dzi`` is example b's own output gradient ``d_b``;
it computes every example's squared gradient norm per tensor from the identities
``||dL_b/dWi||^2 = ||a(i-1)_b||^2 ||d_b||^2`` and ``||dL_b/dbi||^2 = ||d_b||^2`` (the
gradient of one example is the outer product ``d_b a_b^T``), asks for the clipping factors
``c`` and only then forms ``dL/dWi = (c * dL/dzi)^T a(i-1)`` and ``dL/dbi = c^T dL/dzi``:
per-example gradients are never materialized.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from gradlab.engines.base import Clip, Engine, grad_of

if TYPE_CHECKING:
    from gradlab.model import MLP

_threshold_backward = torch.ops.aten.threshold_backward.grad_input


def activate(activation: str, z: torch.Tensor, out: torch.Tensor) -> None:
    """``out = act(z)`` for ``relu``, ``tanh`` or ``sigmoid``."""
    if activation == "relu":
        torch.clamp_min(z, 0, out=out)
    elif activation == "tanh":
        torch.tanh(z, out=out)
    else:
        torch.sigmoid(z, out=out)


def activation_backward(activation: str, d: torch.Tensor, a: torch.Tensor) -> None:
    """``d *= act'(z)`` in place, from the activation's output ``a``."""
    if activation == "relu":  # d * 1[z > 0] in one op, as autograd's ReLU does
        _threshold_backward(d, a, 0.0, grad_input=d)
    elif activation == "tanh":
        d.mul_(1 - a * a)
    else:
        d.mul_(a * (1 - a))


class AnalyticEngine(Engine):
    name = "analytic"

    def __init__(self, model: MLP) -> None:
        self.model = model
        layers = model.layers
        self.weights = [layer.weight for layer in layers]
        self.biases = [layer.bias for layer in layers]
        self.activation = model.cfg.activation
        self.output_relu = model.output_relu
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        # the gradient tensors, filled in place at every step (the loop reads p.grad)
        self.weight_grads = [grad_of(w) for w in self.weights]
        self.bias_grads = [grad_of(b) for b in self.biases]
        # W^T as views made once: they follow the optimizer's in-place updates
        self.weights_t = [w.detach().t() for w in self.weights]
        self._rows = 0  # the work tensors' capacity: the largest batch so far
        self._full: dict[str, list[torch.Tensor]] = {}
        self._views: tuple[int, dict[str, list[torch.Tensor]]] | None = None
        self._scales: tuple[int, torch.Tensor] = (0, self.weights[0].new_ones(1, 1))

    def _buffers(self, batch: int) -> dict[str, list[torch.Tensor]]:
        """Work tensors for this batch size, per layer: pre-activations ``z``, outputs ``a``
        (the hidden activations, then the output after its ReLU), gradients ``d`` (dL/dz)
        and their transposes. One set for the largest batch so far, used through views of
        its first rows (contiguous): Poisson batches, whose size changes at every step,
        allocate nothing after the first few."""
        if self._views is not None and self._views[0] == batch:
            return self._views[1]
        if batch > self._rows:
            like = self.weights[0]
            widths = [w.shape[0] for w in self.weights]
            self._rows = batch
            self._full = {
                "z": [like.new_empty(batch, n) for n in widths],
                "a": [like.new_empty(batch, n) for n in widths],
                "d": [like.new_empty(batch, n) for n in widths],
                "minus_one": [like.new_full((batch, 1), -1.0)],
            }
        work = {key: [t[:batch] for t in tensors] for key, tensors in self._full.items()}
        work["d_t"] = [t.t() for t in work["d"]]
        self._views = (batch, work)
        return work

    def _own_rows(self, batch: int) -> torch.Tensor:
        """``(2N, 1)``: B for the rows of ``||d||`` below the last layer, else 1."""
        if self._scales[0] != batch:
            scale = self.weights[0].new_ones(2 * len(self.weights), 1)
            scale[1 : 2 * len(self.weights) - 2 : 2] = batch
            self._scales = (batch, scale)
        return self._scales[1]

    def _forward(
        self, x: torch.Tensor, y: torch.Tensor, w: dict[str, list[torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward pass into the work tensors ``w``, the mean loss, and in the last
        layer's ``d`` the gradient of the *sum* of the losses with respect to its output
        (``softmax - onehot``, masked by the output ReLU). Returns (loss, logits)."""
        z, a, d = w["z"], w["a"], w["d"]
        last = len(self.weights) - 1
        inputs = x
        for i in range(last):
            torch.addmm(self.biases[i], inputs, self.weights_t[i], out=z[i])
            activate(self.activation, z[i], a[i])
            inputs = a[i]
        torch.addmm(self.biases[last], inputs, self.weights_t[last], out=z[last])
        out = torch.clamp_min(z[last], 0, out=a[last]) if self.output_relu else z[last]
        dout = d[last]
        torch.log_softmax(out, dim=1, out=dout)
        loss = F.nll_loss(dout, y)  # = F.cross_entropy(out, y)
        dout.exp_().scatter_add_(1, y.unsqueeze(1), w["minus_one"][0])  # in place
        if self.output_relu:
            _threshold_backward(dout, z[last], 0.0, grad_input=dout)
        return loss, out

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward on one batch: returns (loss, logits) and fills ``p.grad``."""
        batch = x.shape[0]
        w = self._buffers(batch)
        a, d, d_t = w["a"], w["d"], w["d_t"]
        last = len(self.weights) - 1
        # B * dL/dout = softmax - onehot; the 1/B goes into the products of the last layer,
        # whose dL/da below is then exact
        loss, out = self._forward(x, y, w)
        inv = 1.0 / batch
        for i in range(last, -1, -1):
            below = a[i - 1] if i > 0 else x
            if i == last:
                torch.addmm(
                    self.weight_grads[i], d_t[i], below, beta=0, alpha=inv,
                    out=self.weight_grads[i],
                )  # fmt: skip
                torch.mean(d[i], dim=0, out=self.bias_grads[i])
            else:
                torch.mm(d_t[i], below, out=self.weight_grads[i])
                torch.sum(d[i], dim=0, out=self.bias_grads[i])
            if i > 0:
                scale = inv if i == last else 1.0
                torch.addmm(d[i - 1], d[i], self.weights[i], beta=0, alpha=scale, out=d[i - 1])
                activation_backward(self.activation, d[i - 1], a[i - 1])
        return loss, out

    @torch.no_grad()
    def clipped_step(
        self, x: torch.Tensor, y: torch.Tensor, clip: Clip
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward with per-example clipping: fills ``p.grad`` with
        ``sum_b c_b * dL_b/dp``, where ``c = clip(squared_norms)`` for the ``(B, K)`` matrix of
        each example's squared gradient norm per parameter tensor (fc1.weight, fc1.bias, ...).
        Returns (mean loss, logits)."""
        batch = x.shape[0]
        w = self._buffers(batch)
        a, d = w["a"], w["d"]
        last = len(self.weights) - 1
        loss, out = self._forward(x, y, w)

        # d_b = dL_b/dz for every layer (the sum's gradient: no 1/B)
        for i in range(last, 0, -1):
            torch.mm(d[i], self.weights[i], out=d[i - 1])
            activation_backward(self.activation, d[i - 1], a[i - 1])

        # squared norms per example and tensor: ||a||^2 ||d||^2 (weight), ||d||^2 (bias)
        squared = x.new_empty(batch, 2 * (last + 1))
        norms = x.new_empty(2, batch)
        for i in range(last + 1):
            below = a[i - 1] if i > 0 else x
            torch.linalg.vector_norm(d[i], dim=1, out=norms[1])
            torch.linalg.vector_norm(below, dim=1, out=norms[0])
            torch.mul(norms[0], norms[1], out=squared[:, 2 * i])
            squared[:, 2 * i + 1] = norms[1]
        squared.square_()  # (||a|| ||d||)^2 and ||d||^2: no B x width temporaries
        factors = clip(squared)
        for i in range(last + 1):
            below = a[i - 1] if i > 0 else x
            torch.mm((d[i] * factors[:, 2 * i, None]).t(), below, out=self.weight_grads[i])
            torch.mv(d[i].t(), factors[:, 2 * i + 1], out=self.bias_grads[i])
        return loss, out

    @torch.no_grad()
    def measured_step(
        self, x: torch.Tensor, y: torch.Tensor, x_norms: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`step`, then each example's squared gradient norm per tensor from the work
        tensors it leaves: row b of the last layer's ``d`` is example b's own output
        gradient, the layers below hold it divided by B. A few operations on ``(K, B)``;
        ``x_norms``: the rows' norms, when the caller has them."""
        loss, out = self.step(x, y)
        batch = x.shape[0]
        w = self._buffers(batch)
        a, d = w["a"], w["d"]
        last = len(self.weights) - 1
        vector_norm = torch.linalg.vector_norm
        rows = [vector_norm(x, dim=1) if x_norms is None else x_norms]  # ||a||, ||d|| per layer
        for i in range(last + 1):
            rows += (
                [vector_norm(a[i - 1], dim=1), vector_norm(d[i], dim=1)]
                if i
                else [vector_norm(d[0], dim=1)]
            )
        norms = torch.stack(rows)
        norms.mul_(self._own_rows(batch))  # below the last layer, B * d is the example's own
        norms.square_()
        norms[0::2].mul_(norms[1::2])  # the weight's ||a||^2 ||d||^2; the bias's ||d||^2
        return loss, out, norms.t()
