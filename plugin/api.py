"""The public entry point: ``constrained_generate``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from plugin.decoding import FINISH_STOP, decode
from plugin.errors import ConstraintViolation, OptionError, PromptError
from plugin.matcher import CompiledConstraint
from plugin.samplers.asap import ASApTrie, trie_for
from plugin.samplers.sampling import SamplingParams
from plugin.samplers.smc import smc_decode
from plugin.speculation.config import resolve_speculative
from plugin.speculation.draft_model import load_draft_model
from plugin.speculation.layer_skip import check_skip_layers
from plugin.speculation.speculator import tokenizer_spelling
from plugin.stopping import stop_rule
from plugin.vocabulary import Vocabulary

SAMPLERS = ("mask", "awrs", "smc", "asap")
JSON_GENERATION_WHITESPACE = r"[ ]?"
JSON_GENERATION_EXTRAS = "declared"
_OPTIONS = {
    "repetition_penalty",
    "whitespace",
    "extra_properties",
    "strict",
    "jump_forward",
    "finish_within_budget",
    "constraint",
    "should_stop",
    "end_when",
    "stop",
    "prefix",
    "asap_trie",
    "particles",
    "ess_threshold",
    "monitors",
    "project_root",
    "file_path",
    "database",
    "analysis_timeout",
    "prompt_cache",
    "speculative",
    "draft_model",
}


@dataclass
class Generation:
    """One constrained generation.

    ``finish_reason``: ``"stop"`` (the constraint accepts and the model ended, or the
    constraint allowed nothing more), ``"length"`` (``max_new_tokens`` ran out),
    ``"dead_end"`` (the constraint allowed no token; never an invalid token), or
    ``"cancelled"``. ``valid`` says whether the constraint accepts the whole output
    (without a constraint: whether the model ended by itself).
    """

    text: str
    token_ids: list[int]
    finish_reason: str
    valid: bool
    stats: dict[str, Any] = field(default_factory=dict)
    # sampler="smc": every particle as {"text", "token_ids", "log_weight", "finish_reason",
    # "valid"}; the generation itself is the particle drawn in proportion to the weights
    particles: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_constraint(
    tokenizer: Any,
    *,
    grammar: Any = None,
    json_schema: Any = None,
    regex: str | None = None,
    whitespace: str = JSON_GENERATION_WHITESPACE,
    strict: bool = True,
    extra_properties: str = JSON_GENERATION_EXTRAS,
) -> CompiledConstraint | None:
    """Compile the one constraint named by the keyword given (None when none is)."""
    given = [
        name
        for name, v in (("grammar", grammar), ("json_schema", json_schema), ("regex", regex))
        if v is not None
    ]
    if len(given) > 1:
        raise OptionError(f"give at most one of grammar, json_schema, regex (got {', '.join(given)})")
    if regex is not None:
        from grammars.regex import compile_regex

        return compile_regex(regex, tokenizer)
    if json_schema is not None:
        from grammars.json_schema import compile_json_schema

        return compile_json_schema(
            json_schema, tokenizer, whitespace=whitespace, strict=strict, extra_properties=extra_properties
        )
    if grammar is not None:
        from grammars import compile as compile_grammar

        return compile_grammar(grammar, tokenizer)
    return None


def encode_prompt(tokenizer: Any, prompt: str | list[int], *, chat: bool) -> list[int]:
    """Token ids of ``prompt``, wrapped as a user turn of the chat template if ``chat``;
    a list of token ids is taken as it is."""
    if isinstance(prompt, list | tuple):
        if chat:
            raise PromptError("chat=True needs the prompt as text, not token ids")
        if not prompt or not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            raise PromptError("a prompt given as token ids must be a non-empty list of integers")
        size = len(tokenizer)
        bad = next((t for t in prompt if not 0 <= t < size), None)
        if bad is not None:
            raise PromptError(f"prompt token id {bad} is outside the tokenizer's {size} ids")
        return list(prompt)
    if not isinstance(prompt, str) or not prompt:
        raise PromptError("the prompt is empty")
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise PromptError("chat=True but the tokenizer has no chat template")
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        return list(tokenizer(text, add_special_tokens=False).input_ids)
    return list(tokenizer(prompt).input_ids)


def _context_length(model: Any) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None)


def _generate_smc(
    model: Any,
    vocab: Vocabulary,
    prompt_ids: list[int],
    matcher: Any,
    params: SamplingParams,
    max_new_tokens: int,
    seed: int | None,
    options: dict[str, Any],
) -> Generation:
    if matcher is None:
        raise OptionError("sampler='smc' needs a constraint (grammar=, json_schema= or regex=)")
    for name in ("end_when", "stop"):
        if options.get(name) is not None:
            raise OptionError(f"{name}= is not supported with sampler='smc' (its particles end together)")
    n = options.get("particles", 4)
    ess = options.get("ess_threshold", 0.5)
    if not isinstance(n, int) or n < 1:
        raise OptionError(f"particles must be a positive integer, got {n!r}")
    if not 0 <= ess <= 1:
        raise OptionError(f"ess_threshold must be in [0, 1], got {ess!r}")
    result = smc_decode(
        model, vocab, prompt_ids, matcher, params, max_new_tokens, particles=n, ess_threshold=ess, seed=seed
    )
    views = [
        {
            "text": vocab.decode(p.token_ids).decode("utf-8", errors="replace"),
            "token_ids": p.token_ids,
            "log_weight": p.log_weight,
            "finish_reason": p.finish_reason,
            "valid": p.matcher.is_accepting(),
        }
        for p in result.particles
    ]
    best = views[result.chosen]
    stats = {**result.stats, "sampler": "smc", "tokens": len(best["token_ids"]), "chosen": result.chosen}
    return Generation(best["text"], best["token_ids"], best["finish_reason"], best["valid"], stats, views)


def _asap_trie(
    sampler: str,
    options: dict[str, Any],
    model: Any,
    prompt_ids: list[int],
    constraint: Any,
    matcher: Any,
    params: SamplingParams,
) -> ASApTrie | None:
    """The EFG trie ASAp learns in: ``asap_trie=`` if given, else the process-wide one for
    this (model, prompt, constraint, temperature)."""
    if sampler != "asap":
        return None
    if constraint is None:
        raise OptionError("sampler='asap' needs a constraint (grammar=, json_schema= or regex=)")
    if params.top_p < 1.0 or params.top_k:
        raise OptionError(
            "sampler='asap' samples the model's own distribution: top_p and top_k are not allowed"
        )
    given = options.get("asap_trie")
    if given is not None:
        return given
    start = matcher.text() if hasattr(matcher, "text") else b""
    return trie_for((id(model), tuple(prompt_ids), id(constraint), start, params.temperature))


def constrained_generate(
    model: Any,
    tokenizer: Any,
    prompt: str | list[int],
    *,
    grammar: Any = None,
    json_schema: Any = None,
    regex: str | None = None,
    sampler: str = "mask",
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int | None = None,
    chat: bool = False,
    **options: Any,
) -> Generation:
    """Generate from ``model`` after ``prompt`` so that the output satisfies the constraint.

    Give at most one of ``grammar`` (built-in name, Lark text or path), ``json_schema``
    (dict, JSON text or pydantic model) and ``regex``; with none the generation is
    unconstrained. Options: ``repetition_penalty`` (default 1.0), ``whitespace`` (JSON
    whitespace between tokens: ``"flexible"``, ``"compact"`` or a regex; default one
    optional space, so a small model cannot ramble in blanks), ``strict`` (refuse schema
    keywords we cannot enforce; default True), ``extra_properties`` (``"declared"``, the
    default: objects hold only the properties their schema lists unless it says more may
    come; ``"schema"``: undeclared ones wherever JSON Schema allows them, see
    :func:`grammars.compile_json_schema`), ``jump_forward`` (default True),
    ``finish_within_budget`` (near the end of ``max_new_tokens``, allow only tokens
    after which the constraint can still be completed in time; default True),
    ``constraint`` (an already compiled constraint), ``should_stop`` (a callable polled
    every step, for cancellation), ``end_when`` (a callable given the output's bytes
    after each token: True ends the generation there, ``"stop"``, and no speculative
    draft is scored past it), ``stop`` (where a completion ends by itself:
    ``"line"``, ``"statement"``, ``"block"``, ``"function"`` or stop strings, see
    :mod:`plugin.stopping`; the output is cut there and ``valid`` says whether the
    constraint accepts what is kept; default ``"function"`` for
    ``grammar="python_function"`` and for ``grammar="python"`` with a ``prefix`` whose
    last line is a ``def`` header, else none),
    ``prefix`` (completion mode: text the matcher consumes before generating, usually
    the code before the cursor that the prompt ends with;
    the output then continues it, and ``prefix + text`` is what the constraint
    accepts; a prefix the constraint cannot continue raises ``PromptError``),
    ``asap_trie`` (with ``sampler="asap"``: the :class:`plugin.samplers.asap.ASApTrie` to learn in,
    e.g. one loaded from disk; default: one kept per model, prompt, constraint and
    temperature for the life of the process).

    Samplers: ``"mask"`` (full mask, then sample), ``"awrs"`` (adaptive weighted rejection
    sampling: exact samples of the locally constrained distribution with a few checks
    per token; ``stats["log_weight"]`` is the sum of the unbiased log weights) and
    ``"smc"`` (sequential Monte Carlo over ``particles`` AWRS particles, default 4,
    resampled when the effective sample size drops below ``ess_threshold`` × particles,
    default 0.5; ``Generation.particles`` lists them all with their weights) and
    ``"asap"`` (grammar-aligned: repeated calls converge to the model's distribution
    conditioned on the constraint).

    ``speculative`` (``None``, ``"auto"``, drafter names or a
    :class:`plugin.speculation.SpeculativeConfig`): speculative decoding with the
    ``"mask"`` and ``"awrs"`` samplers; ``draft_model`` (a model, id or path sharing the
    tokenizer) adds a draft model to ``"auto"``. Greedy output is the same tokens as
    without it, sampled output has the same distribution; ``stats["speculative"]``
    reports drafted, accepted and scored tokens per target forward.
    """
    unknown = set(options) - _OPTIONS
    if unknown:
        raise OptionError(f"unknown option(s): {', '.join(sorted(unknown))}")
    if sampler not in SAMPLERS:
        raise OptionError(f"unknown sampler {sampler!r}; available: {', '.join(SAMPLERS)}")
    for option, owner in (("particles", "smc"), ("ess_threshold", "smc"), ("asap_trie", "asap")):
        if option in options and sampler != owner:
            raise OptionError(f"{option}= is an option of sampler={owner!r}, not of sampler={sampler!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise OptionError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    params = SamplingParams(temperature, top_p, top_k, options.get("repetition_penalty", 1.0))
    speculative = resolve_speculative(options.get("speculative"), draft_model=options.get("draft_model"))
    if speculative is not None and sampler not in ("mask", "awrs"):
        raise OptionError(
            f"speculative= works with sampler='mask' or 'awrs', not sampler={sampler!r} "
            "(its particles or its trie need every token sampled one at a time)"
        )
    if speculative is not None and "layer_skip" in speculative.drafters:
        check_skip_layers(model, speculative.skip_layers)
    if speculative is not None and speculative.draft_model is not None:
        speculative = replace(
            speculative, draft_model=load_draft_model(speculative.draft_model, model, tokenizer)
        )

    constraint = options.get("constraint")
    if constraint is None:
        constraint = build_constraint(
            tokenizer,
            grammar=grammar,
            json_schema=json_schema,
            regex=regex,
            whitespace=options.get("whitespace", JSON_GENERATION_WHITESPACE),
            strict=options.get("strict", True),
            extra_properties=options.get("extra_properties", JSON_GENERATION_EXTRAS),
        )
    elif any(v is not None for v in (grammar, json_schema, regex)):
        raise OptionError("give either constraint= or grammar/json_schema/regex, not both")
    vocab = constraint.vocab if constraint is not None else Vocabulary.from_tokenizer(tokenizer)
    prefix = options.get("prefix")
    from monitors.matcher import MonitoredConstraint  # monitors import plugin: not at the top

    if any(options.get(k) is not None for k in ("monitors", "database")):
        from monitors import build_monitors, with_monitors

        monitors = build_monitors(
            options.get("monitors"),
            project_root=options.get("project_root"),
            file_path=options.get("file_path"),
            prefix=prefix,
            database=options.get("database"),
            timeout=options.get("analysis_timeout", 5.0),
        )
        constraint = with_monitors(constraint, monitors, vocab)
    elif any(options.get(k) is not None for k in ("project_root", "file_path")):
        raise OptionError("project_root= and file_path= are options of monitors='python'")

    prompt_ids = encode_prompt(tokenizer, prompt, chat=chat)
    context = _context_length(model)
    if context is not None and len(prompt_ids) + max_new_tokens > context:
        room = context - len(prompt_ids)
        detail = f"at most {room} new tokens fit" if room > 0 else "the prompt alone does not fit"
        raise PromptError(
            f"prompt has {len(prompt_ids)} tokens and max_new_tokens={max_new_tokens}, but the "
            f"model's context is {context} tokens ({detail})"
        )

    if prefix is not None and constraint is None:
        raise OptionError("prefix= needs a constraint (grammar=, json_schema= or regex=)")
    if prefix is not None and not hasattr(constraint, "matcher_after"):
        raise OptionError(f"prefix= is supported for grammar= constraints, not {type(constraint).__name__}")
    if constraint is None:
        matcher = None
    elif prefix:
        matcher = constraint.matcher_after(prefix)
    else:
        matcher = constraint.matcher()
    if sampler == "smc":
        if options.get("prompt_cache") is not None:
            raise OptionError(
                "prompt_cache= is not supported with sampler='smc' (it encodes the prompt itself)"
            )
        gen = _generate_smc(model, vocab, prompt_ids, matcher, params, max_new_tokens, seed, options)
        if isinstance(constraint, MonitoredConstraint):
            gen.stats["monitors"] = constraint.stats()
        return gen
    # python_function is one function, and a Python completion right after a def line is
    # its body: both end with the function unless stop= says otherwise
    named = grammar if grammar is not None else _builtin_name(options.get("constraint"))
    stop = options.get("stop", "function" if _one_function(named, prefix) else None)
    rule = stop_rule(stop, prefix)
    result = decode(
        model,
        vocab,
        prompt_ids,
        matcher,
        params,
        max_new_tokens,
        seed=seed,
        jump_forward=options.get("jump_forward", True),
        finish_within_budget=options.get("finish_within_budget", True),
        should_stop=options.get("should_stop"),
        end_when=_either(options.get("end_when"), rule.end_when() if rule is not None else None),
        sampler=sampler,
        asap_trie=_asap_trie(sampler, options, model, prompt_ids, constraint, matcher, params),
        prompt_cache=options.get("prompt_cache"),
        speculative=speculative,
        spell=tokenizer_spelling(tokenizer) if speculative is not None else None,
    )
    text = vocab.decode(result.token_ids).decode("utf-8", errors="replace")
    valid = matcher.is_accepting() if matcher is not None else result.finish_reason == FINISH_STOP
    stats = result.stats
    cut = rule.cut(text) if rule is not None else None
    if cut is not None:
        text = text[:cut]
        stats["stopped_by"] = stop
        valid = _accepts(constraint, (prefix or "") + text) if constraint is not None else True
    if isinstance(constraint, MonitoredConstraint):
        stats["monitors"] = constraint.stats()
    return Generation(text, result.token_ids, result.finish_reason, valid, stats)


def _builtin_name(constraint: Any) -> str | None:
    """The built-in grammar a compiled ``constraint=`` was made from (its defaults, such
    as ``python_function``'s ``stop="function"``, follow it), else None."""
    from grammars.cfg import CompiledGrammar
    from grammars.lark_compile import BUILTINS

    if isinstance(constraint, CompiledGrammar) and constraint.name in BUILTINS:
        return constraint.name
    return None


def _one_function(grammar: Any, prefix: str | None) -> bool:
    """Whether the output is one function: ``grammar="python_function"``, or the Python
    grammar completing right after a ``def`` line (what ``stop="function"`` ends)."""
    if grammar == "python_function":
        return True
    if grammar != "python" or not prefix:
        return False
    last = next((line for line in reversed(prefix.splitlines()) if line.strip()), "")
    return last.lstrip().startswith(("def ", "async def ")) and last.rstrip().endswith(":")


def _either(
    first: Callable[[bytes], bool] | None, second: Callable[[bytes], bool] | None
) -> Callable[[bytes], bool] | None:
    """One ``end_when`` check out of two (either may be None)."""
    if first is None or second is None:
        return first or second
    return lambda data: first(data) or second(data)


def _accepts(constraint: Any, text: str) -> bool:
    """Whether ``constraint`` accepts ``text`` whole (an output cut by ``stop=``)."""
    try:
        return bool(constraint.matcher_after(text).is_accepting())
    except (PromptError, ConstraintViolation):
        return False
