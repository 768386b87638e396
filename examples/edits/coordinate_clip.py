"""A per-coordinate clip against a running RMS of each entry (an edit with state).

Each gradient entry is clipped to ``factor`` times the running root-mean-square of that
entry's past gradients, an exponential moving average of g^2 with decay ``beta``:

    v <- beta * v + (1 - beta) * g^2          (after the clip, from step 2 on)
    g <- clamp(g, -factor * sqrt(v), factor * sqrt(v))

    edit:
      - type: examples/edits/coordinate_clip.py:CoordinateClip
        factor: 3.0
"""

import torch
from pydantic import Field

from gradlab import Edit, EditParams


class CoordinateClipParams(EditParams):
    factor: float = Field(3.0, gt=0)
    """Clip each entry at this many running RMS of its own gradients."""
    beta: float = Field(0.99, gt=0, lt=1)
    """Decay of the running mean of the squared gradient."""


class CoordinateClip(Edit):
    name = "coord_clip"
    summary = "clip each gradient entry at factor x its running RMS"
    Params = CoordinateClipParams
    stats = ("clipped_frac",)

    def setup(self, weights):
        self.mean_square = {n: torch.zeros_like(w) for n, w in weights.items()}
        self.seen = 0

    def edit(self, grads, weights, step):
        p, clipped, total = self.params, 0, 0
        for n, g in grads.items():
            v = self.mean_square[n]
            if self.seen:  # nothing to clip against at the first step
                bound = p.factor * v.sqrt()
                clipped = clipped + (g.abs() > bound).sum()
                torch.minimum(torch.maximum(g, -bound), bound, out=g)
            v.mul_(p.beta).addcmul_(g, g, value=1 - p.beta)
            total += g.numel()
        self.seen += 1
        frac = torch.as_tensor(clipped, dtype=torch.float32, device=g.device) / total
        return {"clipped_frac": frac, "changed": (frac > 0).float()}
