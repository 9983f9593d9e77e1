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


_ANY_FRACTION = r"(?:\.[0-9]+)?"
_ZERO_FRACTION = r"(?:\.0+)?"
_NONZERO_FRACTION = r"\.[0-9]*[1-9][0-9]*"


def number_range_regex(lo: float | None, lo_excl: bool, hi: float | None, hi_excl: bool) -> str | None:
    """A regex of JSON numerals, written without exponent, of values within the bounds
    (``None`` when there are none). Bounds that are not integers are tightened to the
    nearest integer inside (under-accepts, never over-accepts); so are ``-0`` forms and
    exponents left out."""
    if lo is not None and not float(lo).is_integer():
        lo, lo_excl = math.ceil(lo), False
    if hi is not None and not float(hi).is_integer():
        hi, hi_excl = math.floor(hi), False
    lo_i = None if lo is None else int(lo)
    hi_i = None if hi is None else int(hi)
    parts = []
    if hi_i is None or hi_i > 0 or (hi_i == 0 and not hi_excl):  # values >= 0
        if lo_i is None or lo_i < 0:
            parts += _magnitudes(0, False, hi_i, hi_excl)
        else:
            parts += _magnitudes(lo_i, lo_excl, hi_i, hi_excl)
    if lo_i is None or lo_i < 0:  # values < 0: "-" and a magnitude y, lo <= -y <= hi
        low, low_excl = (0, True) if hi_i is None or hi_i >= 0 else (-hi_i, hi_excl)
        parts += ["-" + p for p in _magnitudes(low, low_excl, None if lo_i is None else -lo_i, lo_excl)]
    return "(?:" + "|".join(parts) + ")" if parts else None


def _magnitudes(low: int, low_excl: bool, high: int | None, high_excl: bool) -> list[str]:
    """Decimals ``A.F`` (no sign) with ``low <(=) A.F <(=) high``, ``low >= 0``: split on
    the integer part A, each piece saying which fractions (zero or not) it allows."""
    cuts = sorted({0, low, low + 1, *(() if high is None else (high, high + 1))})
    pieces = []
    for i, a in enumerate(cuts):
        b = cuts[i + 1] - 1 if i + 1 < len(cuts) else None
        zero = nonzero = True
        if a < low:
            zero = nonzero = False
        elif a == low and low_excl:
            zero = False
        if high is not None:
            if a > high:
                zero = nonzero = False
            elif a == high:
                nonzero = False
                zero = zero and not high_excl
        if not (zero or nonzero):
            continue
        fraction = _ANY_FRACTION if zero and nonzero else _ZERO_FRACTION if zero else _NONZERO_FRACTION
        pieces.append(_naturals(a, b) + fraction)
    return pieces
