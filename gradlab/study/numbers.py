"""How many digits a number deserves: precision that follows the uncertainty.

The rule (the README's "Reading a study" repeats it):

- a value with an uncertainty ``u`` (the ± of its cell: a standard deviation or a confidence
  half-width) is printed to the decimal of ``u``'s second significant digit when ``u``
  starts with 1 or 2 (``0.019`` -> 3 decimals), else of its first (``0.05`` -> 2 decimals);
- one column uses one precision in every row: the finest any of its rows needs, but never
  more than 4 significant digits of the column's largest value;
- a column without uncertainties gets those 4 significant digits, whole numbers (counts)
  none, below a million whatever their range;
- columns of very small or very large numbers (largest below 0.001 or from 1e6), and
  columns whose values span three orders of magnitude or more, are printed in scientific
  notation, the same rule applied to the significant digits of the mantissa, the ± with
  one or two significant digits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MAX_SIGNIFICANT = 4


def _as_finite(value: Any) -> float | None:
    """``value`` as a finite float, else None (missing, text, a boolean, NaN, infinity)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _exponent(x: float) -> int:
    """The power of ten of ``x``'s first significant digit (``x`` > 0)."""
    e = math.floor(math.log10(x))
    return e + 1 if x >= 10 ** (e + 1) else e  # log10 round-off at exact powers of ten


def uncertainty_digits(u: float) -> int:
    """Decimals (possibly negative) that show ``u`` to one significant digit, or two when
    its first digit is 1 or 2."""
    e = _exponent(u)
    return -e + (1 if u / 10.0**e < 3 else 0)


@dataclass(frozen=True)
class NumberFormat:
    """One column's precision: ``decimals`` of fixed notation, or ``scientific`` with
    ``decimals`` digits after the mantissa's point."""

    decimals: int
    scientific: bool = False
    sign: bool = False

    def __call__(self, value: float | None) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if isinstance(value, float) and math.isinf(value):
            return ("+" if value > 0 and self.sign else "") + ("inf" if value > 0 else "-inf")
        sign = "+" if self.sign else ""
        if self.scientific:
            return format(value, f"{sign}.{self.decimals}e")
        return format(value, f"{sign}.{self.decimals}f")

    def uncertainty(self, u: float | None) -> str:
        """The ± of a cell: at the column's decimals, or in scientific notation with one
        or two significant digits (:func:`uncertainty_digits`)."""
        if u is None or not math.isfinite(u) or not self.scientific or u <= 0:
            return NumberFormat(self.decimals, self.scientific)(u)
        return format(u, f".{max(0, _exponent(u) + uncertainty_digits(u))}e")


def _pairs(values: Iterable[Any], uncertainties: Iterable[Any]) -> list[tuple[float, float | None]]:
    """(value, uncertainty) for every finite value; the uncertainty None unless finite > 0."""
    values = list(values)
    spreads = list(uncertainties) or [None] * len(values)
    out = []
    for v, u in zip(values, spreads, strict=False):
        f, g = _as_finite(v), _as_finite(u)
        if f is not None:
            out.append((f, g if g is not None and g > 0 else None))
    return out


def column_format(
    values: Iterable[float | None], uncertainties: Iterable[float | None] = (), sign: bool = False
) -> NumberFormat:
    """The precision of a column of ``values`` whose cells show ``uncertainties`` (see the
    module's rule)."""
    pairs = _pairs(values, uncertainties)
    nonzero = [(abs(v), u) for v, u in pairs if v != 0]
    if not nonzero:
        return NumberFormat(0, sign=sign)
    top = max(_exponent(m) for m, _ in nonzero)
    bottom = min(_exponent(m) for m, _ in nonzero)
    spreads = [u for _, u in pairs if u is not None]
    if not spreads and all(v.is_integer() for v, _ in pairs) and top < 6:
        return NumberFormat(0, sign=sign)  # counts: whole, whatever their range
    scientific = top < -3 or top >= 6 or top - bottom >= 3
    cap = MAX_SIGNIFICANT - 1
    if scientific:  # digits after the mantissa's point, as each value's uncertainty asks
        needed = [_exponent(m) + uncertainty_digits(u) for m, u in nonzero if u is not None]
        return NumberFormat(max(0, min(max(needed, default=cap), cap)), True, sign)
    needed = [uncertainty_digits(u) for u in spreads]
    return NumberFormat(max(0, min(max(needed, default=cap - top), cap - top)), sign=sign)


def p_value_text(p: float | None) -> str:
    """Two significant digits; below 1e-4 in scientific notation."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"
