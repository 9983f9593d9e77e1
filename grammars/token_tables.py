"""Per-lexer-state token tables: what each vocabulary token does from a lexer state.

From a lexer DFA state ``q`` a token's bytes either die, or end some lexemes (the
*split terminals*, fixed by the longest-match rule) and leave a lexeme open in state
``q_end``. Tokens with the same split terminals are grouped; for each group we keep the
token ids and their ``q_end``. At mask time the parser is consulted once per group
(feeding the few split terminals) and the group's tokens are kept with one vectorised
lookup, ``ok_states[q_end]``. Nothing loops over the vocabulary in Python per step.
Tables are built lazily, once per lexer state, with a vectorised walk over all tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grammars.lexer_dfa import DEAD, START, LexerDFA
from plugin.vocabulary import Vocabulary

MAX_SPLITS = 6  # tokens ending more lexemes than this are checked one by one


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
    """Tokens that end the same lexemes (``splits``) from one lexer state."""

    splits: tuple[int, ...]
    ids: np.ndarray  # token ids
    q_end: np.ndarray  # lexer state each token leaves open


@dataclass
class TokenTable:
    groups: list[Group]
    slow_ids: list[int]  # tokens with more than MAX_SPLITS splits


def build_table(lexer: LexerDFA, tokens: TokenBytes, q: int) -> TokenTable:
    """Walk every token from lexer state ``q`` at once (see module docstring)."""
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
        if dead.any():
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
            nxt = nxt.copy()
            nxt[dead] = 0
            state[act] = nxt
            state[d_idx] = restart
        else:
            state[act] = nxt
    keep = np.nonzero(alive)[0]
    groups: list[Group] = []
    if keep.size:
        keys, inverse = np.unique(splits[keep], axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(keys.shape[0] + 1))
        for g in range(keys.shape[0]):
            members = keep[order[bounds[g] : bounds[g + 1]]]
            seq = tuple(int(t) for t in keys[g] if t >= 0)
            groups.append(Group(seq, tokens.ids[members], state[members].copy()))
    return TokenTable(groups, tokens.ids[slow].tolist())
