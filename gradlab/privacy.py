"""DP-SGD (Abadi et al. 2016) with Opacus's semantics: per-example clipping, Gaussian noise
on the sum, division by the expected batch size, and privacy accounting by Opacus's own
accountants (never a hand-written one).

One step of a run with a ``privacy`` section::

    engine.clipped_step(x, y, privatizer.clip)   # p.grad = sum_i c_i * g_i  (per example i)
    privatizer.add_noise(grads, scaler)          # (sum + N(0, (sigma * C)^2)) / (q * N)
    scaler.unscale_(optimizer)                   # its inf check sees what the step applies
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

Accounting is Opacus's, within bounds: Rényi DP always; PRV only where its grid stays
within float64's range, :data:`MAX_PRV_POINTS` points and delta's float precision
(:func:`prv_limit`), which a run is checked against before it starts (:func:`check_prv`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple, cast

import numpy as np
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

PRV_EPS_ERROR = 0.01
"""The accuracy in epsilon Opacus's ``PRVAccountant.get_epsilon`` works to by default (its
``eps_error``; ``delta_error`` is delta / 1000): gradlab asks it with its defaults."""
MAX_PRV_POINTS = 2**22
"""The most points gradlab lets the PRV accountant discretize the privacy loss on. One
evaluation takes about :data:`BYTES_PER_PRV_POINT` bytes and 1.3 us a point on the 2-core
development VM (2**22: about 0.7 GB and 5 s), and its grid grows with the range of the
privacy loss times the square root of the steps (:func:`prv_grid`): 200,000 steps of
``configs/dp.yaml`` would need 57 million points, 10 GB."""
BYTES_PER_PRV_POINT = 170
"""Peak memory of one PRV evaluation per grid point (numpy float64 temporaries), measured."""
PRV_MAX_LOSS = 700.0
"""The widest privacy-loss range ``[-L, L]`` the PRV accountant computes on: it takes
``exp(t)`` over its grid, and float64's ``exp`` overflows past 709.78 (there it returns
infinity, or a wrong epsilon once the mass beyond is lost)."""


def _accountant(name: str):
    from opacus.accountants import PRVAccountant, RDPAccountant  # imports torch's friends

    return {"rdp": RDPAccountant, "prv": PRVAccountant}[name]()


class Spent(NamedTuple):
    """epsilon after some steps, the accountant that gave it, and why that is not the one
    asked for (``fallback``: None when it is)."""

    epsilon: float
    accountant: str
    fallback: str | None = None


def epsilon(noise_multiplier: float, q: float, steps: int, delta: float, accountant: str) -> float:
    """epsilon after ``steps`` steps of the subsampled Gaussian mechanism (sigma, q), by
    Opacus's ``accountant`` (``rdp`` or ``prv``) at ``delta``: ``inf`` without noise, 0
    before the first step. Where the PRV accountant cannot bound it (:func:`prv_limit`, or
    it fails), Rényi DP's bound is returned instead (see :func:`accounted_epsilon`)."""
    return accounted_epsilon(noise_multiplier, q, steps, delta, accountant).epsilon


def accounted_epsilon(
    noise_multiplier: float, q: float, steps: int, delta: float, accountant: str
) -> Spent:
    """:func:`epsilon`, the accountant that gave it and, where ``prv`` gave way to ``rdp``,
    why. Rényi DP's bound comes first (milliseconds): where it is 0 (a delta near 1),
    epsilon is 0 whatever PRV would say, and PRV is not asked (it fails to place an
    epsilon that far below 0)."""
    if steps <= 0:
        return Spent(0.0, accountant)
    if noise_multiplier == 0:
        return Spent(math.inf, accountant)
    rdp, _ = _opacus_epsilon(noise_multiplier, q, steps, delta, "rdp")
    if accountant == "rdp" or rdp == 0:
        return Spent(rdp, accountant)
    limit = prv_limit(noise_multiplier, q, steps, delta)
    if limit is not None:
        return Spent(rdp, "rdp", limit.reason)
    value, failure = _opacus_epsilon(noise_multiplier, q, steps, delta, "prv")
    if failure is not None:
        return Spent(rdp, "rdp", f"it failed: {failure}")
    return Spent(value, "prv")


def _opacus_epsilon(
    sigma: float, q: float, steps: int, delta: float, accountant: str
) -> tuple[float, str | None]:
    """One accountant's epsilon (never below 0) and, where it failed, the error in words
    (the epsilon is then ``inf``). Ask ``prv`` only where :func:`prv_limit` allows."""
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
        ) as exc:
            return math.inf, f"{type(exc).__name__}: {exc}".rstrip(": ")
    if value != value:  # NaN: no bound
        return math.inf, "no bound (NaN)"
    if accountant == "prv" and not math.isfinite(value):
        return math.inf, "it returned infinity"
    return max(0.0, value), None  # a delta near 1 makes Opacus's bound negative: epsilon >= 0


class PrvGrid(NamedTuple):
    """The grid Opacus's PRV accountant discretizes the privacy loss of ``steps``
    compositions on: ``[-L, L]`` in steps of ``eps_error / sqrt(steps log(12 / delta_error)
    / 2)``, L from Rényi-DP bounds (Gopi et al. 2021, remark 5.6), as
    ``PRVAccountant._get_domain`` and ``Domain.create_aligned`` compute it."""

    half_width: float
    points: float  # a whole number, or inf


class PrvLimit(NamedTuple):
    """Why the PRV accountant cannot account a setting: ``kind`` is ``range`` (epsilon too
    large for float64), ``grid`` (too many points) or ``delta`` (below float precision)."""

    kind: str
    reason: str


def prv_grid(sigma: float, q: float, steps: int, delta: float) -> PrvGrid:
    """The grid the PRV accountant would use at ``delta`` (cheap: two Rényi-DP bounds)."""
    from opacus.accountants.analysis.prv import (
        PoissonSubsampledGaussianPRV,
        compute_safe_domain_size,
    )

    delta_error = delta / 1000  # get_epsilon's default
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            half = float(
                compute_safe_domain_size(
                    [PoissonSubsampledGaussianPRV(q, sigma)], [steps], PRV_EPS_ERROR, delta_error
                )
            )
        except (ValueError, OverflowError, ZeroDivisionError, FloatingPointError):
            half = math.inf
    if not math.isfinite(half):
        return PrvGrid(math.inf, math.inf)
    mesh = PRV_EPS_ERROR / math.sqrt(steps * math.log(12 / delta_error) / 2)
    return PrvGrid(half, 2 * math.ceil(half / mesh) + 2)  # [-L, L] aligned, an even count


def prv_min_delta(points: float) -> float:
    """The least delta Opacus's PRV accountant resolves on a grid of ``points``: below it
    float rounding over the grid exceeds ``delta - delta_error`` (its own check)."""
    return float(np.finfo(np.longdouble).eps) * points / (1 - 1 / 1000)


def prv_limit(sigma: float, q: float, steps: int, delta: float) -> PrvLimit | None:
    """Why the PRV accountant cannot account ``steps`` steps of (sigma, q) at ``delta``
    within gradlab's bounds (None: it can): the privacy loss past float64's range, more
    than :data:`MAX_PRV_POINTS` points, or a delta below float precision on its grid. Each
    grows with the steps, so a run it can account at its last step it can at every step."""
    grid = prv_grid(sigma, q, steps, delta)
    if not grid.half_width <= PRV_MAX_LOSS:
        return PrvLimit(
            "range",
            f"epsilon is too large for it (its grid would span privacy losses up to "
            f"{grid.half_width:.4g}, past {PRV_MAX_LOSS:g}, where float64's exp overflows)",
        )
    if grid.points > MAX_PRV_POINTS:
        return PrvLimit(
            "grid",
            f"its grid would have {grid.points:,.0f} points, about "
            f"{grid.points * BYTES_PER_PRV_POINT / 1e9:.2g} GB (gradlab allows "
            f"{MAX_PRV_POINTS:,} points, about {MAX_PRV_POINTS * BYTES_PER_PRV_POINT / 1e9:.2g} GB)",
        )
    least = prv_min_delta(grid.points)
    if delta < least:
        return PrvLimit(
            "delta",
            f"float precision on its {grid.points:,.0f}-point grid resolves delta >= {least:.2g}",
        )
    return None


def prv_floor(q: float, steps: int, delta: float) -> float | None:
    """The least noise multiplier (to 1e-5 relative) whose ``steps`` steps the PRV accountant
    can account at ``delta`` (:func:`prv_limit`); None if not even 1e6 can."""
    high = 1.0
    while prv_limit(high, q, steps, delta) is not None:
        if high == MAX_NOISE_MULTIPLIER:
            return None
        high = min(4 * high, MAX_NOISE_MULTIPLIER)
    low = high / 4
    while prv_limit(low, q, steps, delta) is None:
        low, high = low / 4, low
        if low < 1e-12:
            return high
    while high - low > 1e-5 * high:
        middle = math.sqrt(low * high)
        if prv_limit(middle, q, steps, delta) is None:
            high = middle
        else:
            low = middle
    return high


def prv_most_steps(sigma: float, q: float, delta: float, steps: int) -> int:
    """The most steps (up to ``steps``) of (sigma, q) the PRV accountant can account at
    ``delta``."""
    low, high = 0, steps  # low: accountable (0 always is), high: not
    while high - low > 1:
        middle = (low + high) // 2
        if prv_limit(sigma, q, middle, delta) is None:
            low = middle
        else:
            high = middle
    return low


def check_prv(sigma: float, q: float, steps: int, delta: float) -> None:
    """Refuse, before a run starts, a run whose epsilon the PRV accountant cannot compute
    within gradlab's bounds (:func:`prv_limit`), in one line that says what it can do.

    Raises:
        ConfigError: names ``privacy.accountant`` (or ``privacy.delta``) and the way out.
    """
    limit = prv_limit(sigma, q, steps, delta)
    if limit is None:
        return
    run = f"{steps:,} steps at noise_multiplier {sigma:g}, sample rate {q:g} and delta {delta:.10g}"
    if limit.kind == "delta":
        raise ConfigError(
            f"privacy.delta: {delta:.10g} is too small for the prv accountant over {run}: "
            f"{limit.reason}; use a larger delta or accountant rdp"
        )
    if limit.kind == "grid":
        most = prv_most_steps(sigma, q, delta, steps)
        can = f"it accounts at most {most:,} steps here" if most else "not even one step"
        way_out = f"{can}: use accountant rdp, fewer steps or more noise"
    else:
        floor = prv_floor(q, steps, delta)
        more = f" (noise_multiplier >= {floor:.4g})" if floor is not None else ""
        way_out = f"use accountant rdp, or more noise{more}"
    raise ConfigError(f"privacy.accountant: prv cannot account {run}: {limit.reason}; {way_out}")


MAX_SEARCH_STEPS = 100
"""Most accountant evaluations of the bisection in :func:`solve_noise_multiplier`."""


def solve_noise_multiplier(
    target_epsilon: float, delta: float, q: float, steps: int, accountant: str
) -> float:
    """The noise multiplier for ``target_epsilon``: Opacus's ``get_noise_multiplier``
    search step for step (double sigma from 20 until epsilon <= target, then bisect until
    epsilon is within 0.01 below the target; the sigma returned always meets the target),
    on Opacus's accountant, with guards Opacus lacks: a sigma the accountant cannot take
    (:func:`prv_limit`, which keeps PRV's cost bounded) or where it fails counts as "too
    little noise"; a target beyond what the accountant can reach there is refused rather
    than missed (Opacus's PRV search never ends above epsilon ~700); and the bisection
    stops after :data:`MAX_SEARCH_STEPS` evaluations or when sigma is known to 6 digits.

    Raises:
        ConfigError: no sigma up to 1e6 reaches the target, or the target lies beyond the
            largest epsilon the accountant computes here (the message gives it).
    """
    setting = f"delta {delta:.10g}, sample rate {q:g} and {steps} steps"
    floor = 0.0  # prv: the least sigma it can take here; less noise counts as too little
    if accountant == "prv":
        least = prv_floor(q, steps, delta)
        if least is None:
            check_prv(MAX_NOISE_MULTIPLIER, q, steps, delta)  # says why, in one line
        floor = least or 0.0

    def eps(sigma: float) -> float:  # inf: too little noise, or the accountant failed
        if sigma < floor:
            return math.inf
        spent = accounted_epsilon(sigma, q, steps, delta, accountant)
        return math.inf if spent.fallback else spent.epsilon

    def beyond_reach(reach: float, sigma: float) -> ConfigError:
        why = "it gives no epsilon"
        if accountant == "prv" and sigma_low == floor:
            limit = prv_limit(floor * (1 - 1e-5), q, steps, delta)
            why = limit.reason if limit is not None else why
        most = math.floor(reach * 100) / 100
        other = " or accountant rdp" if accountant == "prv" else ""
        return ConfigError(
            f"privacy.target_epsilon: {target_epsilon:g} is beyond the {accountant} accountant's "
            f"reach with {setting}: it accounts epsilon up to {reach:.4g} there (at noise_multiplier "
            f"{sigma:.4g}; with less noise {why}); use target_epsilon <= {most:g}{other}"
        )

    sigma_low, sigma_high, eps_high = 0.0, 10.0, math.inf
    while eps_high > target_epsilon:
        sigma_high *= 2
        eps_high = eps(sigma_high)
        if sigma_high > MAX_NOISE_MULTIPLIER:
            raise ConfigError(
                f"privacy.target_epsilon: {target_epsilon:g} cannot be reached with {setting} "
                f"(no noise multiplier up to 1e6 does it with the {accountant} accountant); "
                f"allow a larger target_epsilon or delta, or train fewer steps or with smaller "
                f"batches"
            )
    at_edge = False  # whether sigma_low is where the accountant gives no epsilon
    if 0 < floor < sigma_high:
        sigma_low, at_edge = floor, True
        # the target may lie past PRV's reach: where Rényi DP's looser bound already meets
        # it at the floor, ask PRV there once (its costliest sigma) rather than bisect to it
        if _opacus_epsilon(floor, q, steps, delta, "rdp")[0] <= target_epsilon:
            reach = eps(floor)
            if reach <= target_epsilon:
                if target_epsilon - reach <= 0.01:
                    return floor
                raise beyond_reach(reach, floor)
            at_edge = math.isinf(reach)
    for _ in range(MAX_SEARCH_STEPS):
        if target_epsilon - eps_high <= 0.01 or sigma_high - sigma_low < 1e-6 * sigma_high:
            break
        sigma = (sigma_low + sigma_high) / 2
        value = eps(sigma)
        if value < target_epsilon:
            sigma_high, eps_high = sigma, value
        else:
            sigma_low, at_edge = sigma, math.isinf(value)
    if target_epsilon - eps_high > 0.01 and at_edge:
        raise beyond_reach(eps_high, sigma_high)
    return sigma_high


# --------------------------------------------------------------------------- the step


class ClipRule:
    """A per-example clipping rule of your own (``privacy.clipping: file.py:ClassName``).

    :meth:`clip` turns each example's squared gradient norm per parameter tensor into the
    factors that scale the example's part of the sum. gradlab checks at every step that
    each clipped example's norm, ``sqrt(sum_k c_ik^2 ||g_ik||^2)``, is at most the
    sensitivity (``max_grad_norm``, or the norm of its list), within float rounding, and
    fails the run otherwise: a rule can never void the guarantee silently. The noise and
    the accounting are the built-ins' (std ``sigma`` times the sensitivity).
    """

    name: str = ""

    def clip(self, squared_norms: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
        """The factors, ``(B,)`` (one per example) or ``(B, K)`` (per tensor), from the
        ``(B, K)`` squared norms and the thresholds (``max_grad_norm``: one, or one per
        tensor), on the same device; no host reads."""
        raise NotImplementedError


BOUND_SLACK = 1e-5
"""The relative rounding a rule's clipped norms may exceed the sensitivity by."""


class Privatizer:
    """Clips per-example gradients (through the engine), adds the noise, keeps the account.

    Args:
        cfg: the ``privacy`` section.
        names: the parameter tensors' names, in the order the engines give their norms.
        batch_size: the expected batch size (``optim.batch_size``).
        n_train: N, the training set's size.
        total_steps: the run's steps (to solve ``target_epsilon``, and to refuse a run the
            ``prv`` accountant cannot account: :func:`check_prv`).
        seed: the run's seed (the noise's generator is seeded from it).
        device: where the gradients are.

    Raises:
        ConfigError: ``target_epsilon`` cannot be met, or ``prv`` cannot account the run.
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
        if cfg.accountant == "prv" and self.noise_multiplier > 0:
            check_prv(self.noise_multiplier, self.sample_rate, total_steps, cfg.delta)
        self.n_train = n_train
        self.noise_std = self.noise_multiplier * cfg.sensitivity(names)
        self.generator = torch.Generator(device).manual_seed((seed + SEED_OFFSET) % 2**63)
        self.rule: ClipRule | None = None
        if cfg.clipping not in ("flat", "per_layer", "automatic"):  # a rule of the user's
            from gradlab.plugins import load_rule

            self.rule = load_rule(cfg.clipping).cls()
            given = cfg.max_grad_norm
            self.thresholds = torch.tensor(
                given if isinstance(given, list) else [given], device=device
            )
        elif cfg.clipping == "per_layer":
            self.thresholds = torch.tensor(cfg.thresholds(names), device=device)
        else:
            self.thresholds = torch.tensor(cfg.sensitivity(names), device=device)  # one C
        self.bound = cfg.sensitivity(names)
        self._stats: list[torch.Tensor] = self.empty_stats(device)
        self.spent: dict[int, Spent] = {}  # steps -> epsilon: each accounted once
        self.unaccounted: set[int] = set()  # steps whose accounting a stop signal cut short

    def state_dict(self) -> dict[str, Any]:
        """The noise's generator and the accountant's history, for a checkpoint."""
        return {
            "generator": self.generator.get_state(),
            "spent": {k: list(s) for k, s in self.spent.items()},
            "unaccounted": sorted(self.unaccounted),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.spent.update({int(k): Spent(*v) for k, v in state["spent"].items()})
        self.unaccounted = set(state["unaccounted"])

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
        if self.rule is not None:
            factors = self._rule_factors(squared_norms)
            clipped = (factors < 1).any(1)
        elif mode == "per_layer":
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

    def _rule_factors(self, squared_norms: torch.Tensor) -> torch.Tensor:
        """The user's rule's factors, checked: a tensor of ``(B,)`` or ``(B, K)`` finite,
        non-negative factors, each clipped example's norm within the sensitivity (one host
        read a step)."""
        from gradlab.editing.pipeline import PluginError
        from gradlab.plugins import plugin_error

        who = f"privacy.clipping {self.cfg.clipping}"
        try:
            factors = cast(ClipRule, self.rule).clip(squared_norms, self.thresholds)
        except Exception as exc:  # noqa: BLE001 - the user's code: where it broke
            raise PluginError(f"{who} raised: {plugin_error(exc)}") from exc
        b, k = squared_norms.shape
        if not isinstance(factors, torch.Tensor) or tuple(factors.shape) not in ((b,), (b, k)):
            got = tuple(factors.shape) if isinstance(factors, torch.Tensor) else type(factors)
            raise PluginError(
                f"{who} returned {got}; it returns a tensor of ({b},) or ({b}, {k}) factors"
            )
        if factors.dim() == 1:
            factors = factors.unsqueeze(1).expand_as(squared_norms)
        factors = factors.to(squared_norms.dtype)
        clipped_norms = (factors.square() * squared_norms).sum(1).sqrt()
        worst = torch.max(clipped_norms.max(), torch.zeros((), device=factors.device))
        valid = bool(torch.isfinite(factors).all() and (factors >= 0).all())
        if not valid or float(worst) > self.bound * (1 + BOUND_SLACK):
            shown = f"{float(worst):.6g}" if valid else "not finite (or a negative factor)"
            raise PluginError(
                f"{who} broke the sensitivity bound: a clipped example's gradient norm is "
                f"{shown}, above max_grad_norm's bound {self.bound:.6g}; the run stops (its "
                "privacy guarantee would not hold)"
            )
        return factors

    def add_noise(
        self, grads: list[torch.Tensor], scaler: torch.amp.GradScaler | None = None
    ) -> None:
        """In place: ``g <- (g + N(0, std^2)) / (q N)`` for the summed clipped gradients.

        With a GradScaler this comes before ``scaler.unscale_`` and the noise is multiplied
        by the loss scale like the sums (``scaler.scale``), so that the scaler's inf/NaN
        check, which decides whether the optimizer steps, sees the gradient the step would
        apply. For a power-of-two scale the numbers are exactly those of adding the noise
        after unscaling."""
        for g in grads:
            if self.noise_std > 0:
                noise = torch.empty_like(g).normal_(0.0, self.noise_std, generator=self.generator)
                g.add_(scaler.scale(noise) if scaler is not None else noise)
            g.div_(self.expected_batch_size)

    def step_stats(self) -> list[torch.Tensor]:
        """This step's ``dp.*`` values (device tensors), then reset to NaN."""
        stats, self._stats = self._stats, self.empty_stats(self.thresholds.device)
        return stats

    def epsilon(self, steps: int) -> float:
        """epsilon spent after ``steps`` steps, accounted once per ``steps`` (the evaluation,
        the summary and its notes share it)."""
        if steps not in self.spent:
            cfg = self.cfg
            self.spent[steps] = accounted_epsilon(
                self.noise_multiplier, self.sample_rate, steps, cfg.delta, cfg.accountant
            )
        return self.spent[steps].epsilon

    def record(self, steps: int) -> dict[str, Any]:
        """What summary.json says of the guarantee after ``steps`` steps (epsilon null where
        it is infinite, or where a stop signal cut its accounting short)."""
        eps = math.inf if steps in self.unaccounted else self.epsilon(steps)
        record: dict[str, Any] = {
            "epsilon": eps if math.isfinite(eps) else None,
            "delta": self.cfg.delta,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "accountant": self.cfg.accountant,
            "privacy_steps": steps,
        }
        notes = self.notes(steps)
        if notes:
            record["privacy_note"] = "; ".join(notes)
        return record

    def notes(self, steps: int) -> list[str]:
        """What qualifies the epsilon reported after ``steps`` steps, in words (none for the
        standard setting)."""
        notes = []
        if self.noise_multiplier == 0:
            notes.append("noise_multiplier 0: clipping only, no privacy (epsilon is infinite)")
        if steps in self.unaccounted:
            notes.append(
                f"a stop signal cut the privacy accounting short: epsilon after {steps} steps "
                f"was not computed (sample_rate, noise_multiplier, privacy_steps and delta "
                f"give it)"
            )
        gave_way = [(k, s) for k, s in sorted(self.spent.items()) if k <= steps and s.fallback]
        if gave_way:
            first, spent = gave_way[0]
            notes.append(
                f"the prv accountant could not bound epsilon at step {first}"
                + (" and later" if len(gave_way) > 1 else "")
                + f" ({spent.fallback}): the rdp accountant's bound is reported there"
            )
        spent_now = self.spent.get(steps)
        if steps > 0 and spent_now is not None and spent_now.epsilon == 0:
            notes.append(
                f"epsilon is 0 at delta {self.cfg.delta:.10g}: so large a delta leaves the "
                f"guarantee nothing to say (take delta well below 1 / N = {1 / self.n_train:.2g})"
            )
        if self.sampling != "poisson":
            notes.append(
                "data.sampling shuffle: epsilon is accounted as if batches were Poisson "
                "samples; for shuffled fixed-size batches that is not an upper bound and can "
                "understate epsilon"
            )
        return notes
