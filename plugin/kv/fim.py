"""Fill-in-the-middle over the edit-aware cache: the model reads the text on both sides of the cursor.

Code models trained for fill-in-the-middle read ``PRE prefix SUF suffix MID`` and write the
middle. :class:`FimSession` keeps that string in an :class:`plugin.kv.EditSession`, so an
edit of the document in the prefix or the suffix is a PIE update of the FIM string at the
matching offset, and moving the cursor is two edits (the text between the old and the new
cursor leaves one part and joins the other). Generation runs at the end of the string,
after ``MID``.

The special tokens are found by their spellings in the tokenizer's vocabulary
(:data:`FIM_SPELLINGS`: DeepSeek-Coder, StarCoder/SantaCoder, Qwen2.5-Coder); a tokenizer
with none of them has no FIM mode (:func:`fim_spelling` returns None) and the caller uses
the prefix alone. The whole document must fit the session's context: FIM has no sliding
window here (``OptionError`` says so; the language server then falls back to the prefix).
"""

from __future__ import annotations

import weakref
from typing import Any

from plugin.errors import OptionError
from plugin.kv.edit_session import REFRESH_EVERY, EditSession, check_edit, check_offset, check_text

# (before the prefix, before the suffix, before the middle), in the PSM order
FIM_SPELLINGS = (
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),  # DeepSeek-Coder
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder, SantaCoder
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen2.5-Coder, CodeGemma
)


_SPELLING: weakref.WeakKeyDictionary[Any, tuple[tuple[str, str, str] | None]] = weakref.WeakKeyDictionary()


def fim_spelling(tokenizer: Any) -> tuple[str, str, str] | None:
    """The FIM markers this tokenizer has as single tokens, or None (cached per tokenizer:
    ``get_vocab`` builds a dict of the whole vocabulary, 30–40 ms for 49k tokens)."""
    known = _SPELLING.get(tokenizer)
    if known is None:
        vocab = tokenizer.get_vocab()
        found = None
        for spelling in FIM_SPELLINGS:
            present = all(mark in vocab for mark in spelling)
            if present and all(len(tokenizer(m, add_special_tokens=False).input_ids) == 1 for m in spelling):
                found = spelling
                break
        known = _SPELLING[tokenizer] = (found,)
    return known[0]


class FimSession:
    """A document and its cursor, read by the model as ``PRE prefix SUF suffix MID``.

    Same surface as :class:`EditSession` where it makes sense: ``edit``, ``text``,
    ``stats``, ``generate(offset)`` and ``logits(offset)`` (the cursor moves to
    ``offset`` first), plus ``cursor`` and ``session`` (the inner :class:`EditSession`
    over the FIM string).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        text: str,
        cursor: int,
        *,
        context_tokens: int | None = None,
        refresh_every: int | None = REFRESH_EVERY,
    ) -> None:
        spelling = fim_spelling(tokenizer)
        if spelling is None:
            raise OptionError(
                "the tokenizer has no fill-in-the-middle tokens (see plugin.kv.fim.FIM_SPELLINGS)"
            )
        self._pre, self._suf, self._mid = spelling
        self._text = check_text(text, "text")
        self._cursor = check_offset(cursor, len(text), "cursor")
        fim = self._pre + text[:cursor] + self._suf + text[cursor:] + self._mid
        self.session = EditSession(
            model, tokenizer, fim, context_tokens=context_tokens, refresh_every=refresh_every
        )
        if len(self.session.token_ids) > self.session.context_tokens:
            raise OptionError(
                f"the document has {len(self.session.token_ids)} tokens with its FIM markers, more than "
                f"context_tokens={self.session.context_tokens}: fill-in-the-middle needs the whole document"
            )
        self.model = model
        self.context_tokens = self.session.context_tokens

    @property
    def text(self) -> str:
        return self._text

    @property
    def cursor(self) -> int:
        return self._cursor

    @property
    def stats(self) -> dict[str, Any]:
        return self.session.stats

    @property
    def token_ids(self) -> list[int]:
        """The FIM string's token ids (markers included)."""
        return self.session.token_ids

    @property
    def window(self) -> tuple[int, int]:
        return self.session.window

    def refresh(self) -> None:
        self.session.refresh()

    def _at(self, offset: int) -> int:
        """Where document offset ``offset`` is in the FIM string (the cursor's own offset
        on the prefix side)."""
        if offset <= self._cursor:
            return len(self._pre) + offset
        return len(self._pre) + len(self._suf) + offset

    def edit(self, start: int, end: int, new_text: str) -> None:
        """Replace document characters ``[start, end)`` by ``new_text``; an edit over the
        cursor keeps its new text on the prefix side and leaves the cursor after it."""
        check_edit(start, end, new_text, len(self._text))
        c = self._cursor
        if start < c < end:  # split: the suffix part loses [c, end), the prefix part the rest
            self.session.edit(self._at(c) + len(self._suf), self._at(end), "")
            self.session.edit(self._at(start), self._at(c), new_text)
            self._cursor = start + len(new_text)
        elif end <= c:
            self.session.edit(self._at(start), self._at(end), new_text)
            self._cursor = c + len(new_text) - (end - start)
        else:  # all in the suffix (a start at the cursor included)
            base = len(self._pre) + len(self._suf)
            self.session.edit(base + start, base + end, new_text)
        self._text = self._text[:start] + new_text + self._text[end:]

    def move(self, cursor: int) -> None:
        """Put the cursor at ``cursor``: the text in between changes sides."""
        cursor = check_offset(cursor, len(self._text), "cursor")
        c = self._cursor
        if cursor > c:
            moved = self._text[c:cursor]
            suffix_start = len(self._pre) + c + len(self._suf)
            self.session.edit(suffix_start, suffix_start + len(moved), "")
            self.session.edit(len(self._pre) + c, len(self._pre) + c, moved)
        elif cursor < c:
            moved = self._text[cursor:c]
            suffix_start = len(self._pre) + c + len(self._suf)
            self.session.edit(suffix_start, suffix_start, moved)
            self.session.edit(len(self._pre) + cursor, len(self._pre) + c, "")
        self._cursor = cursor

    def logits(self, offset: int | None = None) -> Any:
        """Next-token logits of the middle at ``offset`` (default: the current cursor)."""
        self.move(self._cursor if offset is None else offset)
        return self.session.logits()

    def generate(self, offset: int | None = None, **kwargs: Any) -> Any:
        """:func:`plugin.constrained_generate` for the middle at ``offset`` (default: the
        current cursor); give ``prefix=text[:offset]`` for completion-mode constraints."""
        self.move(self._cursor if offset is None else offset)
        return self.session.generate(None, **kwargs)
