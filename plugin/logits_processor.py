"""A Hugging Face ``LogitsProcessor`` so ``model.generate(...)`` can be constrained too.

Our own decode loop (``constrained_generate``) is faster (jump-forward, no batch
bookkeeping); this adapter is for users who already drive ``model.generate``. It keeps
one matcher per batch row, brings it to the tokens HF generated so far, and sends
every forbidden logit to -inf. EOS is allowed only where the matcher accepts.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from plugin.errors import OptionError
from plugin.matcher import CompiledConstraint, Matcher


class StencilLogitsProcessor(LogitsProcessor):
    """Constrain ``model.generate`` with any compiled constraint.

    ``prefix``: completion mode, as ``constrained_generate(prefix=...)``: the matchers
    start after that text (usually the end of the prompt). Use a fresh instance per
    ``generate`` call: it remembers the prompt length it saw
    first and the matchers of that batch. Each call brings every row's matcher to the
    tokens ``input_ids`` holds after the prompt (rolling back what is no longer there),
    so assisted generation (``prompt_lookup_num_tokens=``, ``assistant_model=``), which
    scores candidate positions and then drops the rejected ones, stays in step.
    """

    def __init__(self, constraint: CompiledConstraint, prefix: str | None = None) -> None:
        self.constraint = constraint
        self.prefix = prefix
        self.vocab = constraint.vocab
        self._matchers: list[Matcher] | None = None
        self._seen: list[list[tuple[int, bool]]] = []  # per row: (token, advanced?) after the prompt
        self._prompt_len = 0
        self._eos = torch.tensor(sorted(self.vocab.eos_ids), dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch = input_ids.shape[0]
        if self._matchers is None:
            self._matchers = [self._start() for _ in range(batch)]
            self._seen = [[] for _ in range(batch)]
            self._prompt_len = input_ids.shape[1]
        for row, tokens in enumerate(input_ids[:, self._prompt_len :].tolist()):
            self._sync(row, tokens)
        mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
        for row, matcher in enumerate(self._matchers):
            matcher.fill_mask(mask[row])
            if not bool(mask[row].any()):  # finished rows keep EOS so softmax stays finite
                mask[row, self._eos.to(scores.device)] = True
        return scores.masked_fill(~mask, float("-inf"))

    def _start(self) -> Matcher:
        if not self.prefix:
            return self.constraint.matcher()
        if not hasattr(self.constraint, "matcher_after"):
            raise OptionError(
                f"prefix= is supported for grammar= constraints, not {type(self.constraint).__name__}"
            )
        return self.constraint.matcher_after(self.prefix)  # type: ignore[attr-defined]

    def _sync(self, row: int, tokens: list[int]) -> None:
        """Roll ``row``'s matcher back to the common prefix of what it consumed and
        ``tokens``, then advance it over the rest."""
        assert self._matchers is not None
        matcher, seen = self._matchers[row], self._seen[row]
        common = 0
        while common < min(len(seen), len(tokens)) and seen[common][0] == tokens[common]:
            common += 1
        undo = sum(advanced for _, advanced in seen[common:])
        if undo:
            matcher.rollback(undo)
        del seen[common:]
        for token in tokens[common:]:
            if matcher.is_finished() and not matcher.accepts(token):
                seen.append((token, False))  # a finished row: HF pads it; nothing to track
                continue
            matcher.advance(token)
            seen.append((token, True))

    @property
    def matchers(self) -> list[Matcher]:
        """The per-row matchers (after at least one call)."""
        if self._matchers is None:
            raise RuntimeError("the processor has not been called yet")
        return self._matchers
