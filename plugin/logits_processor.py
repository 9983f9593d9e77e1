"""A Hugging Face ``LogitsProcessor`` so ``model.generate(...)`` can be constrained too.

Our own decode loop (``constrained_generate``) is faster (jump-forward, no batch
bookkeeping); this adapter is for users who already drive ``model.generate``. It keeps
one matcher per batch row, advances it with the token HF appended since the last call,
and sends every forbidden logit to -inf. EOS is allowed only where the matcher accepts.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from plugin.matcher import CompiledConstraint, Matcher


class StencilLogitsProcessor(LogitsProcessor):
    """Constrain ``model.generate`` with any compiled constraint.

    Use a fresh instance per ``generate`` call: it remembers the prompt length it saw
    first and the matchers of that batch.
    """

    def __init__(self, constraint: CompiledConstraint) -> None:
        self.constraint = constraint
        self.vocab = constraint.vocab
        self._matchers: list[Matcher] | None = None
        self._prompt_len = 0
        self._eos = torch.tensor(sorted(self.vocab.eos_ids), dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch = input_ids.shape[0]
        if self._matchers is None:
            self._matchers = [self.constraint.matcher() for _ in range(batch)]
            self._prompt_len = input_ids.shape[1]
        elif input_ids.shape[1] > self._prompt_len:
            last = input_ids[:, -1].tolist()
            for row, token in enumerate(last):
                matcher = self._matchers[row]
                if matcher.is_finished() and not matcher.accepts(token):
                    continue  # finished row: HF pads it; nothing to track
                matcher.advance(token)
        mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
        for row, matcher in enumerate(self._matchers):
            matcher.fill_mask(mask[row])
            if not bool(mask[row].any()):  # finished rows keep EOS so softmax stays finite
                mask[row, self._eos.to(scores.device)] = True
        return scores.masked_fill(~mask, float("-inf"))

    @property
    def matchers(self) -> list[Matcher]:
        """The per-row matchers (after at least one call)."""
        if self._matchers is None:
            raise RuntimeError("the processor has not been called yet")
        return self._matchers
