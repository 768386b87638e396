"""The network of the study, a multi-layer perceptron, and its initialization schemes."""

from __future__ import annotations

import torch
from torch import nn

from gradlab.config import ModelConfig
from gradlab.schema import CLASSES, INPUT_SIZE

_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


class MLP(nn.Module):
    """``Linear(784, h1) -> act -> ... -> Linear(hK, 10) [-> ReLU]`` for hidden widths
    ``h1..hK`` (``model.hidden``); one hidden layer is the study's two-layer net.

    Parameters are named ``fc1.weight, fc1.bias, ..., fcN.weight, fcN.bias`` (N = K + 1, in
    the order of :meth:`ModelConfig.parameter_shapes`); edits target them by these names.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        sizes = [INPUT_SIZE, *cfg.widths, CLASSES]
        for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:], strict=False), start=1):
            setattr(self, f"fc{i}", nn.Linear(fan_in, fan_out))
        self.activation = _ACTIVATIONS[cfg.activation]
        self.output_relu = cfg.output_activation == "relu"
        initialize(self, cfg)

    @property
    def layers(self) -> list[nn.Linear]:
        """``fc1 .. fcN`` in order (the last one makes the logits)."""
        return [getattr(self, f"fc{i}") for i in range(1, len(self.cfg.widths) + 2)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trace(x)[0]

    def trace(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """The forward pass with what per-example gradients need: ``(out, inputs, z)``, each
        layer's input (``x`` for fc1) and its output before the activation."""
        *hidden, last = self.layers
        h = x.flatten(1)
        inputs, z = [], []
        for layer in hidden:
            inputs.append(h)
            z.append(layer(h))
            h = self.activation(z[-1])
        inputs.append(h)
        z.append(last(h))
        return (torch.relu(z[-1]) if self.output_relu else z[-1]), inputs, z


TwoLayerNet = MLP
"""The former name of :class:`MLP` (the default config builds the two-layer net)."""

# init name -> (function on a weight tensor); kaiming uses fan in and the ReLU gain, xavier
# gain 1, whatever the activation (the schemes as their papers give them)
_INITS = {
    "xavier_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
    "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
}
_ALIASES = {"xavier": "xavier_uniform", "kaiming": "kaiming_normal"}


def initialize(net: MLP, cfg: ModelConfig) -> None:
    """Apply ``cfg.init`` to every layer, fc1 first (``default`` keeps PyTorch's own
    initialization; the others zero the biases)."""
    if cfg.init == "default":
        return
    scheme = _ALIASES.get(cfg.init, cfg.init)
    with torch.no_grad():
        for layer in net.layers:
            if scheme == "normal":
                nn.init.normal_(layer.weight, mean=0.0, std=cfg.init_std)
            else:
                _INITS[scheme](layer.weight)
            nn.init.zeros_(layer.bias)
