"""A probe of one's own: the signal-to-noise ratio of each layer's batch gradient.

    |G_B|^2 / (tr(Sigma) / B)  ~  |G_B|^2 (B - 1) / (S - |G_B|^2)

with S the batch mean of the examples' squared gradient norms: above 1, the batch gradient
is mostly signal; near 1 or below, mostly sampling noise. It measures, it changes nothing
(gradlab checks that), and it is not part of the experiment.

    diagnostics: {probes: [grad_snr.py:GradSNR]}
"""

import torch

import gradlab


class GradSNR(gradlab.Probe):
    """Signal-to-noise of each layer's batch gradient: |G_B|^2 over the variance of the mean."""

    per_example = True  # asks for view.per_example: (B, K) squared norms, one per tensor

    def __init__(self, params, names, device):
        super().__init__(params, names, device)
        self.layers = list(dict.fromkeys(n.rpartition(".")[0] for n in names))
        self.masks = [
            torch.tensor([n.startswith(layer + ".") for n in names], device=device)
            for layer in self.layers
        ]

    def stat_names(self):
        return self.layers  # columns probe.gradsnr.fc1, probe.gradsnr.fc2, ...

    def measure(self, view):
        b = max(view.batch_size - 1, 1)
        batch_sq, mean_sq = view.squared_norms(), view.per_example.mean(0)
        stats = {}
        for layer, mine in zip(self.layers, self.masks, strict=True):
            signal = batch_sq[mine].sum()
            stats[layer] = signal * b / (mean_sq[mine].sum() - signal)
        return stats
