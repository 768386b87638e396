"""The analytic engine: the two-layer network's gradients derived by hand.

With ``z1 = x W1^T + b1``, ``h = act(z1)``, ``z2 = h W2^T + b2``, ``out = z2`` (or
``relu(z2)``) and the mean cross-entropy ``L = -1/B sum_b log softmax(out_b)[y_b]``::

    dL/dout = (softmax(out) - onehot(y)) / B
    dL/dz2  = dL/dout * 1[z2 > 0]            (output ReLU only)
    dL/dW2  = (dL/dz2)^T h,     dL/db2 = sum_b dL/dz2
    dL/dh   = dL/dz2 W2
    dL/dz1  = dL/dh * act'(z1)  relu: 1[z1 > 0]; tanh: 1 - h^2; sigmoid: h (1 - h)
    dL/dW1  = (dL/dz1)^T x,     dL/db1 = sum_b dL/dz1

Results go straight into the preallocated ``param.grad`` tensors (``out=``), intermediate
tensors are reused between steps of the same batch size, the ``1/B`` of the mean is folded
into the matrix products, the ReLU derivative is applied in one op (``threshold_backward``,
as autograd does), and no autograd graph is built.
Weight decay stays in the optimizer, as with autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gradlab.engines.base import Engine


class AnalyticEngine(Engine):
    name = "analytic"

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.W1, self.b1 = model.fc1.weight, model.fc1.bias
        self.W2, self.b2 = model.fc2.weight, model.fc2.bias
        self.activation = model.cfg.activation
        self.output_relu = model.output_relu
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        self.grads = (self.W1.grad, self.b1.grad, self.W2.grad, self.b2.grad)
        self.W1_t, self.W2_t = self.W1.detach().t(), self.W2.detach().t()
        self._work: dict[int, dict[str, torch.Tensor]] = {}

    def _buffers(self, batch: int) -> dict[str, torch.Tensor]:
        work = self._work.get(batch)
        if work is None:
            like = self.W1
            hidden = self.W1.shape[0]
            dh = like.new_empty(batch, hidden)
            dout = like.new_empty(batch, 10)
            work = {
                "z1": like.new_empty(batch, hidden),
                "h": like.new_empty(batch, hidden),
                "dh": dh,
                "dh_t": dh.t(),
                "z2": like.new_empty(batch, 10),
                "out": like.new_empty(batch, 10),
                "dout": dout,
                "dout_t": dout.t(),
                "minus_one": like.new_full((batch, 1), -1.0),
            }
            self._work[batch] = work
        return work

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward on one batch: returns (loss, logits) and fills ``p.grad``."""
        batch = x.shape[0]
        w = self._buffers(batch)
        z1, h, dh, z2, dout = w["z1"], w["h"], w["dh"], w["z2"], w["dout"]
        W2 = self.W2
        W1_grad, b1_grad, W2_grad, b2_grad = self.grads

        # forward (W1^T and W2^T are views made once: they follow in-place updates)
        torch.addmm(self.b1, x, self.W1_t, out=z1)
        if self.activation == "relu":
            torch.clamp_min(z1, 0, out=h)
        elif self.activation == "tanh":
            torch.tanh(z1, out=h)
        else:
            torch.sigmoid(z1, out=h)
        torch.addmm(self.b2, h, self.W2_t, out=z2)
        out = torch.clamp_min(z2, 0, out=w["out"]) if self.output_relu else z2
        torch.log_softmax(out, dim=1, out=dout)
        loss = F.nll_loss(dout, y)  # = F.cross_entropy(out, y)

        # backward: B * dL/dout = softmax - onehot, in place; the 1/B goes into the products
        dout.exp_().scatter_add_(1, y.unsqueeze(1), w["minus_one"])
        if self.output_relu:
            torch.ops.aten.threshold_backward.grad_input(dout, z2, 0.0, grad_input=dout)
        inv = 1.0 / batch
        torch.addmm(W2_grad, w["dout_t"], h, beta=0, alpha=inv, out=W2_grad)
        torch.mean(dout, dim=0, out=b2_grad)
        torch.addmm(dh, dout, W2, beta=0, alpha=inv, out=dh)
        if self.activation == "relu":  # dh * 1[z1 > 0] in one op, as autograd's ReLU does
            torch.ops.aten.threshold_backward.grad_input(dh, h, 0.0, grad_input=dh)
        elif self.activation == "tanh":
            dh.mul_(1 - h * h)
        else:
            dh.mul_(h * (1 - h))
        torch.mm(w["dh_t"], x, out=W1_grad)
        torch.sum(dh, dim=0, out=b1_grad)
        return loss, out
