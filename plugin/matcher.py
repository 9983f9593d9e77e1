"""The Matcher seam: what every constraint offers every sampler.

A *compiled constraint* is built once per (constraint, vocabulary) and is immutable;
its ``matcher()`` gives the cheap per-sequence state. Samplers only talk to this
interface, so a regex, a JSON Schema, a Lark grammar or a monitor are interchangeable:

* ``accepts(t)`` – may token ``t`` come next? One token, cheap (rejection sampling).
* ``advance(t)`` – consume ``t`` (raises :class:`ConstraintViolation` if not allowed).
* ``fill_mask(mask)`` – set ``mask[t] = True`` for every allowed ``t`` (full masking);
  ``fill_candidates(mask)`` may also set refused tokens whose check is costly, and
  says so: the sampler then confirms its pick with ``accepts``.
* ``forced_tokens()`` – tokens the constraint leaves no choice about (jump-forward);
  ``forced_bytes()`` the text it leaves no choice about (speculative drafts spell it).
* ``fork()`` / ``rollback(n)`` – branch or undo, for SMC, ASAp and speculation.
* ``is_accepting()`` – may the output end here? End-of-sequence is allowed only then.

End-of-sequence is part of the seam: ``accepts(eos)`` is ``is_accepting()``,
``fill_mask`` sets the EOS ids when accepting, and ``advance(eos)`` finishes the
matcher (nothing is allowed after it). Samplers therefore never special-case EOS.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from plugin.vocabulary import Vocabulary

BLANKS = frozenset(b" \t\n\r")


@dataclass
class Layout:
    """How the text so far lays out blanks: ``after[b]`` is the blank that last followed
    byte ``b`` (-1: a non-blank did; absent: ``b`` was never followed), ``last`` the
    text's last byte (-1: none). What :meth:`Matcher.forced_bytes` guesses with at a
    blank-or-not choice; it makes no guess after a byte it has not seen followed."""

    after: dict[int, int] = field(default_factory=dict)
    last: int = -1

    def read(self, data: bytes) -> None:
        """Learn from ``data``, the text's next bytes."""
        prev = self.last
        for b in data:
            if prev >= 0:
                self.after[prev] = b if b in BLANKS else -1
            prev = b
        self.last = prev

    def pick(self, live: Iterable[int], prev: int) -> int | None:
        """The byte to guess among ``live`` after ``prev``: what followed ``prev`` last time
        (the one non-blank, or that blank); None when the choice is not between blanks
        and one other byte, or ``prev`` was never followed."""
        live = list(live)
        others = [b for b in live if b not in BLANKS]
        seen = self.after.get(prev)
        if len(others) != 1 or seen is None:
            return None
        return others[0] if seen == -1 else (seen if seen in live else None)


def next_forced_byte(live: Sequence[int], layout: Layout | None, prev: int) -> int | None:
    """The byte a forced-text walk takes among the ``live`` ones after ``prev`` (any
    sequence: a numpy array is read as it is, on the jump-forward path): the only one,
    or ``layout``'s guess at a blank-or-not choice; None where the walk stops."""
    if len(live) == 1:
        return int(live[0])
    return layout.pick((int(b) for b in live), prev) if layout is not None and len(live) else None


class Matcher(ABC):
    """Per-sequence state of a compiled constraint (see module docstring)."""

    vocab: Vocabulary

    @abstractmethod
    def accepts(self, token_id: int) -> bool:
        """Whether ``token_id`` may come next."""

    @abstractmethod
    def advance(self, token_id: int) -> None:
        """Consume ``token_id``; raise ``ConstraintViolation`` if it is not allowed."""

    @abstractmethod
    def fill_mask(self, mask: torch.Tensor) -> None:
        """Set ``mask[t] = True`` for every allowed token (the caller zeroes it first)."""

    candidate_refusals: int = 32
    """Refused candidates a caller clears one by one before it asks for the full mask
    (:meth:`fill_candidates`); a constraint whose full mask is cheap sets fewer."""

    def fill_candidates(self, mask: torch.Tensor, *, greedy: bool = False) -> bool:
        """Like :meth:`fill_mask`, but the mask may also hold tokens that are refused,
        when deciding them costs more than checking the one a sampler picks (a monitor's
        analysis of text the output will never have). True: some set entries are
        unchecked, so the caller confirms its pick with :meth:`accepts`, clears a
        refused one and picks again (exact for greedy and plain temperature sampling:
        a draw from the renormalised rest is a draw from the allowed set). ``greedy``:
        the caller takes the argmax, whose result does not depend on which refused
        tokens the mask held; a constraint whose candidates depend on its caches (a
        sampled draw would then differ, for the same seed, between a cold and a warm
        process) offers them only then. Default: the full mask, nothing unchecked."""
        self.fill_mask(mask)
        return False

    @abstractmethod
    def forced_tokens(self) -> list[int]:
        """The tokens that must come next whatever is sampled (possibly none)."""

    @abstractmethod
    def fork(self) -> Matcher:
        """An independent copy sharing history; O(1)."""

    @abstractmethod
    def rollback(self, n: int) -> None:
        """Undo the last ``n`` advanced tokens."""

    @abstractmethod
    def is_accepting(self) -> bool:
        """Whether the text so far is a complete member of the constraint's language."""

    @abstractmethod
    def is_finished(self) -> bool:
        """Whether EOS was advanced, or the constraint allows nothing but EOS."""

    def restrict_to_budget(self, mask: torch.Tensor, remaining: int) -> bool:
        """Clear allowed tokens after which acceptance needs more than ``remaining - 1``
        further tokens, so an output can always finish within its token budget.

        Optional capability: the default does nothing and returns False. An
        implementation must never clear every token: when the budget cannot be met it
        leaves the mask as it was and returns False.
        """
        return False

    def budget_refuses(self, token_id: int, remaining: int) -> bool:
        """Whether acceptance after the allowed ``token_id`` needs more than
        ``remaining - 1`` further tokens by the bounds ``restrict_to_budget`` uses: one
        token's check, so a sampler can choose first and restrict only when the choice
        would be cleared (the decode loop does). Default: False (no bounds)."""
        return False

    def forced_bytes(self, layout: Layout | None = None) -> bytes:
        """The bytes every allowed continuation starts with, up to the first choice or a
        point where the output may end. A speculative drafter spells them with the
        tokenizer (``forced_tokens`` only covers the single allowed token; a key name
        in a JSON object is forced text that many token sequences spell). With
        ``layout``, a choice between blanks and one other byte is no stop: the walk
        takes what ``layout`` says the text so far put after the same byte (a guess
        for a draft, never a constraint). Optional capability: default ``b""``."""
        return b""

    def budget_window(self) -> int:
        """Remaining-token counts at or below which ``restrict_to_budget`` may act in the
        current state (0: never). Samplers that skip the full mask (AWRS, SMC) take the
        mask path there."""
        return 0

    @property
    @abstractmethod
    def num_advanced(self) -> int:
        """How many tokens were advanced (EOS included); ``rollback`` goes back from here."""


class CompiledConstraint(Protocol):
    """A constraint bound to one vocabulary; immutable and shareable across threads."""

    vocab: Vocabulary

    def matcher(self) -> Matcher:
        """A fresh matcher at the constraint's start."""
        ...


def new_mask(size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A zeroed boolean mask of ``size`` entries (the shape ``fill_mask`` expects)."""
    return torch.zeros(size, dtype=torch.bool, device=device)
