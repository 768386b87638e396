"""How text that users wrote (names, config values, paths, folder names) reaches a reader.

Every terminal line, table cell, Markdown file and TeX file gradlab writes passes user text
through :func:`one_line` first: control characters (a newline, a tab, a terminal escape
sequence, Unicode's line separators and direction overrides) are shown as escapes such as
``\\n`` or ``\\x1b``, so a value can never end a line, start a new one, move the cursor or
recolour the terminal. :func:`markdown` also neutralizes Markdown's markup; TeX's special
characters are escaped by :func:`gradlab.study.latex.escape`, on top of this; HTML is escaped
by the report. A leaf: imports nothing of gradlab's.
"""

from __future__ import annotations

import re
import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_MARKDOWN = re.compile(
    r"[\\`\[\]<>|#]"
    r"|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])"
    r"|(?<!\s)\*|\*(?!\s|$)"
)
"""Markdown's markup characters; ``_`` and ``*`` only where they could start or end
emphasis (``_`` inside a word, as in ``final_test_accuracy``, cannot, nor a ``*`` with
spaces on both sides, such as the ``p_adjusted`` cell's mark ``0.01 *``)."""


def _is_control(ch: str) -> bool:
    return ch in _BIDI or unicodedata.category(ch) in ("Cc", "Zl", "Zp")


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line(text: object) -> str:
    """``text`` as one line of printable characters: each control character as its escape
    (``"a\\nb"`` -> ``a\\nb`` with a literal backslash and ``n``); anything else as it is."""
    text = str(text)
    if text.isprintable():  # the usual case, in one C loop
        return text
    return "".join(_escape(ch) if _is_control(ch) else ch for ch in text)


def markdown(text: object) -> str:
    """``text`` as one line of Markdown that reads as written: :func:`one_line`, then a
    backslash before each character Markdown could take as markup (``* _ ` [ ] < > | # \\``)."""
    return _MARKDOWN.sub(lambda m: "\\" + m[0], one_line(text))
