"""A rank-k projection of each targeted weight gradient (a stateless edit).

Each 2-d gradient G is replaced by its best rank-k approximation U_k S_k V_k^T (the
truncated SVD, Eckart-Young); 1-d gradients (biases) are left as they are.

    edit:
      - type: examples/edits/low_rank.py:LowRank
        rank: 1
        params: fc1.weight
"""

import torch
from pydantic import Field

from gradlab import Edit, EditParams


class LowRankParams(EditParams):
    rank: int = Field(1, ge=1)
    """How many singular directions of each weight gradient to keep."""


class LowRank(Edit):
    name = "low_rank"
    summary = "replace each weight gradient by its best rank-k approximation"
    Params = LowRankParams
    stats = ("kept_energy",)

    def edit(self, grads, weights, step):
        kept, energy = [], []
        for g in grads.values():
            if g.dim() != 2:
                continue
            u, s, vh = torch.linalg.svd(g.float(), full_matrices=False)
            k = min(self.params.rank, s.numel())
            g.copy_((u[:, :k] * s[:k]) @ vh[:k])
            kept.append(s[:k].square().sum())
            energy.append(s.square().sum())
        if not kept:
            zero = torch.zeros((), device=next(iter(grads.values())).device)
            return {"kept_energy": zero + 1, "changed": zero}
        frac = torch.stack(kept).sum() / torch.stack(energy).sum().clamp_min(1e-30)
        return {"kept_energy": frac, "changed": torch.ones_like(frac)}
