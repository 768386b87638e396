"""The two-layer network of the study and its initialization schemes."""

from __future__ import annotations

import torch
from torch import nn

from gradlab.config import ModelConfig

_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


class TwoLayerNet(nn.Module):
    """``Linear(784, hidden) -> activation -> Linear(hidden, 10) [-> ReLU]``.

    Parameters are named ``fc1.weight, fc1.bias, fc2.weight, fc2.bias``; edits target them
    by these names.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.fc1 = nn.Linear(784, cfg.hidden)
        self.fc2 = nn.Linear(cfg.hidden, 10)
        self.activation = _ACTIVATIONS[cfg.activation]
        self.output_relu = cfg.output_activation == "relu"
        initialize(self, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc2(self.activation(self.fc1(x.flatten(1))))
        return torch.relu(logits) if self.output_relu else logits


def initialize(net: TwoLayerNet, cfg: ModelConfig) -> None:
    """Apply ``cfg.init`` to both layers (``default`` keeps PyTorch's own initialization)."""
    if cfg.init == "default":
        return
    with torch.no_grad():
        for layer in (net.fc1, net.fc2):
            if cfg.init == "normal":
                nn.init.normal_(layer.weight, mean=0.0, std=cfg.init_std)
            elif cfg.init == "xavier":
                nn.init.xavier_uniform_(layer.weight)
            elif cfg.init == "kaiming":
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
