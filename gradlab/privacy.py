"""DP-SGD (Abadi et al. 2016) with Opacus's semantics: per-example clipping, Gaussian noise
on the sum, division by the expected batch size, and privacy accounting by Opacus's own
accountants (never a hand-written one).

One step of a run with a ``privacy`` section::

    engine.clipped_step(x, y, privatizer.clip)   # p.grad = sum_i c_i * g_i  (per example i)
    scaler.unscale_(optimizer)
    privatizer.add_noise(grads)                  # (sum + N(0, (sigma * C)^2)) / (q * N)
    pipeline.apply(grads, ...)                   # the edits: post-processing

The engines hand :meth:`Privatizer.clip` each example's squared gradient norm per parameter
tensor (a ``(B, K)`` matrix, computed without per-example gradients: for a linear layer with
input ``a_i`` and output gradient ``d_i``, ``||g_W||^2 = ||a_i||^2 ||d_i||^2`` and
``||g_b||^2 = ||d_i||^2``) and get back the factors ``c`` that scale each example's part of
the sum:

- ``flat``: ``c_i = min(1, C / (||g_i|| + 1e-6))``, the norm over all tensors;
- ``per_layer``: ``c_ik = min(1, C_k / (||g_ik|| + 1e-6))`` per tensor k; noise std
  ``sigma * ||(C_1 .. C_K)||``;
- ``automatic`` (Bu et al. 2022, AUTO-S): ``c_i = C / (||g_i|| + 0.01)``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from gradlab.config import MAX_NOISE_MULTIPLIER, PrivacyConfig
from gradlab.errors import ConfigError

NORM_EPS = 1e-6
"""Added to a norm before dividing by it (Opacus's value)."""
AUTO_GAMMA = 0.01
"""``automatic`` clipping's stability constant (Bu et al.'s gamma)."""
STAT_COLUMNS = ["dp.clipped_frac", "dp.norm_median", "dp.norm_max"]
"""steps.csv columns of a private run: the fraction of the batch's examples whose gradient
was scaled down, and the median and largest per-example gradient norm (before clipping).
They read the raw batch: they are not private."""
SEED_OFFSET = 0x5EED_D9
"""The noise generator's seed is the run's seed plus this (apart from the edits' numbers)."""


def sample_rate(batch_size: int, n_train: int) -> float:
    """q: the probability that an example joins a step (``batch_size / N``, at most 1)."""
    return min(1.0, batch_size / n_train)


# --------------------------------------------------------------------------- accounting


def _accountant(name: str):
    from opacus.accountants import PRVAccountant, RDPAccountant  # imports torch's friends

    return {"rdp": RDPAccountant, "prv": PRVAccountant}[name]()


def epsilon(noise_multiplier: float, q: float, steps: int, delta: float, accountant: str) -> float:
    """epsilon after ``steps`` steps of the subsampled Gaussian mechanism (sigma, q), by
    Opacus's ``accountant`` (``rdp`` or ``prv``) at ``delta``: ``inf`` without noise, 0
    before the first step. Where the PRV accountant cannot bound it (it overflows to inf
    above epsilon ~700, or fails to converge), Rényi DP's bound is returned instead (see
    :func:`accounted_epsilon`)."""
    return accounted_epsilon(noise_multiplier, q, steps, delta, accountant)[0]


def accounted_epsilon(
    noise_multiplier: float, q: float, steps: int, delta: float, accountant: str
) -> tuple[float, str]:
    """:func:`epsilon` and the accountant that gave it (``rdp`` where ``prv`` failed)."""
    if steps <= 0:
        return 0.0, accountant
    if noise_multiplier == 0:
        return math.inf, accountant
    value = _opacus_epsilon(noise_multiplier, q, steps, delta, accountant)
    if math.isfinite(value) or accountant == "rdp":
        return value, accountant
    return _opacus_epsilon(noise_multiplier, q, steps, delta, "rdp"), "rdp"


PRV_LIMIT = 700.0
"""Above this epsilon (by RDP) the PRV accountant is not asked: it overflows near 709 and
can take minutes and tens of GB on the way (sigma 0.05 over a few dozen steps)."""


def _opacus_epsilon(sigma: float, q: float, steps: int, delta: float, accountant: str) -> float:
    """One accountant's epsilon (never below 0); ``inf`` where it fails (overflow, no
    convergence, memory) or, for ``prv``, where RDP already says more than PRV_LIMIT."""
    if accountant == "prv" and _opacus_epsilon(sigma, q, steps, delta, "rdp") > PRV_LIMIT:
        return math.inf
    acc = _accountant(accountant)
    acc.history = [(sigma, q, steps)]
    with warnings.catch_warnings():  # "optimal order is the largest alpha": still an upper bound
        warnings.simplefilter("ignore")
        try:
            value = float(acc.get_epsilon(delta=delta))
        except (
            ValueError,
            RuntimeError,
            OverflowError,
            ZeroDivisionError,
            FloatingPointError,
            MemoryError,
        ):
            return math.inf
    if value != value:  # NaN: no bound
        return math.inf
    return max(0.0, value)  # a delta near 1 makes Opacus's bound negative: epsilon is >= 0


MAX_SEARCH_STEPS = 100
"""Most accountant evaluations of the bisection in :func:`solve_noise_multiplier`."""


def solve_noise_multiplier(
    target_epsilon: float, delta: float, q: float, steps: int, accountant: str
) -> float:
    """The noise multiplier for ``target_epsilon``: Opacus's ``get_noise_multiplier``
    search step for step (double sigma from 20 until epsilon <= target, then bisect until
    epsilon is within 0.01 below the target; the sigma returned always meets the target),
    on Opacus's accountant, with two guards Opacus lacks: an accountant that fails or
    overflows at a trial sigma counts as "too little noise" (Opacus's PRV returns inf
    above epsilon ~700, where its own search never ends), and the bisection stops after
    :data:`MAX_SEARCH_STEPS` evaluations or when sigma is known to 6 digits.

    Raises:
        ConfigError: no sigma up to 1e6 reaches the target.
    """

    def eps(sigma: float) -> float:
        return _opacus_epsilon(sigma, q, steps, delta, accountant)

    sigma_low, sigma_high, eps_high = 0.0, 10.0, math.inf
    while eps_high > target_epsilon:
        sigma_high *= 2
        eps_high = eps(sigma_high)
        if sigma_high > MAX_NOISE_MULTIPLIER:
            raise ConfigError(
                f"privacy.target_epsilon: {target_epsilon:g} cannot be reached with delta "
                f"{delta:g}, sample rate {q:g} and {steps} steps (no noise multiplier up to "
                f"1e6 does it with the {accountant} accountant); allow a larger "
                f"target_epsilon or delta, or train fewer steps or with smaller batches"
            )
    for _ in range(MAX_SEARCH_STEPS):
        if target_epsilon - eps_high <= 0.01 or sigma_high - sigma_low < 1e-6 * sigma_high:
            break
        sigma = (sigma_low + sigma_high) / 2
        value = eps(sigma)
        if value < target_epsilon:
            sigma_high, eps_high = sigma, value
        else:
            sigma_low = sigma
    return sigma_high


# --------------------------------------------------------------------------- the step


class Privatizer:
    """Clips per-example gradients (through the engine), adds the noise, keeps the account.

    Args:
        cfg: the ``privacy`` section.
        names: the parameter tensors' names, in the order the engines give their norms.
        batch_size: the expected batch size (``optim.batch_size``).
        n_train: N, the training set's size.
        total_steps: the run's steps (to solve ``target_epsilon``).
        seed: the run's seed (the noise's generator is seeded from it).
        device: where the gradients are.
    """

    def __init__(
        self,
        cfg: PrivacyConfig,
        names: list[str],
        batch_size: int,
        n_train: int,
        total_steps: int,
        seed: int,
        device: torch.device,
        sampling: str = "poisson",
    ) -> None:
        self.cfg = cfg
        self.names = names
        self.sampling = sampling
        self.sample_rate = sample_rate(batch_size, n_train)
        self.expected_batch_size = self.sample_rate * n_train  # Opacus divides by this
        self.total_steps = total_steps
        if cfg.noise_multiplier is None:
            assert cfg.target_epsilon is not None  # the config says one of them
            self.noise_multiplier = solve_noise_multiplier(
                cfg.target_epsilon, cfg.delta, self.sample_rate, total_steps, cfg.accountant
            )
        else:
            self.noise_multiplier = cfg.noise_multiplier
        self.noise_std = self.noise_multiplier * cfg.sensitivity(names)
        self.generator = torch.Generator(device).manual_seed((seed + SEED_OFFSET) % 2**63)
        if cfg.clipping == "per_layer":
            self.thresholds = torch.tensor(cfg.thresholds(names), device=device)
        else:
            self.thresholds = torch.tensor(cfg.sensitivity(names), device=device)  # one C
        self._stats: list[torch.Tensor] = self.empty_stats(device)
        self.fallback_steps: list[int] = []  # where prv could not bound epsilon (rdp's used)

    @staticmethod
    def empty_stats(device: torch.device) -> list[torch.Tensor]:
        """The statistics of a step without examples (NaN: an empty cell)."""
        return [torch.full((), math.nan, device=device) for _ in STAT_COLUMNS]

    # the engines call this with each example's squared norms, one column per tensor
    def clip(self, squared_norms: torch.Tensor) -> torch.Tensor:
        """The factors ``c`` (same shape as ``squared_norms``, ``(B, K)``) that scale each
        example's gradient, per tensor; remembers the step's statistics."""
        norms = squared_norms.sum(1).sqrt()  # ||g_i|| over all tensors
        mode = self.cfg.clipping
        if mode == "per_layer":
            factors = (self.thresholds / (squared_norms.sqrt() + NORM_EPS)).clamp(max=1.0)
            clipped = (factors < 1).any(1)
        else:
            if mode == "flat":
                factor = (self.thresholds / (norms + NORM_EPS)).clamp(max=1.0)
            else:  # automatic: every example normalized
                factor = self.thresholds / (norms + AUTO_GAMMA)
            clipped = factor < 1
            factors = factor.unsqueeze(1).expand_as(squared_norms)
        self._stats = [clipped.float().mean(), norms.median(), norms.max()]
        return factors

    def add_noise(self, grads: list[torch.Tensor]) -> None:
        """In place: ``g <- (g + N(0, std^2)) / (q N)`` for the summed clipped gradients."""
        for g in grads:
            if self.noise_std > 0:
                noise = torch.empty_like(g).normal_(0.0, self.noise_std, generator=self.generator)
                g.add_(noise)
            g.div_(self.expected_batch_size)

    def step_stats(self) -> list[torch.Tensor]:
        """This step's ``dp.*`` values (device tensors), then reset to NaN."""
        stats, self._stats = self._stats, self.empty_stats(self.thresholds.device)
        return stats

    def epsilon(self, steps: int, record: bool = True) -> float:
        """epsilon spent after ``steps`` steps (with ``record``, remembers where PRV had to
        give way to RDP)."""
        cfg = self.cfg
        value, used = accounted_epsilon(
            self.noise_multiplier, self.sample_rate, steps, cfg.delta, cfg.accountant
        )
        if used != cfg.accountant and record:
            self.fallback_steps.append(steps)
        return value

    def record(self, steps: int) -> dict[str, Any]:
        """What summary.json says of the guarantee after ``steps`` steps."""
        eps = self.epsilon(steps)
        record: dict[str, Any] = {
            "epsilon": eps if math.isfinite(eps) else None,
            "delta": self.cfg.delta,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "accountant": self.cfg.accountant,
            "privacy_steps": steps,
        }
        notes = self.notes()
        if notes:
            record["privacy_note"] = "; ".join(notes)
        return record

    def notes(self) -> list[str]:
        """What qualifies the reported epsilon, in words (none for the standard setting)."""
        notes = []
        if self.noise_multiplier == 0:
            notes.append("noise_multiplier 0: clipping only, no privacy (epsilon is infinite)")
        if self.fallback_steps:
            notes.append(
                f"the prv accountant could not bound epsilon (it overflows above ~700) at "
                f"step {self.fallback_steps[0]}"
                + (" and later" if len(self.fallback_steps) > 1 else "")
                + ": the rdp accountant's bound is reported there"
            )
        if self.sampling != "poisson":
            notes.append(
                "data.sampling shuffle: epsilon is accounted as if batches were Poisson "
                "samples; for shuffled fixed-size batches that is not an upper bound and can "
                "understate epsilon"
            )
        return notes
