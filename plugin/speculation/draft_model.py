"""A draft model sharing the target's tokenizer: greedy drafts from a smaller model.

It keeps its own KV cache in step with the accepted context (cut back to the common
prefix before each draft), drafts greedily and unconstrained (the speculator cuts what
the constraint refuses), and reports its own confidence for each token, which the
adaptive stop reads. Greedy drafts are point masses, so the target's check is the
speculative sampling rule with q = 1 for the drafted token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from plugin.errors import OptionError
from plugin.kv.cache import cache_length, extend, keep_path

# Given a drafter's logits for the next position: the token to draft and the drafter's
# probability of it, or None to end the draft (the speculator's pick follows the
# constraint, so a model's draft is not cut at its first refused token).
Pick = Callable[[torch.Tensor], tuple[int, float] | None]


def greedy(logits: torch.Tensor) -> tuple[int, float]:
    """The most likely token and its probability (a pick without a constraint)."""
    probs = torch.softmax(logits.float(), dim=-1)
    best = int(torch.argmax(probs))
    return best, float(probs[best])


def load_draft_model(spec: Any, target: Any, tokenizer: Any) -> Any:
    """The draft model ``spec`` names (a model, a Hugging Face id or a path), checked to
    share the target's vocabulary; on the target's device and dtype."""
    if isinstance(spec, str):
        from plugin.models import load_model, load_tokenizer

        try:
            theirs = load_tokenizer(spec)
        except Exception as exc:  # any load failure is the option's fault
            raise OptionError(f"draft_model={spec!r}: cannot load its tokenizer ({exc})") from None
        if theirs.get_vocab() != tokenizer.get_vocab():
            raise OptionError(f"draft_model={spec!r} has another vocabulary than the target's tokenizer")
        model, _ = load_model(spec)
    else:
        model = spec
    ours = _vocab_size(target)
    theirs_size = _vocab_size(model)
    if theirs_size is None or ours is None or theirs_size != ours:
        raise OptionError(
            f"draft_model has a vocabulary of {theirs_size} ids, the target {ours}: they must share one"
        )
    device = next(target.parameters()).device
    return model.to(device).eval()


def _vocab_size(model: Any) -> int | None:
    embeddings = getattr(model, "get_input_embeddings", lambda: None)()
    return getattr(embeddings, "num_embeddings", None)


class DraftModel:
    name = "draft_model"

    def __init__(self, model: Any) -> None:
        from transformers import DynamicCache

        self.model = model
        self.cache = DynamicCache()
        self.ids: list[int] = []  # what the cache holds
        self.next_logits: torch.Tensor | None = None  # after self.ids

    @torch.inference_mode()
    def propose(
        self, context: Sequence[int], limit: int, pick: Pick = greedy
    ) -> tuple[list[int], list[float]]:
        """Up to ``limit`` tokens after ``context`` as ``pick`` chooses them from the
        draft's logits, and the draft's probability of each."""
        common = 0
        for a, b in zip(self.ids, context, strict=False):
            if a != b:
                break
            common += 1
        if common == len(context) and common == len(self.ids) and self.next_logits is not None:
            logits = self.next_logits
        else:
            common = min(common, len(context) - 1)
            keep_path(self.cache, 0, list(range(common)))
            self.ids = list(context[:common])
            logits = extend(self.model, self.cache, list(context[common:]))
            self.ids = list(context)
        assert cache_length(self.cache) == len(self.ids)
        tokens: list[int] = []
        confidence: list[float] = []
        for _ in range(limit):
            chosen = pick(logits)
            if chosen is None:
                break
            best, p = chosen
            tokens.append(best)
            confidence.append(p)
            if len(tokens) == limit:
                break
            logits = extend(self.model, self.cache, [best])
            self.ids.append(best)
        self.next_logits = logits  # the loop stops before feeding its last token
        return tokens, confidence
