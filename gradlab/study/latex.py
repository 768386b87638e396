"""The comparison as a LaTeX table for a paper: booktabs rules, ``mean ± std`` or
``mean [low, high]``, the best value of every loss and accuracy in bold, names escaped.

The numbers follow :mod:`gradlab.study.numbers` (the same precision as the terminal table); the
constant columns and the notes become comments above and below the ``tabular``. It needs
``\\usepackage{booktabs}`` in the document.
"""

from __future__ import annotations

import re

import pandas as pd

from gradlab.errors import CompareError
from gradlab.study import numbers
from gradlab.study.compare import default_ascending, is_config_column
from gradlab.study.exports import P_VALUES, column_values, display, half_widths, notes, significant
from gradlab.text import one_line

_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "…": r"\ldots{}",
    "|": r"\textbar{}",
}


def escape(text: object) -> str:
    """``text`` on one line (:func:`gradlab.text.one_line`: a newline cannot end a ``%``
    comment) with LaTeX's special characters escaped."""
    return "".join(_SPECIAL.get(ch, ch) for ch in one_line(text))


def _is_scored(column: str) -> bool:
    """Columns with a best value: losses (smallest) and accuracies (largest)."""
    return not column.startswith("delta.") and ("loss" in column or "accuracy" in column)


def _math(text: str, bold: bool) -> str:
    """A number (or ``a \\pm b``) in math mode; ``1.2e-05`` as ``1.2\\times10^{-5}``."""
    text = re.sub(r"e([-+])0*(\d+)", lambda m: rf"\times10^{{{m[1].lstrip('+')}{m[2]}}}", text)
    text = re.sub(r"\binf\b", r"\\infty", text)  # epsilon without noise
    return f"$\\mathbf{{{text}}}$" if bold else f"${text}$"


def column_cells(table: pd.DataFrame, column: str, spread: str) -> list[str]:
    """One column as LaTeX cells (see the module)."""
    values = column_values(table, column)
    numeric = pd.api.types.is_numeric_dtype(table[column]) and not pd.api.types.is_bool_dtype(
        table[column]
    )
    if not numeric or is_config_column(column):
        return [
            "--" if v is None else escape(format(v, "g") if isinstance(v, float) else v)
            for v in values
        ]
    if column in P_VALUES:
        marks = significant(table) if column == "p_adjusted" else [False] * len(values)
        return [
            "--" if v is None else escape(numbers.p_value_text(v)) + ("$^{*}$" if mark else "")
            for v, mark in zip(values, marks, strict=True)
        ]
    delta = column.startswith("delta.")
    lows, highs = (
        column_values(table, f"{column}.ci_low"),
        column_values(table, f"{column}.ci_high"),
    )
    stds = column_values(table, f"{column}.std")
    uncertainty = stds if spread == "std" and not delta else half_widths(table, column)
    fmt = numbers.column_format(values, uncertainty, sign=delta)
    best = None
    if _is_scored(column) and any(v is not None for v in values):
        pick = min if default_ascending(column) else max
        best = fmt(pick(v for v in values if v is not None))
    cells = []
    for value, low, high, std in zip(values, lows, highs, stds, strict=True):
        if value is None:
            cells.append("--")
            continue
        bold = best is not None and fmt(value) == best
        text = _math(fmt(value), bold)
        if delta or spread != "std":
            if low is not None and high is not None:
                text += f" [{_math(fmt(low), False)}, {_math(fmt(high), False)}]"
        elif std is not None:
            text = _math(f"{fmt(value)} \\pm {fmt.uncertainty(std)}", bold)
        cells.append(text)
    return cells


def to_latex(table: pd.DataFrame, spread: str = "ci", power: bool = False) -> str:
    """The comparison table as a booktabs ``tabular`` (``spread``: ``ci`` shows the mean and
    its confidence interval ``[low, high]``, ``std`` the mean ± the standard deviation)."""
    headers, _, constants = display(table, spread, power)
    if not headers:
        raise CompareError("the table has no column to show in LaTeX")
    plain = table.copy(deep=False)
    plain.attrs = {}
    columns = [column_cells(plain, c, spread) for c in headers]
    spec = "".join(
        "r" if pd.api.types.is_numeric_dtype(table[c]) and not is_config_column(c) else "l"
        for c in headers
    )
    lines = ["% gradlab compare; needs \\usepackage{booktabs}"]
    if constants:
        lines.append(
            "% the same in every row: "
            + "; ".join(f"{one_line(k)}: {one_line(v)}" for k, v in constants.items())
        )
    lines += [
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(escape(h) for h in headers) + " \\\\",
        "\\midrule",
    ]
    lines += [" & ".join(row) + " \\\\" for row in zip(*columns, strict=True)]
    lines += ["\\bottomrule", "\\end{tabular}"]
    explained = notes(table, spread)
    if table.attrs.get("grouped") and spread == "ci":
        level = table.attrs.get("ci", 0.95)
        explained[0] = (
            f"[low, high] = the {level * 100:g}% confidence interval of the mean over seeds"
        )
    lines += [f"% {one_line(line)}" for line in explained]  # a comment ends at a newline
    lines.append("% bold: the best loss (smallest) and accuracy (largest) of each column")
    return "\n".join(lines) + "\n"
