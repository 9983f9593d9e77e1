"""Token id → exact bytes, the first seam of every constraint.

Constraints reason about bytes, never decoded strings: a byte-level BPE token can hold
half of a UTF-8 character, and a SentencePiece token carries its leading space as ``▁``.
Decoding single tokens with ``tokenizer.decode`` loses both, so we read the tokenizer's
own model (``tokenizer.json``) and invert its byte mapping.

Supported families:

* byte-level BPE (GPT-2, Llama-3, Qwen2, DeepSeek-Coder, SmolLM2): every character of a
  token stands for one byte through GPT-2's ``bytes_to_unicode`` table;
* SentencePiece-style (``Metaspace`` / ``Replace('▁', ' ')`` decoders): ``▁`` is a space
  and ``<0xNN>`` pieces are raw bytes when the model uses byte fallback.

Special tokens (``<|im_end|>``, ``<s>`` …) are kept apart: they have no text, a
constraint never allows them, and end-of-sequence is handled by the Matcher itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import weakref
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

from plugin.errors import VocabularyError
from plugin.gc_pause import gc_paused

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def _byte_level_decoder() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode``: printable stand-in char → byte."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codepoints = printable[:]
    shift = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codepoints.append(256 + shift)
            shift += 1
    return {chr(c): b for b, c in zip(printable, codepoints, strict=True)}


def _decoder_types(spec: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Flatten a tokenizer.json decoder (possibly a ``Sequence``) into its steps."""
    if not spec:
        return []
    if spec.get("type") == "Sequence":
        steps: list[dict[str, Any]] = []
        for sub in spec.get("decoders", []):
            steps.extend(_decoder_types(sub))
        return steps
    return [spec]


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """The exact bytes of every token of one tokenizer.

    ``token_bytes[i]`` is the byte string token ``i`` contributes to the text; special
    tokens and unused ids map to ``b""`` and are listed in ``special_ids``. ``size`` is
    ``len(tokenizer)``; masks must be at least that long.
    """

    token_bytes: tuple[bytes, ...]
    special_ids: frozenset[int]
    eos_ids: frozenset[int]
    kind: str  # "byte_level" or "sentencepiece"
    fingerprint: str = field(default="")

    @property
    def size(self) -> int:
        return len(self.token_bytes)

    def __len__(self) -> int:
        return len(self.token_bytes)

    def decode(self, token_ids: list[int]) -> bytes:
        """Concatenate the bytes of ``token_ids`` (special tokens contribute nothing)."""
        tb = self.token_bytes
        return b"".join(tb[i] for i in token_ids)

    @cached_property
    def single_byte_ids(self) -> tuple[int, ...]:
        """One text token id for each byte value the vocabulary spells alone."""
        found: dict[bytes, int] = {}
        for i, b in enumerate(self.token_bytes):
            if len(b) == 1 and i not in self.special_ids:
                found.setdefault(b, i)
        return tuple(found.values())

    def text_tokens(self) -> dict[bytes, list[int]]:
        """Non-empty byte strings → the ids that spell them (specials excluded).

        Built once per vocabulary and shared by every constraint: callers must not
        change it (tens of thousands of small lists; rebuilding them per constraint
        cost a garbage collection in a process holding a model)."""
        return self._text_tokens

    @cached_property
    def _text_tokens(self) -> dict[bytes, list[int]]:
        groups: dict[bytes, list[int]] = {}
        with gc_paused():
            for i, b in enumerate(self.token_bytes):
                if b and i not in self.special_ids:
                    groups.setdefault(b, []).append(i)
        return groups

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> Vocabulary:
        """Build (once per tokenizer object, then cached) the vocabulary of ``tokenizer``."""
        try:
            cached = _CACHE.get(tokenizer)
        except TypeError:  # not weak-referenceable
            cached = None
        if cached is not None:
            return cached
        vocab = _build(tokenizer)
        with contextlib.suppress(TypeError):  # not weak-referenceable: build each time
            _CACHE[tokenizer] = vocab
        return vocab


_CACHE: weakref.WeakKeyDictionary[Any, Vocabulary] = weakref.WeakKeyDictionary()


def _build(tokenizer: Any) -> Vocabulary:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise VocabularyError(
            f"tokenizer {type(tokenizer).__name__} has no fast (tokenizers) backend; "
            "Stencil needs a tokenizer.json to map tokens to exact bytes"
        )
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    pieces: dict[int, str] = {}
    raw_vocab = model.get("vocab")
    if isinstance(raw_vocab, dict):  # BPE, WordLevel
        pieces = {int(i): p for p, i in raw_vocab.items()}
    elif isinstance(raw_vocab, list):  # Unigram: [[piece, score], ...]
        pieces = {i: entry[0] for i, entry in enumerate(raw_vocab)}
    else:
        raise VocabularyError(f"tokenizer model type {model.get('type')!r} has no vocabulary")

    steps = _decoder_types(spec.get("decoder"))
    types = {s.get("type") for s in steps}
    if "ByteLevel" in types:
        kind = "byte_level"
    elif types & {"Metaspace", "ByteFallback"} or any(
        s.get("type") == "Replace" and "▁" in json.dumps(s.get("pattern")) for s in steps
    ):
        kind = "sentencepiece"
    else:
        raise VocabularyError(
            f"unsupported tokenizer decoder {sorted(t for t in types if t)} "
            f"(model {model.get('type')!r}); Stencil supports byte-level BPE and "
            "SentencePiece-style vocabularies"
        )

    size = len(tokenizer)
    token_bytes: list[bytes] = [b""] * size
    special: set[int] = set()
    byte_map = _byte_level_decoder()
    for i, piece in pieces.items():
        if i >= size:
            continue
        if kind == "byte_level":
            try:
                token_bytes[i] = bytes(byte_map[c] for c in piece)
            except KeyError:  # not a byte-level piece: take it literally
                token_bytes[i] = piece.encode("utf-8")
        else:
            m = _BYTE_PIECE.match(piece)
            token_bytes[i] = bytes([int(m.group(1), 16)]) if m else piece.replace("▁", " ").encode()

    for added in spec.get("added_tokens", []):
        i = int(added["id"])
        if i >= size:
            continue
        if added.get("special", False):
            special.add(i)
            token_bytes[i] = b""
        else:  # user-added text tokens hold their content literally
            token_bytes[i] = added["content"].encode("utf-8")
    for i in getattr(tokenizer, "all_special_ids", []) or []:
        if i is not None and 0 <= i < size:
            special.add(i)
            token_bytes[i] = b""
    special.update(i for i in range(size) if i not in pieces and not token_bytes[i])

    eos = getattr(tokenizer, "eos_token_id", None)
    eos_ids = frozenset([eos] if isinstance(eos, int) else (eos or []))
    if not eos_ids:
        raise VocabularyError("tokenizer defines no eos_token; Stencil needs one to end outputs")

    digest = hashlib.sha256()
    digest.update(kind.encode())
    for b in token_bytes:
        digest.update(len(b).to_bytes(2, "little"))
        digest.update(b)
    digest.update(repr(sorted(special)).encode())
    digest.update(repr(sorted(eos_ids)).encode())
    return Vocabulary(
        token_bytes=tuple(token_bytes),
        special_ids=frozenset(special),
        eos_ids=eos_ids,
        kind=kind,
        fingerprint=digest.hexdigest()[:32],
    )
