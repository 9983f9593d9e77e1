"""Context lookup: copy what followed the last time the recent tokens appeared.

Hugging Face's prompt lookup, kept incremental: an index from every n-gram (n up to
``ngram``) of the searchable tokens to where it last ended, fed only the tokens accepted
since the last draft, so a draft costs a few dict lookups, not a scan of a 4,000-token
document. Searchable tokens: ``lookup_ids`` (the language server's whole document), then
the prompt and the output as it grows.
The longest matching suffix wins; among equal ones the most recent.
"""

from __future__ import annotations

from collections.abc import Sequence


class ContextLookup:
    name = "lookup"

    def __init__(self, ngram: int, extra: Sequence[int] = ()) -> None:
        self.ngram = ngram
        self._extra = list(extra)
        self._seen: list[int] = []  # the context tokens indexed so far
        self._index: dict[tuple[int, ...], int] = {}  # n-gram -> end position in _corpus
        self._corpus: list[int] = []  # extra, a separator, then the context
        for i in range(len(self._extra)):
            self._corpus.append(self._extra[i])
            self._note(len(self._corpus) - 1)
        self._corpus.append(-1)  # no n-gram spans the seam between document and context
        self._base = len(self._corpus)

    def _note(self, end: int) -> None:
        """Index the n-grams ending at corpus position ``end`` (inclusive)."""
        corpus = self._corpus
        for n in range(1, self.ngram + 1):
            if end - n + 1 < 0 or corpus[end - n + 1] == -1:
                break
            self._index[tuple(corpus[end - n + 1 : end + 1])] = end

    def add(self, tokens: Sequence[int]) -> None:
        """Append accepted context tokens (a generation's context only grows)."""
        for token in tokens:
            self._seen.append(token)
            self._corpus.append(token)
            # index n-grams ending *before* the last token, so the suffix never finds itself
            if len(self._corpus) - 2 >= self._base:
                self._note(len(self._corpus) - 2)

    def propose(self, pending: Sequence[int], limit: int) -> tuple[list[int], int]:
        """Up to ``limit`` tokens that followed the longest recent match of the last
        tokens of the context plus ``pending`` (drafted, not yet accepted), and the
        match's length (``([], 0)`` when nothing matches)."""
        recent = [*self._seen[-self.ngram :], *pending][-self.ngram :]
        corpus = self._corpus
        for n in range(len(recent), 0, -1):
            end = self._index.get(tuple(recent[-n:]))
            if end is not None:
                follow = corpus[end + 1 : end + 1 + limit]
                if -1 in follow:
                    follow = follow[: follow.index(-1)]
                if follow:
                    return follow, n
        return [], 0
