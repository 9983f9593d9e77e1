"""Context lookup: copy what followed the last time the recent tokens appeared.

Hugging Face's prompt lookup, kept incremental: an index from every n-gram (n up to
``ngram``) of the searchable tokens to where it last ended, fed only the tokens accepted
since the last draft, so a draft costs a few dict lookups, not a scan of a 4,000-token
document. Searchable tokens: ``lookup_ids`` (the language server's whole document), then
the prompt and the output as it grows.
The longest matching suffix wins; among equal ones the most recent.

Two things decide how far a copy is worth drafting, so :meth:`ContextLookup.propose`
reports them. How long the context agrees with the source before the match (up to
``AGREEMENT`` tokens, far past the ``ngram`` the index is keyed by): a copy after 8
agreeing tokens is kept far more often than one after a single shared token. And a
match that runs into the present (the output repeating itself: list items, a loop's
lines) copies on from what the copy itself writes, as LZ77 does, instead of stopping
where the known text ends.
"""

from __future__ import annotations

from collections.abc import Sequence

AGREEMENT = 16  # most tokens of agreement before a match that are counted


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
        tokens of the context plus ``pending`` (drafted, not yet accepted), and how many
        tokens before the copy agree with the context (``([], 0)`` when nothing
        matches)."""
        recent = [*self._seen[-AGREEMENT:], *pending][-AGREEMENT:]
        corpus = self._corpus
        for n in range(min(self.ngram, len(recent)), 0, -1):
            end = self._index.get(tuple(recent[-n:]))
            if end is None:
                continue
            follow = corpus[end + 1 : end + 1 + limit]
            if -1 in follow:
                follow = follow[: follow.index(-1)]
            elif len(follow) < limit:
                # the source runs into the present: after the corpus come ``pending``,
                # then the copy itself, so a repeat goes on repeating
                written = [*pending, *follow]
                at = end + 1 + len(follow) - len(corpus)
                while len(follow) < limit and at < len(written):
                    follow.append(written[at])
                    written.append(written[at])
                    at += 1
            if follow:
                return follow, self._agreement(recent, end, n)
        return [], 0

    def _agreement(self, recent: list[int], end: int, n: int) -> int:
        """Tokens of ``recent`` that equal the corpus up to ``end`` (at least the ``n``
        of the match), counted back to ``AGREEMENT`` or a seam."""
        corpus = self._corpus
        k = n
        while k < len(recent) and end - k >= 0 and corpus[end - k] == recent[-1 - k] != -1:
            k += 1
        return k
