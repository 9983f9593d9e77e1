"""What a speculative generation may use: :class:`SpeculativeConfig` and its checks.

``constrained_generate(..., speculative=...)`` takes ``None`` (off), ``"auto"`` (every
train-free drafter that applies, plus the draft model when one is given) or a
:class:`SpeculativeConfig`. A wrong value is an :class:`OptionError` naming it, before
anything is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from plugin.errors import OptionError

# The drafters, in the order a draft is assembled: what the constraint forces first,
# then a copy from the context, then a draft model or the target with layers skipped,
# then recycled candidates (a tree). ``layer_skip`` is not in "auto": on the default model
# it does not pay (docs/speculative.md).
DRAFTERS = ("constraint", "lookup", "draft_model", "layer_skip", "recycling")
AUTO_DRAFTERS = ("constraint", "lookup", "recycling")


@dataclass(frozen=True)
class SpeculativeConfig:
    """How to draft and verify.

    ``drafters``: names from :data:`DRAFTERS`. ``max_draft``: most tokens drafted per
    target forward (a tree counts its nodes). ``stop_threshold``: adaptive stopping
    (SpecDec++'s rule with a counted predictor, see :mod:`plugin.speculation.speculator`):
    a node is drafted only while the predicted chance that it is rejected or never
    reached stays below it; 1.0 drafts up to ``max_draft`` always. ``tree_width``:
    candidates per node where a drafter offers alternatives (Token Recycling); 1 drafts
    chains only. ``ngram``: longest suffix of the output the context lookup matches (it
    falls back to shorter ones).
    ``draft_model``: a Hugging Face model (or its id or path) sharing the target's
    tokenizer; needed by the ``"draft_model"`` drafter. ``lookup_ids``: more token ids
    the context lookup may copy from besides the prompt and the output (the language
    server gives the whole document). ``skip_layers``: the decoder layers the
    ``"layer_skip"`` drafter skips; ``None`` chooses them from the context (SWIFT).
    ``fit_cost``: keep, of each draft, the nodes most likely to be kept while the
    expected tokens per forward over the forward's measured cost grows
    (:mod:`plugin.speculation.forward_cost`; the curve is timed once per machine, about
    6 s on the default model on two cores, then read from disk).
    """

    drafters: tuple[str, ...] = AUTO_DRAFTERS
    max_draft: int = 12
    stop_threshold: float = 0.75
    tree_width: int = 3
    ngram: int = 3
    draft_model: Any = None
    lookup_ids: tuple[int, ...] = field(default=(), repr=False)
    skip_layers: tuple[int, ...] | None = None
    fit_cost: bool = True

    def __post_init__(self) -> None:
        drafters = (self.drafters,) if isinstance(self.drafters, str) else tuple(self.drafters)
        object.__setattr__(self, "drafters", drafters)
        unknown = [d for d in drafters if d not in DRAFTERS]
        if unknown:
            raise OptionError(
                f"speculative: unknown drafter(s) {', '.join(map(repr, unknown))}; available: "
                f"{', '.join(DRAFTERS)}"
            )
        if not drafters:
            raise OptionError("speculative: drafters is empty (use speculative=None to turn it off)")
        _check_int("max_draft", self.max_draft, 1, 64)
        _check_int("tree_width", self.tree_width, 1, 8)
        _check_int("ngram", self.ngram, 1, 8)
        if isinstance(self.stop_threshold, bool) or not 0 < self.stop_threshold <= 1:
            raise OptionError(f"speculative: stop_threshold must be in (0, 1], got {self.stop_threshold!r}")
        if "draft_model" in drafters and self.draft_model is None:
            raise OptionError(
                "speculative: the 'draft_model' drafter needs draft_model= (a model, id or path)"
            )
        if not isinstance(self.fit_cost, bool):
            raise OptionError(f"speculative: fit_cost must be True or False, got {self.fit_cost!r}")
        object.__setattr__(self, "lookup_ids", tuple(self.lookup_ids))
        if self.skip_layers is not None:
            layers = tuple(self.skip_layers) if isinstance(self.skip_layers, list | tuple) else None
            if not layers or any(isinstance(i, bool) or not isinstance(i, int) for i in layers):
                raise OptionError(
                    "speculative: skip_layers must be a non-empty list of layer indices, "
                    f"got {self.skip_layers!r}"
                )
            object.__setattr__(self, "skip_layers", layers)


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OptionError(f"speculative: {name} must be an integer in [{low}, {high}], got {value!r}")


def resolve_speculative(value: Any, *, draft_model: Any = None) -> SpeculativeConfig | None:
    """The config ``speculative=`` names: ``None``, ``False`` or ``"off"`` is off;
    ``"auto"``/``True`` the train-free drafters (plus ``draft_model`` when given); a
    config as it is; a drafter name, names joined by commas (the CLI's and the language
    server's spelling), or a list of them."""
    if value is None or value is False or value == "off":
        if draft_model is not None:
            raise OptionError("draft_model= needs speculative= ('auto' or a SpeculativeConfig)")
        return None
    if isinstance(value, SpeculativeConfig):
        if draft_model is not None and value.draft_model is None:
            raise OptionError(
                "give the draft model once: in SpeculativeConfig(draft_model=...) or draft_model="
            )
        return value
    if value is True or value == "auto":
        drafters = AUTO_DRAFTERS if draft_model is None else ("constraint", "lookup", "draft_model")
        return SpeculativeConfig(drafters=drafters, draft_model=draft_model)
    if isinstance(value, str):
        value = [name.strip() for name in value.split(",")]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return SpeculativeConfig(drafters=tuple(value), draft_model=draft_model)
    raise OptionError(
        f"speculative must be None, 'auto', a drafter name or list, or a SpeculativeConfig; got {value!r}"
    )
