"""``EditSession``: one document's tokens and KV cache, kept through edits without re-encoding.

Positional integrity encoding (PIE, He et al., ICLR 2025): an edit replaces old tokens
``[i, j)`` by ``m`` new ones. The cache of tokens before ``i`` is exact and kept; the ``m``
new tokens are encoded at positions ``i .. i+m-1`` (they attend to the kept prefix); every
later token keeps its values and has its cached key re-rotated by ``Δ = m − (j − i)``
(:mod:`plugin.kv.rotary`). No forward runs over the suffix, so an edit costs about what
the edited tokens cost, wherever it is. The suffix's keys and values still reflect the
text they were computed with (the paper accepts this); ``refresh()`` re-encodes for real,
and ``refresh_every`` does it after that many edits. The session knows which cached
positions are *stale* (computed before an edit earlier in the text); before the model
reads at a point, the stale ones among the last ``RECENT_STALE`` positions there are
encoded again, because the next token depends most on the tokens nearest to it
(``stats["tokens_freshened"]``; bench/edit_cache.py measures what it buys). A completion
at the place just edited finds nothing stale there and pays nothing.

The cache holds a *window* of at most ``context_tokens`` document tokens (after the
tokenizer's leading special tokens, which stay at position 0). ``logits(offset)`` and
``generate(offset)`` place the window so that the model sees the ``context_tokens``
tokens before ``offset``; moving it drops tokens at its front (the rest re-rotated back)
or encodes the ones it now needs there (the rest re-rotated forward): a rotation, not a
re-encode.

Where keys cannot be re-rotated exactly (no RoPE, a length-dependent scaling; the
reason is in ``stats["rotation"]``), the tokens after an edit are encoded again instead,
and ``stats["tokens_reencoded_fallback"]`` counts them. A failed update never leaves a
cache that disagrees with the text: the session re-encodes and counts it in
``stats["failed_updates"]``.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import torch

from plugin.errors import OptionError, PromptError
from plugin.kv.cache import CachedPrefix, cache_over, extend, layers_of
from plugin.kv.retokenize import Retokenizer
from plugin.kv.rotary import Rotary, RotaryUnavailable, read_rotary

log = logging.getLogger(__name__)

GENERATION_ROOM = 256  # positions left free for generation when context_tokens is not given
SHORT_TAIL = 32  # tokens after an edit that are encoded again rather than re-rotated
RECENT_STALE = 16  # stale tokens just before a reading point that are encoded again first
REFRESH_EVERY = 4  # default policy, from bench/edit_cache.py's fidelity by edits since refresh


class EditError(OptionError):
    """An edit or offset that does not fit the session's text (the message names it)."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(text: Any, name: str) -> str:
    """``text`` if it is a str of valid Unicode. Offsets are code points, so a UTF-16
    surrogate pair (what an editor counts in) must arrive decoded as one character."""
    if not isinstance(text, str):
        raise EditError(f"{name} must be a str, got {type(text).__name__}")
    found = _SURROGATE.search(text)
    if found is not None:
        raise EditError(
            f"{name} holds a lone surrogate at offset {found.start()} (decode UTF-16 surrogate pairs "
            "into one character; offsets count code points)"
        )
    return text


def check_edit(start: Any, end: Any, new_text: Any, length: int) -> None:
    """An edit ``[start, end) -> new_text`` of a text of ``length`` characters, or EditError."""
    check_offset(start, length, "start")
    check_offset(end, length, "end")
    if end < start:
        raise EditError(f"edit end={end} is before start={start}")
    check_text(new_text, "new_text")


def check_offset(offset: Any, length: int, name: str) -> int:
    """``offset`` if it is a character offset into a text of ``length`` characters."""
    if not isinstance(offset, int) or isinstance(offset, bool):
        raise EditError(f"{name} must be an integer character offset, got {offset!r}")
    if not 0 <= offset <= length:
        raise EditError(f"{name}={offset} is outside the text (0..{length})")
    return offset


def _leading_special(tokenizer: Any) -> list[int]:
    """Special tokens the tokenizer puts before a text (BOS for Llama-2 style tokenizers)."""
    plain = tokenizer("x", add_special_tokens=False).input_ids
    full = tokenizer("x").input_ids
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return list(full[:i])
    return []


class EditSession:
    """One document's token ids and KV cache (see the module docstring).

    ``model``/``tokenizer``: a Hugging Face causal LM and its fast tokenizer.
    ``context_tokens``: at most this many document tokens are cached and shown to the
    model (default: the model's ``max_position_embeddings`` less 256 for generation).
    ``refresh_every``: re-encode in full after this many edits (default 4: with up to 4
    edits since a refresh the next-token argmax agreed with a full re-encode on 44 of 44
    measured edits, with 5–8 on 42 of 44, with more on 34 of 40; docs/edit-cache.md);
    None: never (pure PIE, the fastest).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        text: str,
        *,
        context_tokens: int | None = None,
        refresh_every: int | None = REFRESH_EVERY,
    ) -> None:
        check_text(text, "text")
        limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self._lead = _leading_special(tokenizer)
        if context_tokens is None:
            context_tokens = (limit - GENERATION_ROOM - len(self._lead)) if limit else 4096
        if not isinstance(context_tokens, int) or isinstance(context_tokens, bool) or context_tokens < 1:
            raise OptionError(f"context_tokens must be a positive integer, got {context_tokens!r}")
        if limit is not None and context_tokens + len(self._lead) > limit:
            raise OptionError(
                f"context_tokens={context_tokens} does not fit the model's context of {limit} positions"
            )
        if refresh_every is not None and (not isinstance(refresh_every, int) or refresh_every < 1):
            raise OptionError(f"refresh_every must be a positive integer or None, got {refresh_every!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.context_tokens = context_tokens
        self.refresh_every = refresh_every
        self._retok = Retokenizer(tokenizer)
        self._rotary: Rotary | None
        try:
            self._rotary = read_rotary(model)
            rotation = (
                f"exact: {self._rotary.source}, {'interleaved' if self._rotary.interleaved else 'half-split'}"
            )
        except RotaryUnavailable as exc:
            self._rotary = None
            rotation = f"re-encode: {exc}"
        self._text = text
        self._tokens = self._retok.encode(text)
        self._start = 0  # first document token in the window
        self._cached: list[int] = []  # lead + document tokens of the window
        self._keys: list[torch.Tensor] = []
        self._values: list[torch.Tensor] = []
        self._stale: list[bool] = []  # per cached position: computed before an earlier edit
        self._next_logits: torch.Tensor | None = None  # after all cached tokens, when known
        self.stats: dict[str, Any] = {
            "rotation": rotation,
            "tokens_encoded": 0,
            "tokens_rerotated": 0,
            "tokens_reencoded_fallback": 0,
            "tokens_freshened": 0,
            "edits": 0,
            "edits_since_refresh": 0,
            "refreshes": 0,
            "window_moves": 0,
            "failed_updates": 0,
            "last_edit_seconds": None,
            "edit_seconds_total": 0.0,
        }
        self._encode_window(max(0, len(self._tokens) - context_tokens))

    # ------------------------------------------------------------------ views
    @property
    def text(self) -> str:
        return self._text

    @property
    def token_ids(self) -> list[int]:
        """The document's token ids, as ``tokenizer(text, add_special_tokens=False)`` gives them."""
        return list(self._tokens.ids)

    @property
    def window(self) -> tuple[int, int]:
        """Document tokens ``[start, stop)`` whose keys and values are cached."""
        return self._start, self._start + len(self._cached) - len(self._lead)

    # ------------------------------------------------------------------ model
    @torch.inference_mode()
    def _forward(
        self, keep: int, ids: list[int]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Encode ``ids`` after the first ``keep`` cached positions; the session's tensors
        are not touched. Returns the new keys, values and the last position's logits."""
        cache = cache_over(self._keys, self._values, keep)
        logits = extend(self.model, cache, ids)
        self.stats["tokens_encoded"] += len(ids)
        keys, values = layers_of(cache)
        return keys, values, logits

    def _encode_window(self, start: int) -> None:
        """Encode the window starting at document token ``start`` from nothing."""
        ids = self._lead + self._tokens.ids[start : start + self.context_tokens]
        keys, values, logits = ([], [], None) if not ids else self._forward(0, ids)
        self._start, self._cached, self._keys, self._values = start, ids, keys, values
        self._stale = [False] * len(ids)
        self._next_logits = logits

    def _splice(self, i: int, j: int, new_ids: list[int]) -> None:
        """Cached positions ``[i, j)`` become ``new_ids``; later keys move by the difference.

        A tail of at most ``SHORT_TAIL`` tokens is encoded again with the new tokens
        instead (one forward either way; exact, and it leaves the logits after the
        cache's end known, which a completion at the end of the text then reuses).
        Re-rotated tokens are stale afterwards: what came before them has changed."""
        tail_ids = self._cached[j:]
        delta = len(new_ids) - (j - i)
        reencode = len(tail_ids) <= SHORT_TAIL or (delta != 0 and self._rotary is None)
        encode = new_ids + tail_ids if reencode else new_ids
        if encode:
            keys, values, logits = self._forward(i, encode)
        else:
            keys = [k[:, :, :i] for k in self._keys]
            values = [v[:, :, :i] for v in self._values]
            logits = None
        if reencode:
            self._next_logits = logits
            self._stale = self._stale[:i] + [False] * len(encode)
            if tail_ids and len(tail_ids) > SHORT_TAIL:
                self.stats["tokens_reencoded_fallback"] += len(tail_ids)
        else:  # the tail's keys move by delta; values stay
            tail_k = [k[:, :, j:] for k in self._keys]
            tail_v = [v[:, :, j:] for v in self._values]
            if delta:
                assert self._rotary is not None
                tail_k = [self._rotary.rotate(k, delta) for k in tail_k]
                self.stats["tokens_rerotated"] += len(tail_ids)
            keys = [torch.cat((a, b), dim=-2) for a, b in zip(keys, tail_k, strict=True)]
            values = [torch.cat((a, b), dim=-2) for a, b in zip(values, tail_v, strict=True)]
            self._next_logits = None
            self._stale = self._stale[:i] + [False] * len(new_ids) + [True] * len(tail_ids)
        self._keys, self._values = keys, values
        self._cached = self._cached[:i] + new_ids + tail_ids
        self._crop_tail()

    def _crop_tail(self) -> None:
        keep = len(self._lead) + self.context_tokens
        if len(self._cached) > keep:
            self._next_logits = None
            self._cached = self._cached[:keep]
            self._stale = self._stale[:keep]
            self._keys = [k[:, :, :keep] for k in self._keys]
            self._values = [v[:, :, :keep] for v in self._values]

    # ------------------------------------------------------------------ edits
    def edit(self, start: int, end: int, new_text: str) -> None:
        """Replace characters ``[start, end)`` of the text by ``new_text``."""
        check_edit(start, end, new_text, len(self._text))
        began = time.perf_counter()
        text = self._text[:start] + new_text + self._text[end:]
        splice = self._retok.replace(self._tokens, text, start, end, start + len(new_text))
        saved = (self._start, self._cached, self._keys, self._values, self._stale, self._next_logits)
        try:
            self._apply(splice.first, splice.old_stop, splice.new_ids)
        except Exception as exc:  # the model failed mid-update: never keep a cache that disagrees
            log.warning("edit session: update failed (%s: %s); re-encoding", type(exc).__name__, exc)
            self._start, self._cached, self._keys, self._values, self._stale, self._next_logits = saved
            self.stats["failed_updates"] += 1
            old_tokens, self._tokens = self._tokens, splice.tokens
            try:
                self._encode_window(min(self._start, max(0, len(splice.tokens) - self.context_tokens)))
            except Exception:  # the re-encode failed too: keep the old text with its old cache
                self._tokens = old_tokens
                self._start, self._cached, self._keys, self._values, self._stale, self._next_logits = saved
                raise
        self._text, self._tokens = text, splice.tokens
        seconds = time.perf_counter() - began
        self.stats["edits"] += 1
        self.stats["edits_since_refresh"] += 1
        self.stats["last_edit_seconds"] = seconds
        self.stats["edit_seconds_total"] += seconds
        if self.refresh_every is not None and self.stats["edits_since_refresh"] >= self.refresh_every:
            self.refresh()

    def _apply(self, first: int, old_stop: int, new_ids: list[int]) -> None:
        """Document tokens ``[first, old_stop)`` became ``new_ids``: update the window."""
        lead = len(self._lead)
        start, stop = self.window
        if start > 0 and old_stop <= start:  # all before the window: it only shifts
            self._start += len(new_ids) - (old_stop - first)
            return
        if first > stop or (first == stop and stop - start >= self.context_tokens):
            return  # after the window
        i = lead + max(first, start) - start
        j = lead + min(old_stop, stop) - start
        self._start = min(start, first)  # an edit over the window's front starts it there
        self._splice(i, max(i, j), new_ids)

    def refresh(self) -> None:
        """Re-encode the window in full (the reference the re-rotated cache is measured against)."""
        self._encode_window(self._start)
        self.stats["refreshes"] += 1
        self.stats["edits_since_refresh"] = 0

    # ------------------------------------------------------------------ reading
    def _prompt_tokens(self, offset: int) -> list[int]:
        """Token ids of ``text[:offset]`` (the tail re-tokenized as the tokenizer would)."""
        if offset == len(self._text):
            return list(self._tokens.ids)
        cut = self._retok.replace(self._tokens, self._text[:offset], offset, len(self._text), offset)
        return cut.tokens.ids

    def _place(self, prompt: list[int]) -> None:
        """Move the window so that it starts ``context_tokens`` before the prompt's end and
        holds the document tokens the prompt shares with the text, as far as they fit."""
        lead = len(self._lead)
        want = max(0, len(prompt) - self.context_tokens)
        start, stop = self.window
        if want != start:
            self.stats["window_moves"] += 1
            if want >= stop or start - want >= self.context_tokens:  # no overlap left
                self._encode_window(want)
            elif want > start:
                self._splice(lead, lead + want - start, [])
                self._start = want
            else:
                self._splice(lead, lead, self._tokens.ids[want:start])
                self._start = want
        start, stop = self.window
        room = start + self.context_tokens
        end = min(len(self._tokens), room, len(prompt))
        same = stop
        while same < end and self._tokens.ids[same] == prompt[same]:
            same += 1
        if same > stop:  # the prompt reaches past the cached tokens: cache them too
            self._splice(len(self._cached), len(self._cached), self._tokens.ids[stop:same])

    def _freshen(self, ids: list[int]) -> None:
        """Encode again the stale cached positions among the last ``RECENT_STALE`` that
        ``ids`` (the model's prompt) shares with the cache: the tokens the next one reads
        most. Written back, so the next read there pays nothing."""
        same, limit = 0, min(len(ids), len(self._cached))
        while same < limit and ids[same] == self._cached[same]:
            same += 1
        begin = max(len(self._lead), same - RECENT_STALE)
        stale = [k for k in range(begin, same) if self._stale[k]]
        if stale:
            self._splice(stale[0], same, self._cached[stale[0] : same])
            self.stats["tokens_freshened"] += same - stale[0]

    def _prefix(self, offset: int | None) -> tuple[list[int], int]:
        """The model's prompt for ``text[:offset]`` (lead + window part) and how many of its
        first positions the cache already holds (all but the last, or all when the logits
        after them are known)."""
        offset = len(self._text) if offset is None else check_offset(offset, len(self._text), "offset")
        prompt = self._prompt_tokens(offset)
        self._place(prompt)
        ids = self._lead + prompt[self._start :]
        if not ids:
            raise PromptError("there is no text before offset 0 to condition on (and no BOS token)")
        self._freshen(ids)
        if ids == self._cached and self._next_logits is not None:
            return ids, len(ids)  # the logits after the whole prompt are known
        shared = 0
        limit = min(len(ids) - 1, len(self._cached))
        while shared < limit and ids[shared] == self._cached[shared]:
            shared += 1
        return ids, shared

    @torch.inference_mode()
    def logits(self, offset: int | None = None) -> torch.Tensor:
        """Float32 next-token logits after ``text[:offset]`` (default: the whole text), from
        the kept cache plus the few tokens it does not hold."""
        ids, shared = self._prefix(offset)
        if shared == len(ids):
            assert self._next_logits is not None
            return self._next_logits.clone()
        return extend(self.model, cache_over(self._keys, self._values, shared), ids[shared:])

    def prompt_cache(self, offset: int | None = None) -> tuple[list[int], CachedPrefix]:
        """``(prompt_ids, cache)`` for a generation after ``text[:offset]``: the ids the model
        reads and a :class:`CachedPrefix` of the positions already encoded."""
        ids, shared = self._prefix(offset)
        return ids, CachedPrefix(
            tuple(ids[:shared]),
            tuple(k[:, :, :shared] for k in self._keys),
            tuple(v[:, :, :shared] for v in self._values),
            self._next_logits if shared == len(ids) else None,
        )

    def generate(self, offset: int | None = None, **kwargs: Any) -> Any:
        """:func:`plugin.constrained_generate` after ``text[:offset]`` (any constraint,
        sampler, monitor, ``prefix=``), reusing the cache of the text before it. The
        session's cache is the same afterwards. ``stats["cached_prompt_tokens"]`` says how
        much of the prompt was not encoded."""
        from plugin.api import constrained_generate

        for forbidden in ("prompt", "chat", "prompt_cache"):
            if forbidden in kwargs:
                raise OptionError(f"EditSession.generate builds {forbidden}= itself from the document")
        ids, prefix = self.prompt_cache(offset)
        cache = None if kwargs.get("sampler") == "smc" else prefix  # SMC fans the prompt out itself
        return constrained_generate(self.model, self.tokenizer, ids, prompt_cache=cache, **kwargs)
