"""Per-lexer-state token tables: what each vocabulary token does from a lexer state.

From a lexer DFA state ``q`` a token's bytes either die, or end some lexemes (the
*split terminals*, fixed by the longest-match rule) and leave a lexeme open in state
``q_end``. Tokens with the same split terminals form a :class:`Group`, and the groups
hang in a trie keyed by their split sequences. At mask time the parser walks the trie
(one ``feed`` per trie edge, so groups sharing a first terminal share its feed, and a
refused terminal prunes its whole subtree), and a group's tokens are kept by one
vectorised lookup of ``ok_states[q_end]``. Nothing loops over the vocabulary in Python
per step. Tables are built lazily, once per lexer state, by a vectorised walk of all
tokens at once (numpy, column by column over the padded byte matrix).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from grammars.lexer_dfa import DEAD, START, LexerDFA
from plugin.vocabulary import Vocabulary

MAX_SPLITS = 24  # tokens ending more lexemes are walked one by one when the table is built


@dataclass
class TokenBytes:
    """The vocabulary's text tokens as a padded byte matrix (special tokens excluded)."""

    ids: np.ndarray  # int64 [n]
    lengths: np.ndarray  # int32 [n]
    matrix: np.ndarray  # uint8 [n, max_len]
    raw: list[bytes]

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


def build_table(lexer: LexerDFA, tokens: TokenBytes, q: int) -> TokenTable:
    """Walk every token from lexer state ``q`` at once (see module docstring)."""
    state, splits, n_splits, alive, slow = _walk_all(lexer, tokens, q)
    keep = np.nonzero(alive)[0]
    parts = _partition(splits[keep], n_splits[keep], len(lexer.terminals), keep)
    groups = [_group(tuple(splits[m[0], : n_splits[m[0]]].tolist()), tokens.ids[m], state[m]) for m in parts]
    groups.extend(_long_groups(lexer, tokens, q, np.nonzero(slow)[0]))
    root = TrieNode()
    for gi, group in enumerate(groups):
        node = root
        for term in group.splits:
            node = node.kids.setdefault(term, TrieNode())
        node.groups.append(gi)
    return TokenTable(groups, root)


def _walk_all(
    lexer: LexerDFA, tokens: TokenBytes, q: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Column-by-column walk of all tokens from ``q``: end state, split terminals, liveness."""
    trans, best = lexer.trans, lexer.best
    n = tokens.ids.shape[0]
    state = np.full(n, q, dtype=np.int32)
    alive = np.ones(n, dtype=bool)
    n_splits = np.zeros(n, dtype=np.int32)
    splits = np.full((n, MAX_SPLITS), -1, dtype=np.int32)
    slow = np.zeros(n, dtype=bool)
    for j in range(tokens.matrix.shape[1]):
        act = np.nonzero(alive & (tokens.lengths > j))[0]
        if act.size == 0:
            break
        byte = tokens.matrix[act, j]
        cur = state[act]
        nxt = trans[cur, byte]
        dead = nxt == DEAD
        state[act] = nxt
        if not dead.any():
            continue
        d_idx = act[dead]
        term = best[cur[dead]]
        restart = trans[START, byte[dead]]
        ok = (term >= 0) & (restart != DEAD)
        alive[d_idx[~ok]] = False
        d_idx, term, restart = d_idx[ok], term[ok], restart[ok]
        full = n_splits[d_idx] >= MAX_SPLITS
        slow[d_idx[full]] = True
        alive[d_idx[full]] = False
        d_idx, term, restart = d_idx[~full], term[~full], restart[~full]
        splits[d_idx, n_splits[d_idx]] = term
        n_splits[d_idx] += 1
        state[d_idx] = restart
    return state, splits, n_splits, alive, slow


def _partition(splits: np.ndarray, n_splits: np.ndarray, n_terms: int, rows: np.ndarray) -> list[np.ndarray]:
    """Row indices (from ``rows``) grouped by equal split sequences.

    Sequences short enough to pack exactly into an int64 (base ``n_terms + 1``) are
    grouped by one ``np.unique`` on the packed keys (sorting whole rows is ~10x slower);
    the rare longer ones by a dictionary.
    """
    base = n_terms + 1
    width = 1
    while base ** (width + 1) < 2**62 and width < splits.shape[1]:
        width += 1
    short = n_splits <= width
    key = np.zeros(len(rows), dtype=np.int64)
    for k in range(width):
        key = key * base + (splits[:, k].astype(np.int64) + 1)
    out: list[np.ndarray] = []
    idx = np.nonzero(short)[0]
    if idx.size:
        _, inverse = np.unique(key[idx], return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(int(inverse.max()) + 2))
        out.extend(rows[idx[order[bounds[g] : bounds[g + 1]]]] for g in range(len(bounds) - 1))
    long_groups: dict[tuple[int, ...], list[int]] = {}
    for i in np.nonzero(~short)[0]:
        long_groups.setdefault(tuple(splits[i, : n_splits[i]].tolist()), []).append(int(rows[i]))
    out.extend(np.array(v, dtype=np.int64) for v in long_groups.values())
    return out


def _long_groups(lexer: LexerDFA, tokens: TokenBytes, q: int, rows: np.ndarray) -> list[Group]:
    """Groups for the few tokens with more than MAX_SPLITS splits (``"----...--"``: in
    Python every ``-`` is a unary minus), walked in Python."""
    found: dict[tuple[int, ...], tuple[list[int], list[int]]] = {}
    trans, best = lexer.rows, lexer.best_list
    for row in rows:
        cur, seq = q, []
        for b in tokens.raw[row]:
            nxt = trans[cur][b]
            if nxt == DEAD:
                seq.append(best[cur])
                nxt = trans[START][b]
            cur = nxt
        ids, ends = found.setdefault(tuple(seq), ([], []))
        ids.append(int(tokens.ids[row]))
        ends.append(cur)
    return [_group(k, np.array(i, dtype=np.int64), np.array(e, dtype=np.int32)) for k, (i, e) in found.items()]


def _group(seq: tuple[int, ...], ids: np.ndarray, q_end: np.ndarray) -> Group:
    order = np.argsort(q_end, kind="stable")
    ends, counts = np.unique(q_end[order], return_counts=True)
    return Group(seq, ids[order], ends, counts)
