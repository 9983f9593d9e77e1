"""``Grammar ∧ Monitor ∧ …``: monitors composed with a constraint behind the Matcher seam.

:class:`MonitoredConstraint` wraps a compiled constraint (or none: monitors alone) and
a list of monitors; its matcher allows a token only when the constraint and every
monitor allow it. Samplers see an ordinary :class:`plugin.matcher.Matcher`, so every
sampler works with monitors; AWRS only calls ``accepts``, which walks the token's bytes
and asks a monitor only where an identifier starts (answers are cached per text).

History is a linked list of immutable nodes (text so far, each monitor's identifier in
progress), so ``fork`` is O(1) and ``rollback`` O(n), like the grammar matcher.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from monitors.base import Monitor
from monitors.restriction import Restriction, is_ident_byte, starts_identifier
from monitors.token_index import IdentifierIndex, identifier_index
from plugin.errors import ConstraintViolation, OptionError
from plugin.matcher import CompiledConstraint, Layout, Matcher
from plugin.vocabulary import Vocabulary


@dataclass(frozen=True)
class Active:
    """An identifier in progress under ``restriction``; ``partial`` is what is typed so far."""

    restriction: Restriction
    partial: bytes


@dataclass(eq=False)
class _Node:
    parent: _Node | None
    token: int
    depth: int
    text: bytes
    active: tuple[Active | None, ...]
    masks: dict[int, np.ndarray] = field(default_factory=dict)


def walk(monitor: Monitor, text: bytes, active: Active | None, data: bytes) -> tuple[bool, Active | None]:
    """Feed ``data`` after ``text`` to one monitor: (allowed, identifier in progress after)."""
    for i, b in enumerate(data):
        if active is not None:
            if is_ident_byte(b):
                partial = active.partial + data[i : i + 1]
                if not active.restriction.prefix_ok(partial):
                    return False, None
                active = Active(active.restriction, partial)
                continue
            if not active.restriction.complete_ok(active.partial, b):
                return False, None
            active = None
        gated, starts = b in monitor.gated, starts_identifier(b)
        if not (gated or starts):
            continue
        before = text + data[:i]
        inside_word = bool(before) and is_ident_byte(before[-1])
        if gated and not (inside_word and is_ident_byte(b)) and b in monitor.refused(before):
            return False, None  # (a digit inside `x1` is not an argument's start)
        if starts:
            if inside_word:
                continue  # inside an identifier or number that started unrestricted
            r = monitor.restriction(before)
            if r is not None:
                if not r.prefix_ok(data[i : i + 1]):
                    return False, None
                active = Active(r, data[i : i + 1])
    return True, active


class MonitoredConstraint:
    """A compiled constraint (or None) intersected with monitors; see module docstring."""

    def __init__(self, inner: CompiledConstraint | None, monitors: Sequence[Monitor], vocab: Vocabulary):
        if not monitors:
            raise OptionError("MonitoredConstraint needs at least one monitor")
        self.inner = inner
        self.monitors = list(monitors)
        self.vocab = vocab
        self.index = identifier_index(vocab)

    def matcher(self) -> MonitoredMatcher:
        inner = self.inner.matcher() if self.inner is not None else None
        return MonitoredMatcher(self, inner, _Node(None, -1, 0, b"", tuple(None for _ in self.monitors)))

    def matcher_after(self, prefix: str | bytes) -> MonitoredMatcher:
        """Completion mode: the constraint and the monitors have seen ``prefix``.

        If the prefix ends inside an identifier at a trigger (``obj.na``), that
        identifier goes on under the monitor's restriction; if what the user typed is
        already illegal, it is left unrestricted (the user's text is never refused).
        """
        data = prefix.encode() if isinstance(prefix, str) else prefix
        inner = None
        if self.inner is not None:
            if not hasattr(self.inner, "matcher_after"):
                raise OptionError(f"prefix= is not supported by {type(self.inner).__name__} constraints")
            inner = self.inner.matcher_after(data)
        start = len(data)
        while start > 0 and is_ident_byte(data[start - 1]):
            start -= 1
        actives: list[Active | None] = []
        for monitor in self.monitors:
            found = None
            if start < len(data) and starts_identifier(data[start]):
                r = monitor.restriction(data[:start])
                if r is not None and r.prefix_ok(data[start:]):
                    found = Active(r, data[start:])
            actives.append(found)
        return MonitoredMatcher(self, inner, _Node(None, -1, 0, data, tuple(actives)))

    def stats(self) -> dict[str, Any]:
        """Each monitor's :class:`monitors.base.MonitorStats`, by monitor name."""
        return {m.name: m.stats.to_dict() for m in self.monitors}


class MonitoredMatcher(Matcher):
    """Per-sequence state of a :class:`MonitoredConstraint`."""

    def __init__(self, owner: MonitoredConstraint, inner: Matcher | None, node: _Node) -> None:
        self._owner = owner
        self._inner = inner
        self._node = node
        self._finished = False
        self.vocab = owner.vocab

    # -- the monitors' side -------------------------------------------------------
    def _step(self, token_id: int) -> tuple[Active | None, ...] | None:
        data = self.vocab.token_bytes[token_id]
        node = self._node
        out: list[Active | None] = []
        for monitor, active in zip(self._owner.monitors, node.active, strict=True):
            ok, after = walk(monitor, node.text, active, data)
            if not ok:
                return None
            out.append(after)
        return tuple(out)

    def _monitors_accept_end(self) -> bool:
        node = self._node
        if not all(a is None or a.restriction.complete_ok(a.partial, None) for a in node.active):
            return False
        return all(monitor.accepts_end(node.text) for monitor in self._owner.monitors)

    def _monitor_mask(self, k: int, candidates: np.ndarray) -> np.ndarray:
        node = self._node
        cached = node.masks.get(k)
        if cached is not None:
            return cached
        monitor = self._owner.monitors[k]
        index = self._owner.index
        ok = monitor_mask(index, monitor, node.text, node.active[k], candidates)
        walked = index.complex_ids  # two identifier runs
        if monitor.gated:  # a refused byte after the token's first one
            walked = [*walked, *(t for t in index.gated_inside(monitor.gated) if candidates[t] and ok[t])]
        for tid in walked:
            ok[tid] = walk(monitor, node.text, node.active[k], self.vocab.token_bytes[tid])[0]
        node.masks[k] = ok
        return ok

    # -- the Matcher seam ---------------------------------------------------------
    @property
    def num_advanced(self) -> int:
        return self._node.depth

    def accepts(self, token_id: int) -> bool:
        if self._finished:
            return False
        if token_id in self.vocab.eos_ids:
            return self.is_accepting()
        if token_id in self.vocab.special_ids:
            return False
        if self._inner is not None and not self._inner.accepts(token_id):
            return False
        return self._step(token_id) is not None

    def advance(self, token_id: int) -> None:
        if self._finished:
            raise ConstraintViolation(f"token {token_id} advanced after end of sequence")
        node = self._node
        if token_id in self.vocab.eos_ids:
            if not self.is_accepting():
                raise ConstraintViolation("EOS advanced before the constraint and monitors accept")
            if self._inner is not None:
                self._inner.advance(token_id)
            self._node = _Node(node, token_id, node.depth + 1, node.text, node.active)
            self._finished = True
            return
        after = self._step(token_id) if token_id not in self.vocab.special_ids else None
        if after is None:
            raise ConstraintViolation(
                f"token {token_id} ({self.vocab.token_bytes[token_id]!r}) is refused by a monitor"
            )
        if self._inner is not None:
            self._inner.advance(token_id)
        self._node = _Node(
            node, token_id, node.depth + 1, node.text + self.vocab.token_bytes[token_id], after
        )

    def fill_mask(self, mask: torch.Tensor) -> None:
        if self._finished:
            return
        size = self.vocab.size
        self._fill_constraint(mask)
        allowed = mask[:size].cpu().numpy().copy()
        for k in range(len(self._owner.monitors)):
            allowed &= self._monitor_mask(k, allowed)
        mask[:size] = torch.from_numpy(allowed).to(mask.device)
        self._fill_end(mask)

    def fill_candidates(self, mask: torch.Tensor, *, greedy: bool = False) -> bool:
        """The constraint's mask (or its own candidates, :meth:`accepts` checks it too),
        the monitors left to :meth:`accepts` on the token a sampler picks: a full
        monitor mask asks the analyser about the text after every group of tokens the
        grammar allows (``().``, ``_(``, `` (`` …), and those jedi calls, for texts the
        output almost never takes, were most of a monitored step's time (p50 158 ms)."""
        if self._finished:
            return False
        self._fill_constraint(mask, greedy=greedy)
        self._fill_end(mask)
        return True

    def _fill_constraint(self, mask: torch.Tensor, *, greedy: bool | None = None) -> None:
        """The inner constraint's mask, or with ``greedy`` given its candidates (every
        text token without one)."""
        if self._inner is not None and greedy is not None:
            self._inner.fill_candidates(mask, greedy=greedy)
        elif self._inner is not None:
            self._inner.fill_mask(mask)
        else:
            mask[: self.vocab.size] = True
            mask[list(self.vocab.special_ids)] = False

    def _fill_end(self, mask: torch.Tensor) -> None:
        """End-of-sequence where the constraint and the monitors accept the end."""
        eos = list(self.vocab.eos_ids)
        if eos:
            mask[eos] = self.is_accepting()

    def forced_bytes(self, layout: Layout | None = None) -> bytes:
        """The constraint's forced bytes (a monitor may still refuse a spelling of them:
        drafts are checked token by token)."""
        return b"" if self._inner is None or self._finished else self._inner.forced_bytes(layout)

    def forced_tokens(self) -> list[int]:
        """The constraint's forced tokens, up to the first one a monitor refuses."""
        if self._inner is None or self._finished:
            return []
        out: list[int] = []
        probe = self.fork()
        for tok in self._inner.forced_tokens():
            if not probe.accepts(tok):
                break
            probe.advance(tok)
            out.append(tok)
        return out

    def fork(self) -> MonitoredMatcher:
        inner = self._inner.fork() if self._inner is not None else None
        twin = MonitoredMatcher(self._owner, inner, self._node)
        twin._finished = self._finished
        return twin

    def rollback(self, n: int) -> None:
        if n < 0 or n > self._node.depth:
            raise ValueError(f"cannot roll back {n} tokens; {self._node.depth} were advanced")
        if self._inner is not None:
            self._inner.rollback(n)
        node = self._node
        for _ in range(n):
            node = node.parent  # type: ignore[assignment]
        self._node = node
        if n:
            self._finished = False

    def text(self) -> bytes:
        """The bytes seen so far (prefix included, EOS excluded)."""
        return self._node.text

    def is_accepting(self) -> bool:
        if self._finished:
            return True
        inner_ok = self._inner.is_accepting() if self._inner is not None else True
        return inner_ok and self._monitors_accept_end()

    def is_finished(self) -> bool:
        if self._finished:
            return True
        return self._inner is not None and self._inner.is_finished() and self._monitors_accept_end()

    def restrict_to_budget(self, mask: torch.Tensor, remaining: int) -> bool:
        return self._inner is not None and self._inner.restrict_to_budget(mask, remaining)

    def budget_refuses(self, token_id: int, remaining: int) -> bool:
        return self._inner is not None and self._inner.budget_refuses(token_id, remaining)

    def budget_window(self) -> int:
        return self._inner.budget_window() if self._inner is not None else 0


def monitor_mask(
    index: IdentifierIndex, monitor: Monitor, text: bytes, active: Active | None, candidates: np.ndarray
) -> np.ndarray:
    """Which tokens ``monitor`` allows after ``text``.

    Tokens with two identifier runs, or with a gated byte after their first, are left
    allowed here; the caller walks them. Groups of tokens none of which is in
    ``candidates`` (what the grammar allows) are not analysed: their answer is unused."""
    ok = np.ones(index.size, dtype=bool)
    keep: list[Any] = []
    drop: list[Any] = []
    for first in monitor.refused(text):
        if first in index.first_byte:
            drop.append(index.first_byte[first])
    if active is not None:
        r, partial = active.restriction, active.partial
        ok[index.continuing] = False  # tokens starting with identifier bytes extend `partial`
        keep.extend(index.allowed_heads(b"", r, partial))
        drop.extend(index.excluded_heads(b"", r, partial))
        for first, ids in index.first_byte.items():  # tokens whose first byte ends it
            if not r.complete_ok(partial, first):
                ok[ids] = False
    for pre, starting in index.starts.items():
        if not pre:
            if active is not None or (text and is_ident_byte(text[-1])):
                continue  # the token continues an identifier (or number) already there
        elif active is not None and not active.restriction.complete_ok(active.partial, pre[0]):
            continue  # refused above: its first byte cannot end the identifier
        if not candidates[starting].any():
            continue
        r2 = monitor.restriction(text + pre)
        if r2 is None:
            continue
        ok[starting] = False
        keep.extend(index.allowed_heads(pre, r2, b""))
        drop.extend(index.excluded_heads(pre, r2, b""))
    for ids in keep:
        if len(ids):
            ok[ids] = True
    for ids in drop:
        ok[ids] = False
    return ok
