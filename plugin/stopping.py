"""Where a completion stops by itself: ``stop=`` boundaries and stop strings.

A constraint says what may be written, not when to stop: a model completing a function
body goes on to write example calls and comment lines until its budget ends. ``stop=``
ends the generation where the user's unit of code ends:

* ``"line"``: at the end of the first line written (leading line breaks aside);
* ``"statement"``: after the first complete Python statement (a compound statement
  with its whole body, ``elif``/``else``/``except``/``finally`` clauses included);
* ``"block"``: when a line is dedented out of the block the completion starts in;
* ``"function"``: when a line is dedented to the column of the ``def`` the completion
  is in (or writes), once that function has a body (the default of the
  ``python_function`` grammar, and of the ``python`` grammar completing right after a
  ``def`` line);
* any other string: where that text first appears (the text itself is not kept).

The rule is checked after every token (through the decode loop's ``end_when``, so no
speculative draft is scored past the end) and the output is cut at the boundary: a
dedented line that ended the unit, and comment-only or blank lines before it, are not
kept, and a comment line dedented out of the unit ends it too (the padding small models
write after a body). Python boundaries read the code as Python's tokenizer does for line structure:
brackets, strings (triple-quoted too) and backslash continuations join physical lines.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from plugin.errors import OptionError

BOUNDARIES = ("line", "statement", "block", "function")
_CLAUSES = ("elif", "else", "except", "finally", "case")  # continue the statement above them
_DEF = ("def", "async")


@dataclass(frozen=True)
class _Line:
    """A logical line of the code: where it starts in the text, its indent column,
    whether it holds code (not only a comment or blanks) or a comment, its first word,
    and whether it ends with ``:`` (opens a block) and is complete (its newline was
    written)."""

    start: int
    indent: int
    code: bool
    comment: bool
    word: str
    opens: bool
    complete: bool


def _logical_lines(text: str) -> list[_Line]:
    """The logical lines of ``text`` (Python's line structure; the last may be open)."""
    lines: list[_Line] = []
    i, n = 0, len(text)
    while i < n:
        start = i
        indent = 0
        while i < n and text[i] in " \t\f":
            indent = (indent // 8 + 1) * 8 if text[i] == "\t" else indent + 1
            i += 1
        depth, quote, last = 0, "", ""
        word_start = i
        complete = comment = False
        while i < n:
            c = text[i]
            if quote:
                if c == "\\":
                    i += 2
                    continue
                if text.startswith(quote, i):
                    i += len(quote)
                    quote = ""
                    last = "x"
                    continue
                if c == "\n" and len(quote) == 1:  # an unclosed one-line string ends here
                    quote = ""
                    continue
                i += 1
                continue
            if c == "#":
                comment = True
                while i < n and text[i] != "\n":
                    i += 1
                continue
            if c in "'\"":
                quote = c * 3 if text.startswith(c * 3, i) else c
                i += len(quote)
                continue
            if c == "\\" and i + 1 < n and text[i + 1] == "\n":
                i += 2
                continue
            if c == "\n" and depth == 0:
                i += 1
                complete = True
                break
            if c in "([{":
                depth += 1
            elif c in ")]}":
                depth = max(0, depth - 1)
            if not c.isspace():
                last = c
            i += 1
        body = text[word_start:i]
        stripped = body.split("#", 1)[0].strip() if not quote else body.strip()
        word = stripped.split(None, 1)[0].rstrip(":") if stripped else ""
        lines.append(_Line(start, indent, bool(stripped), comment, word, last == ":", complete))
    return lines


def _trimmed(text: str, end: int) -> int:
    """``end`` moved back over comment-only and blank lines (kept: the last line break)."""
    kept = end
    for line in reversed([ln for ln in _logical_lines(text[:end]) if ln.complete]):
        if line.code:
            break
        kept = line.start
    return kept


@dataclass(frozen=True)
class StopRule:
    """A compiled ``stop=``: :meth:`cut` says where an output ends, if it has ended."""

    boundary: str | None
    texts: tuple[str, ...]
    head: str  # the partial line the output continues (from the prefix), for columns
    before: str  # the prefix's code, to find the function a completion is in

    def cut(self, out: str) -> int | None:
        """The offset in ``out`` where the completion ends, or None while it goes on."""
        ends = [i for i in (out.find(t) for t in self.texts) if i >= 0]
        if self.boundary is not None:
            at = self._boundary(out)
            if at is not None:
                ends.append(at)
        return min(ends) if ends else None

    def end_when(self) -> Callable[[bytes], bool]:
        """The decode loop's per-token check (it hands over the output's bytes)."""
        return lambda data: self.cut(data.decode("utf-8", errors="ignore")) is not None

    def _boundary(self, out: str) -> int | None:
        if self.boundary == "line":
            head = len(out) - len(out.lstrip("\n"))
            at = out.find("\n", head)
            return None if at < 0 else at
        text = self.head + out
        shift = len(self.head)
        lines = _logical_lines(text)
        found = self._python_end(lines, text)
        if found is None:
            return None
        return max(0, _trimmed(text, found) - shift)

    def _python_end(self, lines: list[_Line], text: str) -> int | None:
        """Where the Python unit ends in ``text`` (the start of the line that ends it)."""
        code = [ln for ln in lines if ln.code]
        if not code:
            return None
        if self.boundary == "statement":
            first = code[0]
            if not first.opens:  # a simple statement: ends with its logical line
                nxt = next((ln.start for ln in lines if ln.start > first.start), len(text))
                return nxt if first.complete else None
            for ln in lines:  # dedented code or comment lines after the header end it
                dedented = ln.start > first.start and (ln.code or ln.comment) and ln.indent <= first.indent
                if dedented and ln.word not in _CLAUSES:
                    return ln.start
            return None
        if self.boundary == "block":
            column = code[0].indent
            for ln in lines:
                if ln.start > code[0].start and (ln.code or ln.comment) and ln.indent < column:
                    return ln.start
            return None
        # function: the def the prefix is writing, unless the output starts one of its
        # own beside it; else the first one the output writes
        header = None
        found = self._open_def
        first = code[0]
        if (
            found is not None
            and first.indent <= found[0]
            and (first.word in _DEF or first.word.startswith("@"))
        ):
            found = None
        if found is None:
            header = next((ln for ln in code if ln.word in _DEF), None)
            if header is None:
                return None
            column, body = header.indent, False
        else:
            column, body = found
        for ln in lines:
            if (header is not None and ln.start <= header.start) or not (ln.code or ln.comment):
                continue
            if ln.indent > column:
                body = body or ln.code
            elif body:  # dedented code, or a comment at the def's column after a body: done
                return ln.start
        return None

    @functools.cached_property
    def _open_def(self) -> tuple[int, bool] | None:
        """(column, whether it has a statement yet) of the innermost ``def`` the prefix
        has not closed (every code line after it is indented deeper); None if none.
        Read once: the prefix may be a whole file, and the rule runs at every token."""
        lines = [ln for ln in _logical_lines(self.before) if ln.code]
        floor = 1 << 30  # the least indent of the code lines after the one looked at
        for k in range(len(lines) - 1, -1, -1):
            ln = lines[k]
            if ln.word in _DEF and ln.indent < floor:
                return ln.indent, k < len(lines) - 1
            floor = min(floor, ln.indent)
        return None


def stop_rule(stop: str | Sequence[str] | None, prefix: str | None) -> StopRule | None:
    """``stop=`` checked and compiled. ``prefix``: the text the output continues."""
    if stop is None:
        return None
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, Sequence) or not items or not all(isinstance(s, str) and s for s in items):
        raise OptionError(
            f"stop must be one of {', '.join(map(repr, BOUNDARIES))}, a non-empty stop string, "
            f"or a list of them; got {stop!r}"
        )
    boundaries = [s for s in items if s in BOUNDARIES]
    if len(boundaries) > 1:
        raise OptionError(f"stop names more than one boundary: {', '.join(boundaries)}")
    before = prefix or ""
    head = before.rsplit("\n", 1)[-1]  # the line the output continues sets its columns
    texts = tuple(s for s in items if s not in BOUNDARIES)
    return StopRule(boundaries[0] if boundaries else None, texts, head, before)
