"""How many digits a number deserves: precision that follows the uncertainty.

The rule (the README's "Reading a study" repeats it):

- a value with an uncertainty ``u`` (the ± of its cell: a standard deviation or a confidence
  half-width) is printed to the decimal of ``u``'s second significant digit when ``u``
  starts with 1 or 2 (``0.019`` -> 3 decimals), else of its first (``0.05`` -> 2 decimals);
- one column uses one precision in every row: the finest any of its rows needs, but never
  more than 4 significant digits of the column's largest value;
- a column without uncertainties gets those 4 significant digits, whole numbers none;
- columns of very small or very large numbers (largest below 0.001 or from 1e6) are printed
  in scientific notation with the same rule applied to significant digits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

MAX_SIGNIFICANT = 4


def _finite(values: Iterable[float | None]) -> list[float]:
    out = []
    for v in values:
        if v is None or isinstance(v, bool):
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


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
        text = format(value, f"{sign}.{self.decimals}f")
        if text.lstrip("+-").strip("0.") == "":  # -0.000 reads as a sign of an effect
            text = ("+" if self.sign else "") + text.lstrip("+-")
        return text


def column_format(
    values: Iterable[float | None], uncertainties: Iterable[float | None] = (), sign: bool = False
) -> NumberFormat:
    """The precision of a column of ``values`` whose cells show ``uncertainties`` (see the
    module's rule)."""
    values = _finite(values)
    spreads = [u for u in _finite(uncertainties) if u > 0]
    magnitudes = [abs(v) for v in values if v != 0]
    if not magnitudes:
        return NumberFormat(0, sign=sign)
    biggest = max(magnitudes)
    top = _exponent(biggest)
    scientific = top < -3 or top >= 6
    if not spreads and all(v.is_integer() for v in values) and not scientific:
        return NumberFormat(0, sign=sign)
    if scientific:
        # significant digits after the mantissa's point, relative to the largest value
        cap = MAX_SIGNIFICANT - 1
        needed = [top + uncertainty_digits(u) for u in spreads]
        return NumberFormat(max(0, min(max(needed, default=cap), cap)), True, sign)
    cap = MAX_SIGNIFICANT - 1 - top
    needed = [uncertainty_digits(u) for u in spreads]
    return NumberFormat(max(0, min(max(needed, default=cap), cap)), sign=sign)


def p_value_text(p: float | None) -> str:
    """Two significant digits; below 1e-4 in scientific notation."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"
