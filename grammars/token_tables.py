"""Per-lexer-state token tables: what each vocabulary token does from a lexer state.

From a lexer DFA state ``q`` a token's bytes either die, or end some lexemes (the
*split terminals*, fixed by the longest-match rule) and leave a lexeme open in state
``q_end``. Tokens with the same split terminals form a :class:`Group`, and the groups
hang in a trie keyed by their split sequences. At mask time the parser walks the trie
(one ``feed`` per trie edge, so groups sharing a first terminal share its feed, and a
refused terminal prunes its whole subtree), and a group's tokens are kept where
``ok_states[q_end]`` holds; both in the compiled LR core (``grammars/_lr_core.c``), so
nothing loops over the vocabulary in Python per step. Tables are built lazily, once per
lexer state, by a walk of the vocabulary's token trie in the compiled core
(:func:`grammars.native.lexer_walk`), which also groups the tokens and interns their
split sequences, so a table is a few flat arrays: kept on disk next to the compiled
grammar, a later process reads them instead of walking.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Container
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from grammars.lexer_dfa import START, LexerDFA
from grammars.native import lexer_walk, trie_of
from grammars.syntax import split_trie
from plugin.vocabulary import Vocabulary


def fewest_tokens(data: bytes, spellings: Container[bytes], longest: int, far: int) -> list[int]:
    """For each suffix ``data[i:]``, the fewest tokens (byte strings in ``spellings``, at
    most ``longest`` bytes) that spell it; ``far`` where none do. One pass right to left,
    each position trying the tokens that start there: what a completion path found by a
    budget search costs in tokens (any spelling of the same bytes reaches the same
    state, so the fewest is a real one)."""
    n = len(data)
    best = [far] * n + [0]
    for i in range(n - 1, -1, -1):
        for j in range(i + 1, min(n, i + longest) + 1):
            if best[j] + 1 < best[i] and data[i:j] in spellings:
                best[i] = best[j] + 1
    return best


@dataclass
class TokenBytes:
    """The vocabulary's text tokens (special tokens excluded): their ids, lengths and
    bytes, one row each; the compiled core's token trie is built from ``raw``."""

    ids: np.ndarray  # int64 [n]
    lengths: np.ndarray  # int32 [n]
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
        return cls(np.array(ids, dtype=np.int64), np.array([len(b) for b in raw], dtype=np.int32), raw)


_TOKENS: dict[str, TokenBytes] = {}
_TOKENS_LOCK = threading.Lock()


@dataclass
class TokenTable:
    """What every token does from one lexer state, as flat arrays (see module doc).

    Group ``g`` is the tokens ``ids[offsets[g]:offsets[g + 1]]``, which end the lexemes
    of split sequence ``group_seq[g]`` and leave open the lexer states ``ends[...]``.
    Split sequences form a trie: sequence ``i > 0`` is sequence ``seq_parent[i]``
    followed by terminal ``seq_term[i]``; 0 is the empty one.
    """

    ids: np.ndarray  # int64
    ends: np.ndarray  # int32
    offsets: np.ndarray  # int64 [groups + 1]
    group_seq: np.ndarray  # int32 [groups]
    seq_parent: np.ndarray  # int32 [sequences]
    seq_term: np.ndarray  # int32 [sequences]

    @cached_property
    def split_trie(self) -> tuple[bytes, bytes, bytes, bytes, bytes]:
        """The split sequences some group extends, as the LR core walks them (CSR int32:
        per sequence its child edges (terminal, sequence) and the groups ending there)."""
        return split_trie(
            np.ascontiguousarray(self.group_seq, dtype=np.int32),
            np.ascontiguousarray(self.seq_parent, dtype=np.int32),
            np.ascontiguousarray(self.seq_term, dtype=np.int32),
        )


# the table's arrays on disk: their names and dtypes, in file order
_ARRAYS = (
    ("ids", np.int64),
    ("ends", np.int32),
    ("offsets", np.int64),
    ("group_seq", np.int32),
    ("seq_parent", np.int32),
    ("seq_term", np.int32),
)
_MAGIC = b"STT1"


def build_table(lexer: LexerDFA, tokens: TokenBytes, q: int) -> TokenTable:
    """Walk every token from lexer state ``q`` at once (see module docstring)."""
    walk = lexer_walk(trie_of(tokens), lexer, q, START)
    return TokenTable(
        tokens.ids[walk.rows], walk.ends, walk.offsets, walk.group_seq, walk.seq_parent, walk.seq_term
    )


def save_table(table: TokenTable, path: Path) -> None:
    """Write ``table``'s arrays as raw bytes after a header of their lengths (atomic
    rename, so readers never see half a file); reading them back is one file read."""
    arrays = [np.ascontiguousarray(getattr(table, name), dtype=dtype) for name, dtype in _ARRAYS]
    header = _MAGIC + np.array([a.size for a in arrays], dtype=np.int64).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(header + b"".join(a.tobytes() for a in arrays))
    tmp.replace(path)


_WRITER: ThreadPoolExecutor | None = None
_WRITER_LOCK = threading.Lock()


def save_table_soon(table: TokenTable, path: Path) -> None:
    """:func:`save_table` on a background thread: the disk cache serves later processes,
    and a first visit should not wait for its table's write (on a 128k vocabulary about
    as long as building the table). Writes finish before the interpreter exits; an
    ``OSError`` (a read-only or full cache) only costs a later process its speed."""
    global _WRITER
    with _WRITER_LOCK:
        if _WRITER is None:
            _WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stencil-table-writer")
        _WRITER.submit(_save_quietly, table, path)


def _save_quietly(table: TokenTable, path: Path) -> None:
    with contextlib.suppress(OSError):
        save_table(table, path)


def wait_for_table_saves() -> None:
    """Block until every table handed to :func:`save_table_soon` is on disk."""
    with _WRITER_LOCK:
        writer = _WRITER
    if writer is not None:
        writer.submit(lambda: None).result()


def load_table(path: Path) -> TokenTable:
    """Read a table written by :func:`save_table`; ``ValueError`` if it is not one."""
    data = path.read_bytes()
    head = len(_MAGIC) + 8 * len(_ARRAYS)
    if len(data) < head or not data.startswith(_MAGIC):
        raise ValueError(f"{path} is not a token table")
    sizes = np.frombuffer(data, dtype=np.int64, count=len(_ARRAYS), offset=len(_MAGIC)).tolist()
    arrays, at = [], head
    for (_, dtype), n in zip(_ARRAYS, sizes, strict=True):
        end = at + n * np.dtype(dtype).itemsize
        if n < 0 or end > len(data):
            raise ValueError(f"{path} is cut short")
        arrays.append(np.frombuffer(data, dtype=dtype, count=n, offset=at))
        at = end
    return TokenTable(*arrays)
