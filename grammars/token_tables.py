"""Per-lexer-state token tables: what each vocabulary token does from a lexer state.

From a lexer DFA state ``q`` a token's bytes either die, or end some lexemes (the
*split terminals*, fixed by the longest-match rule) and leave a lexeme open in state
``q_end``. Tokens with the same split terminals form a :class:`Group`, and the groups
hang in a trie keyed by their split sequences. At mask time the parser walks the trie
(one ``feed`` per trie edge, so groups sharing a first terminal share its feed, and a
refused terminal prunes its whole subtree), and a group's tokens are kept by one
vectorised lookup of ``ok_states[q_end]``. Nothing loops over the vocabulary in Python
per step. Tables are built lazily, once per lexer state, by a walk of the vocabulary's
token trie in the compiled core (:func:`grammars.native.lexer_walk`), which also groups
the tokens; a table of a 128k vocabulary costs a few ms, about what reading one from
disk cost, so tables are not kept on disk.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from grammars.lexer_dfa import START, LexerDFA
from grammars.native import lexer_walk, trie_of
from plugin.vocabulary import Vocabulary


@dataclass
class TokenBytes:
    """The vocabulary's text tokens as a padded byte matrix (special tokens excluded)."""

    ids: np.ndarray  # int64 [n]
    lengths: np.ndarray  # int32 [n]
    matrix: np.ndarray  # uint8 [n, max_len]
    raw: list[bytes]

    @classmethod
    def of(cls, vocab: Vocabulary) -> TokenBytes:
        """The vocabulary's table, built once per process and shared by every route."""
        with _TOKENS_LOCK:
            hit = _TOKENS.get(vocab.fingerprint)
            if hit is None:
                hit = _TOKENS[vocab.fingerprint] = cls.from_vocab(vocab)
            return hit

    @classmethod
    def from_vocab(cls, vocab: Vocabulary) -> TokenBytes:
        ids = [i for i, b in enumerate(vocab.token_bytes) if b and i not in vocab.special_ids]
        raw = [vocab.token_bytes[i] for i in ids]
        max_len = max(len(b) for b in raw)
        matrix = np.zeros((len(ids), max_len), dtype=np.uint8)
        for row, b in enumerate(raw):
            matrix[row, : len(b)] = np.frombuffer(b, dtype=np.uint8)
        return cls(
            np.array(ids, dtype=np.int64), np.array([len(b) for b in raw], dtype=np.int32), matrix, raw
        )


_TOKENS: dict[str, TokenBytes] = {}
_TOKENS_LOCK = threading.Lock()


@dataclass
class Group:
    """Tokens that end the same lexemes (``splits``) from one lexer state, and the
    lexer state each leaves open (``ends``): selecting those whose open lexeme the
    parser can still take is one gather and one boolean index."""

    splits: tuple[int, ...]
    ids: np.ndarray
    ends: np.ndarray

    def select(self, ok_states: np.ndarray) -> np.ndarray:
        """The token ids whose open lexeme is in an ``ok_states`` state."""
        keep = ok_states[self.ends]
        if keep.all():
            return self.ids
        return self.ids[keep]


@dataclass
class TrieNode:
    """Groups whose split sequence ends here, and the edges (next split terminal) below."""

    groups: list[int] = field(default_factory=list)
    kids: dict[int, TrieNode] = field(default_factory=dict)


@dataclass
class TokenTable:
    groups: list[Group]
    root: TrieNode
    selected: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (group, ok key)


def _trie(groups: list[Group]) -> TrieNode:
    root = TrieNode()
    for gi, group in enumerate(groups):
        node = root
        for term in group.splits:
            kid = node.kids.get(term)
            if kid is None:
                kid = node.kids[term] = TrieNode()
            node = kid
        node.groups.append(gi)
    return root


def build_table(lexer: LexerDFA, tokens: TokenBytes, q: int) -> TokenTable:
    """Walk every token from lexer state ``q`` at once (see module docstring)."""
    walk = lexer_walk(trie_of(tokens), lexer, q, START)
    ids = tokens.ids[walk.rows]
    cuts = walk.offsets
    groups = [
        Group(seq, ids[a:b], walk.ends[a:b]) for seq, a, b in zip(walk.splits, cuts, cuts[1:], strict=False)
    ]
    return TokenTable(groups, _trie(groups))
