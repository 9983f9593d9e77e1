"""Integer bounds (``minimum``, ``maximum``, ``exclusive*``) as regular expressions.

outlines-core's regex builder drops numeric bounds. For ``"type": "integer"`` they are
regular: the decimal numerals of ``lo..hi`` (no leading zeros, no ``-0``) form a finite
union of digit-range pieces, and a one-sided range adds "any longer numeral". The JSON
Schema route swaps each bounded integer schema for a placeholder ``const`` before the
builder runs and the placeholder's literal for :func:`integer_range_regex` after.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

BOUND_KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def integer_bounds(schema: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """The inclusive integer range ``schema``'s bounds allow (``None``: unbounded), for
    draft-04's boolean ``exclusive*`` and the numeric ones of later drafts alike."""
    lo: int | None = None
    hi: int | None = None
    minimum, maximum = schema.get("minimum"), schema.get("maximum")
    ex_min, ex_max = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if _number(minimum):
        lo = math.floor(minimum) + 1 if ex_min is True and float(minimum).is_integer() else math.ceil(minimum)
    if _number(ex_min):
        lo = max(lo, math.floor(ex_min) + 1) if lo is not None else math.floor(ex_min) + 1
    if _number(maximum):
        hi = math.ceil(maximum) - 1 if ex_max is True and float(maximum).is_integer() else math.floor(maximum)
    if _number(ex_max):
        hi = min(hi, math.ceil(ex_max) - 1) if hi is not None else math.ceil(ex_max) - 1
    return lo, hi


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def integer_range_regex(lo: int | None, hi: int | None) -> str:
    """A regex matching exactly the JSON numerals of the integers in ``lo..hi``."""
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"no integer lies in {lo}..{hi}")
    parts = []
    if hi is None or hi >= 0:  # the non-negative part
        parts.append(_naturals(max(lo or 0, 0), hi))
    if lo is None or lo < 0:  # the negative part, as "-" and a magnitude
        smallest = 1 if hi is None or hi >= 0 else -hi
        parts.append("-" + _naturals(smallest, None if lo is None else -lo))
    return "(?:" + "|".join(parts) + ")"


def _naturals(lo: int, hi: int | None) -> str:
    """Numerals of ``lo..hi`` (``hi`` None: unbounded), ``0 <= lo``."""
    pieces = []
    top = hi if hi is not None else 10 ** len(str(lo)) - 1
    for width in range(len(str(lo)), len(str(top)) + 1):
        a = max(lo, 10 ** (width - 1) if width > 1 else 0)
        b = min(top, 10**width - 1)
        if a <= b:
            pieces.append(_same_width(str(a), str(b)))
    if hi is None:  # and every longer numeral
        pieces.append(f"[1-9][0-9]{{{len(str(lo))},}}")
    return "(?:" + "|".join(pieces) + ")"


def _same_width(a: str, b: str) -> str:
    """Digit strings of one width between ``a`` and ``b`` (inclusive, ``a <= b``)."""
    if a == b:
        return a
    if len(a) == 1:
        return f"[{a}-{b}]"
    rest = len(a) - 1
    if a[1:] == "0" * rest and b[1:] == "9" * rest:
        return f"[{a[0]}-{b[0]}][0-9]{{{rest}}}"
    if a[0] == b[0]:
        return a[0] + _same_width(a[1:], b[1:])
    parts = [a[0] + _same_width(a[1:], "9" * rest)]
    if int(b[0]) - int(a[0]) > 1:
        parts.append(f"[{int(a[0]) + 1}-{int(b[0]) - 1}][0-9]{{{rest}}}")
    parts.append(b[0] + _same_width("0" * rest, b[1:]))
    return "(?:" + "|".join(parts) + ")"
