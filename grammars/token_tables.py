"""Per-lexer-state token tables: what each vocabulary token does from a lexer state.

From a lexer DFA state ``q`` a token's bytes either die, or end some lexemes (the
*split terminals*, fixed by the longest-match rule) and leave a lexeme open in state
``q_end``. Tokens with the same split terminals form a :class:`Group`, and the groups
hang in a trie keyed by their split sequences. At mask time the parser walks the trie
(one ``feed`` per trie edge, so groups sharing a first terminal share its feed, and a
refused terminal prunes its whole subtree), and a group's tokens are kept by one
vectorised lookup of ``ok_states[q_end]``. Nothing loops over the vocabulary in Python
per step. Tables are built lazily, once per lexer state, by a walk of the vocabulary's
token trie in the compiled core (:func:`grammars.native.lexer_walk`), and kept on disk
next to the compiled grammar, so a later process loads them instead of building them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grammars.lexer_dfa import DEAD, START, LexerDFA
from grammars.native import lexer_walk, trie_of
from plugin.vocabulary import Vocabulary

MAX_SPLITS = 8  # tokens ending more lexemes are walked one by one when the table is built


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
    """Tokens that end the same lexemes (``splits``) from one lexer state.

    ``ids`` are sorted by the lexer state they leave open; ``ends`` are those states
    (unique) and ``counts`` how many tokens leave each, so selecting the tokens whose
    open lexeme the parser can still take is one ``np.repeat`` and one boolean index.
    """

    splits: tuple[int, ...]
    ids: np.ndarray
    ends: np.ndarray
    counts: np.ndarray

    def select(self, ok_states: np.ndarray) -> np.ndarray:
        """The token ids whose open lexeme is in an ``ok_states`` state."""
        keep = ok_states[self.ends]
        if keep.all():
            return self.ids
        if not keep.any():
            return self.ids[:0]
        return self.ids[np.repeat(keep, self.counts)]


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


def save_table(table: TokenTable, path: Path) -> None:
    """Write ``table`` as flat arrays (atomic rename, so readers never see half a file)."""
    g = table.groups
    arrays = {
        "splits": np.array([t for x in g for t in x.splits], dtype=np.int32),
        "n_splits": np.array([len(x.splits) for x in g], dtype=np.int64),
        "ids": np.concatenate([x.ids for x in g]) if g else np.zeros(0, np.int64),
        "n_ids": np.array([x.ids.size for x in g], dtype=np.int64),
        "ends": np.concatenate([x.ends for x in g]) if g else np.zeros(0, np.int32),
        "counts": np.concatenate([x.counts for x in g]) if g else np.zeros(0, np.int64),
        "n_ends": np.array([x.ends.size for x in g], dtype=np.int64),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        np.savez(fh, **arrays)
    tmp.replace(path)


def load_table(path: Path) -> TokenTable:
    """Read a table written by :func:`save_table`."""
    with np.load(path) as f:
        a = {k: f[k] for k in f.files}
    groups: list[Group] = []
    cuts = [np.r_[0, np.cumsum(a[n])] for n in ("n_splits", "n_ids", "n_ends")]
    for i in range(a["n_splits"].size):
        seq = tuple(a["splits"][cuts[0][i] : cuts[0][i + 1]].tolist())
        ids = a["ids"][cuts[1][i] : cuts[1][i + 1]]
        e0, e1 = cuts[2][i], cuts[2][i + 1]
        groups.append(Group(seq, ids, a["ends"][e0:e1], a["counts"][e0:e1]))
    return TokenTable(groups, _trie(groups))


def _trie(groups: list[Group]) -> TrieNode:
    root = TrieNode()
    for gi, group in enumerate(groups):
        node = root
        for term in group.splits:
            node = node.kids.setdefault(term, TrieNode())
        node.groups.append(gi)
    return root


def build_table(lexer: LexerDFA, tokens: TokenBytes, q: int) -> TokenTable:
    """Walk every token from lexer state ``q`` at once (see module docstring)."""
    state, splits, n_splits, alive, slow = lexer_walk(trie_of(tokens), lexer, q, START, MAX_SPLITS)
    key, width = _pack(splits, len(lexer.terminals))
    slow |= alive & (n_splits > width)
    rows = np.flatnonzero(alive & (n_splits <= width))
    groups: list[Group] = []
    if rows.size:
        # One sort by (split sequence, end state) lays out every group with its tokens
        # already ordered by end state; groups and their end-state runs are slices of it.
        _, inverse = np.unique(key[rows], return_inverse=True)
        combo = inverse.reshape(-1).astype(np.int64) * lexer.n_states + state[rows]
        order = np.argsort(combo, kind="stable")
        rows, combo = rows[order], combo[order]
        run_starts = np.flatnonzero(np.r_[True, combo[1:] != combo[:-1]])
        run_counts = np.diff(np.r_[run_starts, rows.size])
        run_group = combo[run_starts] // lexer.n_states
        run_ends = state[rows[run_starts]]
        group_runs = np.flatnonzero(np.r_[True, run_group[1:] != run_group[:-1]])
        group_runs = np.r_[group_runs, run_starts.size]
        ids = tokens.ids[rows]
        for a, b in zip(group_runs[:-1].tolist(), group_runs[1:].tolist(), strict=True):
            first = rows[run_starts[a]]
            start = run_starts[a]
            stop = run_starts[b] if b < run_starts.size else rows.size
            seq = tuple(splits[first, : n_splits[first]].tolist())
            groups.append(Group(seq, ids[start:stop], run_ends[a:b], run_counts[a:b]))
    groups.extend(_long_groups(lexer, tokens, q, np.flatnonzero(slow)))
    return TokenTable(groups, _trie(groups))


def _pack(splits: np.ndarray, n_terms: int) -> tuple[np.ndarray, int]:
    """Split sequences packed exactly into int64 keys (base ``n_terms + 1``), and how
    many splits fit: grouping by one ``np.unique`` on the keys is much faster than
    sorting whole rows. Longer sequences go to the slow path."""
    base = n_terms + 1
    width = 1
    while base ** (width + 1) < 2**62 and width < splits.shape[1]:
        width += 1
    key = np.zeros(splits.shape[0], dtype=np.int64)
    for k in range(width):
        key = key * base + (splits[:, k].astype(np.int64) + 1)
    return key, width


def _long_groups(lexer: LexerDFA, tokens: TokenBytes, q: int, rows: np.ndarray) -> list[Group]:
    """Groups for the few tokens ending many lexemes (``"----...--"``: in Python every
    ``-`` is a unary minus), walked in Python."""
    found: dict[tuple[int, ...], tuple[list[int], list[int]]] = {}
    trans, best = lexer.rows, lexer.best_list
    for row in rows:
        cur, seq = q, []
        for b in tokens.raw[row]:
            nxt = trans[cur][b]
            if nxt == DEAD:
                if best[cur] < 0 or trans[START][b] == DEAD:
                    break
                seq.append(best[cur])
                nxt = trans[START][b]
            cur = nxt
        else:
            ids, ends = found.setdefault(tuple(seq), ([], []))
            ids.append(int(tokens.ids[row]))
            ends.append(cur)
    return [
        _group(k, np.array(i, dtype=np.int64), np.array(e, dtype=np.int32)) for k, (i, e) in found.items()
    ]


def _group(seq: tuple[int, ...], ids: np.ndarray, q_end: np.ndarray) -> Group:
    order = np.argsort(q_end, kind="stable")
    ends, counts = np.unique(q_end[order], return_counts=True)
    return Group(seq, ids[order], ends, counts)
