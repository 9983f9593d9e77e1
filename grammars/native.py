"""The compiled core's Python side: a vocabulary's token trie and the walks over it.

One kernel serves both byte-automaton routes (see ``grammars/_trie_walk.c``):

* :func:`dfa_allowed`: the tokens a lazily built DFA (the JSON Schema route) accepts
  from a state, and the state each leads to. Rows the DFA has not built yet come back
  from C as pending work; they are built here (in Python, where the automaton lives)
  and the walk resumes below them.
* :func:`lexer_walk`: every token's longest-match walk from a grammar's lexer state
  (the grammar engine's token tables).

The trie is shared by prefix: a 128k vocabulary has about 275k trie nodes against 1.3M
token bytes, and a dead byte drops its whole subtree. The extension is built by the
package's own build (``pip install -e .``, which ``./run setup`` does); without it the
import fails with the reason, never a silent slow path. The grammar engine's LR core
(``grammars/_lr_core.c``, used by :mod:`grammars.syntax`) is imported here the same way.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np


def _compiled(name: str) -> ModuleType:
    """One of the package's C extensions, or an install error that says how to build it."""
    try:
        return importlib.import_module(f"grammars.{name}")
    except ImportError as exc:  # pragma: no cover - exercised only on a broken install
        raise ImportError(
            f"Stencil's compiled core (grammars.{name}) is not built. Run `./run setup` or "
            "`pip install -e .` from the repository; it needs a C compiler (gcc or cc) and the "
            f"Python headers (python3-dev). Import error: {exc}"
        ) from exc


_trie_walk = _compiled("_trie_walk")
lr_core = _compiled("_lr_core")  # the grammar engine's parser side (grammars/syntax.py)
lazy_dfa_core = _compiled("_lazy_dfa")  # subset construction on demand (grammars/lazy_dfa.py)

if TYPE_CHECKING:
    from grammars.lazy_dfa import LazyDFA
    from grammars.lexer_dfa import LexerDFA
    from grammars.token_tables import TokenBytes


@dataclass(frozen=True)
class TokenTrie:
    """A vocabulary's token bytes as a preorder trie (arrays the C walks read)."""

    nodes: int
    buffers: tuple[bytes, bytes, bytes, bytes, np.ndarray, bytes]  # what the C walks take
    rows: int  # token rows (the TokenBytes rows the trie's tokens name)

    @classmethod
    def build(cls, raw: list[bytes]) -> TokenTrie:
        """The trie of ``raw`` (a token's bytes per row; no empty ones)."""
        order = sorted(range(len(raw)), key=raw.__getitem__)
        data = b"".join(raw[i] for i in order)
        offsets = np.zeros(len(raw) + 1, dtype=np.int64)
        np.cumsum([len(raw[i]) for i in order], out=offsets[1:])
        byte, depth, end, tok_start, sub = _trie_walk.build(data, offsets)
        rows = np.array(order, dtype=np.int32)
        return cls(len(byte), (byte, depth, end, tok_start, rows, sub), len(raw))

    def labelled(self, labels: np.ndarray) -> TokenTrie:
        """The same trie whose walks report ``labels[row]`` (int32, one per token row,
        e.g. the token ids) instead of the row: saves a gather over the vocabulary in
        the order the walk finds tokens, which is not the rows' order."""
        byte, depth, end, tok_start, rows, sub = self.buffers
        named = labels[rows].astype(np.int32)
        return TokenTrie(self.nodes, (byte, depth, end, tok_start, named, sub), self.rows)


_LOCK = threading.Lock()


def trie_of(tokens: TokenBytes) -> TokenTrie:
    """The trie of ``tokens``, built once per :class:`TokenBytes` and kept on it."""
    hit = tokens.__dict__.get("_trie")
    if hit is None:
        with _LOCK:
            hit = tokens.__dict__.get("_trie")
            if hit is None:
                hit = tokens.__dict__["_trie"] = TokenTrie.build(tokens.raw)
    return hit


def dfa_allowed(
    trie: TokenTrie, dfa: LazyDFA, q: int, size: int, row_min: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(token labels the DFA accepts from ``q`` (int64; the ids, for a trie
    :meth:`TokenTrie.labelled` by them), in trie order; the state each leads to; a bool
    row over the ``size``-token vocabulary when there are at least ``row_min``).

    A round is one C walk; the rows it found missing are built (``dfa.trans`` may grow
    meanwhile, so each round is handed the current table) and the next round resumes
    below them. Rounds are as many as the deepest chain of new states, not the states."""
    out_ids = np.empty(trie.rows, dtype=np.int32)
    out_states = np.empty(trie.rows, dtype=np.int32)
    if not dfa.built[q]:
        dfa.build_row(q)
    work = np.array([0, trie.nodes, q], dtype=np.int32)
    n = 0
    while work.size:
        n, pending = _trie_walk.walk_dfa(trie.buffers, dfa.trans, dfa.built, work, out_ids, out_states, n)
        work = np.frombuffer(pending, dtype=np.int32)
        if work.size:
            dfa.ensure_rows(work[2::3])
    ids = out_ids[:n].astype(np.int64)  # copies: the buffers hold the whole vocabulary
    row = None
    if n >= row_min:
        row = np.zeros(size, dtype=np.bool_)
        _trie_walk.set_row(ids, row)
    return ids, out_states[:n].copy(), row


@dataclass(frozen=True)
class LexerWalk:
    """Live tokens from one lexer state, grouped by the lexemes they end (see
    :func:`lexer_walk`): group ``g`` is ``rows/ends[offsets[g]:offsets[g + 1]]``, its
    split sequence ``group_seq[g]``; sequence ``i > 0`` is ``seq_parent[i]`` followed by
    terminal ``seq_term[i]``."""

    rows: np.ndarray  # int32: TokenBytes rows, group after group
    ends: np.ndarray  # int32: the lexer state each leaves open
    offsets: np.ndarray  # int64 [groups + 1]
    group_seq: np.ndarray  # int32 [groups]
    seq_parent: np.ndarray  # int32 [sequences]
    seq_term: np.ndarray  # int32 [sequences]

    def splits(self, group: int) -> tuple[int, ...]:
        """The terminals ``group``'s tokens end, in order."""
        out = []
        seq = int(self.group_seq[group])
        while seq:
            out.append(int(self.seq_term[seq]))
            seq = int(self.seq_parent[seq])
        return tuple(reversed(out))


def lexer_walk(trie: TokenTrie, lexer: LexerDFA, q: int, start: int) -> LexerWalk:
    """Every token's longest-match walk from lexer state ``q`` (``start``: where a byte
    the open lexeme cannot take begins the next one), grouped in C by split sequence."""
    trans = np.ascontiguousarray(lexer.trans, dtype=np.int32)
    best = np.ascontiguousarray(lexer.best, dtype=np.int32)
    rows, ends, offsets, group_seq, parent, term = _trie_walk.walk_lexer(trie.buffers, trans, best, q, start)
    return LexerWalk(
        np.frombuffer(rows, dtype=np.int32),
        np.frombuffer(ends, dtype=np.int32),
        np.frombuffer(offsets, dtype=np.int64),
        np.frombuffer(group_seq, dtype=np.int32),
        np.frombuffer(parent, dtype=np.int32),
        np.frombuffer(term, dtype=np.int32),
    )


def core() -> Any:
    """The extension module (for tests and diagnostics)."""
    return _trie_walk
