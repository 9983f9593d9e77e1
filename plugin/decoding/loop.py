"""The decode loop: owns the model forward and its KV cache.

One prefill over the prompt, then one forward per sampled token. When the constraint
leaves no choice (``forced_tokens``), every forced token is appended and the model
reads them all in a single forward (jump-forward): masked sampling would have picked
them with probability 1, so the output distribution is unchanged and the model runs
fewer, wider steps. Near the end of the budget, matchers that can bound their distance
to acceptance (``restrict_to_budget``) drop tokens after which the output could no
longer finish, so a constrained output ends valid rather than cut off. The loop ends
when the model picks EOS (allowed only where the matcher accepts), when the constraint
allows nothing but EOS, or when tokens run out.

With ``speculative=`` (:mod:`plugin.speculation`) each forward also scores a draft of
the tokens that follow, and every draft position is decided by the same
:class:`_Chooser` as a plain step: the draft changes how many positions a forward
covers, never what is chosen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from plugin.errors import OptionError
from plugin.kv.cache import CachedPrefix, extend, keep_path, score
from plugin.matcher import Matcher
from plugin.samplers.asap import ASApTrie
from plugin.samplers.awrs import awrs_step
from plugin.samplers.sampling import SamplingParams, apply_repetition_penalty, choose_token, filter_logits
from plugin.speculation.config import SpeculativeConfig
from plugin.speculation.speculator import Speculator, Spelling
from plugin.speculation.tree import DraftTree
from plugin.vocabulary import Vocabulary

FINISH_STOP = "stop"  # the model ended where the constraint accepts, or nothing else was allowed
FINISH_LENGTH = "length"  # max_new_tokens ran out first
FINISH_DEAD_END = "dead_end"  # the constraint allowed no token at all (a grammar bug, reported)
FINISH_CANCELLED = "cancelled"  # should_stop() asked to stop
_BUDGET_REDRAWS = 8  # far tokens cleared one by one before the whole mask is restricted


@dataclass
class DecodeResult:
    """What the loop produced, EOS excluded from ``token_ids``."""

    token_ids: list[int]
    finish_reason: str
    stats: dict[str, Any]
    step_constraint_us: list[float] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank; NaN when empty."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def stop_token_ids(model: Any, vocab: Vocabulary) -> frozenset[int]:
    """EOS ids of the tokenizer plus those of the model's generation config."""
    ids = set(vocab.eos_ids)
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.add(config_eos)
    elif config_eos:
        ids.update(config_eos)
    return frozenset(ids)


class _Model:
    """The model plus its KV cache, fed incrementally; the cache may start with a cached
    prefix of the prompt (an edit session's), which is read and never written."""

    def __init__(self, model: Any, prompt_cache: CachedPrefix | None = None) -> None:
        from transformers import DynamicCache

        self.model = model
        self.device = next(model.parameters()).device
        self.cache = prompt_cache.cache() if prompt_cache is not None else DynamicCache()
        self.cached = len(prompt_cache.ids) if prompt_cache is not None else 0
        self.length = self.cached  # positions the cache holds
        self.seconds = 0.0

    def feed(self, token_ids: list[int]) -> torch.Tensor:
        """Append ``token_ids`` to the context; return float32 logits for the next token."""
        start = time.perf_counter()
        logits = extend(self.model, self.cache, token_ids)
        self.length += len(token_ids)
        self.seconds += time.perf_counter() - start
        return logits

    def verify(self, token_ids: list[int], draft: DraftTree) -> torch.Tensor:
        """Append ``token_ids`` and score ``draft`` after them in one forward: logits after
        the last of ``token_ids`` (row 0) and after each draft node (row ``1 + i``)."""
        if not draft:
            return self.feed(token_ids)[None]
        start = time.perf_counter()
        n = len(token_ids)
        parents = None
        if not draft.is_chain():
            parents = [i - 1 for i in range(n)] + [p + n if p >= 0 else n - 1 for p in draft.parents]
        rows = score(self.model, self.cache, token_ids + draft.tokens, len(draft) + 1, parents)
        self.length += n
        self.seconds += time.perf_counter() - start
        return rows

    def keep(self, path: list[int]) -> None:
        """Keep the draft nodes of ``path`` (accepted) in the cache, drop the rest."""
        keep_path(self.cache, self.length, path)
        self.length += len(path)


class _Chooser:
    """Decides the token(s) at one position exactly as non-speculative decoding would,
    and advances the matcher over them: forced runs (jump-forward), AWRS, the full mask
    with the budget restriction, ASAp, or plain sampling. A speculative verification
    asks it once per draft position, so drafts never change what is chosen."""

    def __init__(
        self,
        vocab: Vocabulary,
        matcher: Matcher | None,
        params: SamplingParams,
        generator: torch.Generator,
        device: torch.device,
        width: int,
        *,
        jump_forward: bool,
        finish_within_budget: bool,
        awrs: bool,
        asap: ASApTrie | None,
    ) -> None:
        self.vocab, self.matcher, self.params, self.generator = vocab, matcher, params, generator
        self.mask = torch.zeros(width, dtype=torch.bool, device=device)
        self.jump_forward, self.finish_within_budget = jump_forward, finish_within_budget
        self.awrs, self.asap = awrs, asap
        # Unchecked candidates (Matcher.fill_candidates) are exact when a pick is redrawn
        # from the rest after a refusal: greedy and plain temperature sampling, not
        # top-k/top-p (their cut depends on the refused tokens) nor ASAp's weights.
        self.lazy = asap is None and (params.greedy or (params.top_k == 0 and params.top_p == 1.0))
        self.unchecked = False  # the mask holds candidates not yet checked
        self.check_seconds = 0.0  # this step's accepts checks of unchecked candidates
        self.node = asap.root if asap is not None else None
        self.path = [self.node]
        self.step_us: list[float] = []
        self.checks = 0
        self.forced = 0
        self.budget_steps = 0
        self.log_weight = 0.0
        self.fallbacks = 0
        self.awrs_checks: list[int] = []

    def choose(
        self, logits: torch.Tensor, previous: list[int], remaining: int, *, single: bool
    ) -> list[int] | str:
        """The next token (or forced run, unless ``single``) after ``previous`` with
        ``remaining`` tokens of budget left, the matcher advanced over it; or a finish
        reason when the constraint ends the output here."""
        t0 = time.perf_counter()
        matcher, params = self.matcher, self.params
        token = None
        self.check_seconds = 0.0
        penalised = False  # the repetition penalty is applied to ``logits`` once
        if matcher is not None:
            if self.asap is None and matcher.is_finished():
                self.step_us.append((time.perf_counter() - t0) * 1e6)
                return FINISH_STOP
            forced = matcher.forced_tokens()[:remaining] if self.jump_forward else []
            if forced:
                forced = forced[:1] if single else forced
                for tok in forced:
                    matcher.advance(tok)
                self.step_us.append((time.perf_counter() - t0) * 1e6)
                self.forced += len(forced)
                return forced
            if self.awrs:
                logits = apply_repetition_penalty(logits, previous, params.repetition_penalty)
                penalised = True
                step = awrs_step(
                    logits if params.greedy else filter_logits(logits, params),
                    matcher,
                    greedy=params.greedy,
                    generator=self.generator,
                )
                token = step.token
                self.checks += step.checks
                self.awrs_checks.append(step.checks)
                self.fallbacks += step.fell_back
                self.log_weight += step.log_weight
            else:
                mask = self.mask
                mask.zero_()
                if self.lazy:
                    self.unchecked = matcher.fill_candidates(mask, greedy=self.params.greedy)
                else:
                    matcher.fill_mask(mask)
                self.checks += self.vocab.size
                if self.asap is not None and self.finish_within_budget:
                    self.budget_steps += matcher.restrict_to_budget(mask, remaining)
                if not bool(mask.any()):
                    self.step_us.append((time.perf_counter() - t0) * 1e6)
                    return FINISH_DEAD_END
        t_constraint = time.perf_counter() - t0
        if not penalised:
            logits = apply_repetition_penalty(logits, previous, params.repetition_penalty)
        if token is None:  # not already chosen by AWRS
            if self.asap is not None:
                token, self.node = self.asap.sample(self.node, logits, self.mask, params, self.generator)
                self.path.append(self.node)
            elif matcher is None:
                token = choose_token(logits, None, params, self.generator)
            else:
                drawn = self._draw(logits)
                if drawn is None:  # every candidate was refused: nothing is allowed
                    self.step_us.append((t_constraint + self.check_seconds) * 1e6)
                    return FINISH_DEAD_END
                token = drawn
        checked = self.check_seconds  # _within_budget's own draw is timed below
        t1 = time.perf_counter()
        if matcher is not None:
            if self.asap is None and self.finish_within_budget and matcher.budget_refuses(token, remaining):
                token = self._within_budget(token, logits, remaining)
            matcher.advance(token)
        self.step_us.append((t_constraint + checked + time.perf_counter() - t1) * 1e6)
        return [token]

    def _draw(self, logits: torch.Tensor) -> int | None:
        """A token from ``self.mask``; unchecked candidates are confirmed with
        ``accepts``, a refused one cleared and the draw repeated (None: all refused).
        The checks' time is added to ``check_seconds`` (constraint time; ``choose``
        zeroes it)."""
        mask, matcher = self.mask, self.matcher
        assert matcher is not None
        refused = 0
        while True:
            token = choose_token(logits, mask, self.params, self.generator)
            if not self.unchecked:
                return token
            t0 = time.perf_counter()
            ok = bool(mask[token]) and matcher.accepts(token)
            if not ok:
                mask[token] = False
                refused += 1
                if refused == matcher.candidate_refusals:  # refusing nearly everything
                    self._check_all()
            self.check_seconds += time.perf_counter() - t0
            if ok:
                return token
            if not bool(mask.any()):
                return None

    def _check_all(self) -> None:
        """Turn the mask's unchecked candidates into the full mask, keeping what was
        cleared (refused or far): the full mask costs less than checking thousands of
        refused candidates one by one, and a budget restriction must see what is
        allowed, not every candidate."""
        assert self.matcher is not None
        mask = self.mask
        cleared = ~mask
        mask.zero_()
        self.matcher.fill_mask(mask)
        mask &= ~cleared
        self.unchecked = False

    def _within_budget(self, token: int, logits: torch.Tensor, remaining: int) -> int:
        """The choice again from the tokens the budget leaves (R), when ``token`` (drawn
        from the unrestricted mask) is one the budget's bounds clear.

        Why choose first: the restriction needs the completion bound of every state the
        allowed tokens lead to, a choice only its own, and most steps are far from the
        end of their budget. So the redraw checks one token at a time too: a far token
        is cleared and the draw repeated, and only after :data:`_BUDGET_REDRAWS` of
        them is the whole mask restricted at once. Exact: a draw from a mask that holds
        R, kept when it lies in R and else cleared and repeated, is a draw from R
        (greedy: the argmax of R). When R is empty (the budget cannot be met at all) the
        mask is left alone, as ``restrict_to_budget`` does, and ``token`` is kept."""
        matcher = self.matcher
        assert matcher is not None
        mask = self.mask
        if self.awrs:  # AWRS built no mask
            mask.zero_()
            matcher.fill_mask(mask)
            self.unchecked = False
        mask[token] = False
        for _ in range(_BUDGET_REDRAWS):
            if not bool(mask.any()):
                return token
            drawn = self._draw(logits)
            if drawn is None:
                return token
            if not matcher.budget_refuses(drawn, remaining):
                self.budget_steps += 1
                return drawn
            mask[drawn] = False
        if self.unchecked:
            self._check_all()
        if not bool(mask.any()) or not matcher.restrict_to_budget(mask, remaining):
            return token
        self.budget_steps += 1
        drawn = self._draw(logits)
        return token if drawn is None else drawn


def decode(
    model: Any,
    vocab: Vocabulary,
    prompt_ids: list[int],
    matcher: Matcher | None,
    params: SamplingParams,
    max_new_tokens: int,
    *,
    seed: int | None = None,
    jump_forward: bool = True,
    finish_within_budget: bool = True,
    should_stop: Callable[[], bool] | None = None,
    end_when: Callable[[bytes], bool] | None = None,
    sampler: str = "mask",
    asap_trie: ASApTrie | None = None,
    prompt_cache: CachedPrefix | None = None,
    speculative: SpeculativeConfig | None = None,
    spell: Spelling | None = None,
) -> DecodeResult:
    """Generate up to ``max_new_tokens`` tokens after ``prompt_ids`` under ``matcher``.

    ``sampler``: ``"mask"`` (full mask every step) or ``"awrs"`` (adaptive weighted
    rejection sampling, :mod:`plugin.samplers.awrs`: a few ``accepts`` calls per step; its log
    weights are summed into ``stats["log_weight"]``). With AWRS, jump-forward is off
    (a forced token's probability belongs in the weight), and the steps within the
    matcher's ``budget_window()`` of the end use the mask, so finish-within-budget holds.
    ``"asap"`` (grammar-aligned sampling, :mod:`plugin.samplers.asap`) needs ``asap_trie``: each
    step samples from the allowed tokens weighted by the trie's EFG estimates, every
    token (end-of-sequence included) is sampled, and the trie learns from the result.
    ``prompt_cache``: the KV cache of the first tokens of ``prompt_ids`` (they must match);
    only the rest of the prompt is encoded.

    ``speculative`` (:mod:`plugin.speculation`): each forward also scores a draft of the
    next tokens; the target then decides every draft position with the same chooser as
    without speculation (the matcher, the sampler, the budget), accepts the draft while
    its choice equals the drafted token and keeps its own choice at the first mismatch.
    For drafts that are point masses this is the speculative sampling rule (accept with
    probability ``p(d)``, else sample ``p`` without ``d``), so the output has the
    distribution of non-speculative decoding and greedy output is the same tokens.
    ``spell``: the tokenizer's spelling of text (:func:`plugin.speculation.speculator.
    tokenizer_spelling`), with which the constraint drafter drafts the text it forces.

    ``end_when``: given the output's bytes after each token, True ends the generation
    there (``"stop"``; the token is kept, a forced run whole). Unlike ``should_stop`` (polled between
    forwards, for cancellation) it is checked at every token, drafted ones included:
    no draft runs past the end (a line completion's newline), so speculation never
    scores tokens that would be cut.
    """
    start = time.perf_counter()
    if prompt_cache is not None:
        cached = list(prompt_cache.ids)
        whole = len(cached) == len(prompt_ids) and prompt_cache.next_logits is not None
        if (len(cached) >= len(prompt_ids) and not whole) or prompt_ids[: len(cached)] != cached:
            raise OptionError(
                f"prompt_cache holds {len(cached)} tokens that are not a proper prefix of the "
                f"{len(prompt_ids)}-token prompt (the whole prompt needs next_logits)"
            )
    runner = _Model(model, prompt_cache)
    generator = torch.Generator(device=runner.device)
    generator.manual_seed(seed if seed is not None else int(torch.seed() % 2**63))
    stop_ids = stop_token_ids(model, vocab)
    out: list[int] = []
    finish = FINISH_LENGTH
    if prompt_cache is not None and runner.cached == len(prompt_ids):
        assert prompt_cache.next_logits is not None
        logits = prompt_cache.next_logits.clone()
    else:
        logits = runner.feed(prompt_ids[runner.cached :])
    prefill_seconds = time.perf_counter() - start
    awrs = sampler == "awrs" and matcher is not None
    asap = asap_trie if sampler == "asap" and matcher is not None else None
    if awrs or asap is not None:
        jump_forward = False  # every token's probability must be seen
    chooser = _Chooser(
        vocab,
        matcher,
        params,
        generator,
        runner.device,
        logits.numel(),
        jump_forward=jump_forward,
        finish_within_budget=finish_within_budget,
        awrs=awrs,
        asap=asap,
    )
    speculator = (
        Speculator(
            speculative,
            model,
            logits.numel(),
            stop_ids,
            prompt_ids,
            spell,
            lambda: (runner.cache, runner.length),
        )
        if speculative is not None
        else None
    )
    draft_seconds = 0.0
    written = bytearray()  # the output's bytes, for end_when
    token_bytes = vocab.token_bytes

    def ends(tokens: list[int]) -> bool:
        if end_when is None:
            return False
        written.extend(b"".join(token_bytes[t] for t in tokens))
        return end_when(bytes(written))

    ended = False
    first_token_seconds: float | None = None  # time to first token, prefill included
    pending: list[int] | str | None = None  # decided at the last verification, not yet fed

    while len(out) < max_new_tokens:
        if should_stop is not None and should_stop():
            finish = FINISH_CANCELLED
            break
        emit = (
            pending
            if pending is not None
            else chooser.choose(logits, out, max_new_tokens - len(out), single=False)
        )
        pending = None
        if first_token_seconds is None:
            first_token_seconds = time.perf_counter() - start
        if isinstance(emit, str):
            finish = emit
            break
        if emit[-1] in stop_ids:
            finish = FINISH_STOP
            break
        out.extend(emit)
        if ends(emit):
            finish = FINISH_STOP
            break
        if len(out) >= max_new_tokens:
            break
        if speculator is None:
            logits = runner.feed(emit)
            continue
        t0 = time.perf_counter()
        draft = speculator.draft(
            out,
            matcher,
            max_new_tokens - len(out),
            None
            if end_when is None
            else lambda drafted: end_when(bytes(written) + b"".join(token_bytes[t] for t in drafted)),
        )
        draft_seconds += time.perf_counter() - t0
        rows = runner.verify(emit, draft)
        path: list[int] = []
        node = -1
        while True:
            children = draft.children(node)
            if not children or len(out) >= max_new_tokens:
                break
            choice = chooser.choose(rows[node + 1], out, max_new_tokens - len(out), single=True)
            if isinstance(choice, str) or choice[0] not in children:
                pending = choice  # the target's own choice where the draft went wrong
                break
            node = children[choice[0]]
            path.append(node)
            out.append(choice[0])
            if ends(choice):
                ended = True
                break
        runner.keep(path)
        speculator.observe(draft, path, [*emit, *draft.tokens], rows)
        logits = rows[node + 1]
        if ended:
            finish = FINISH_STOP
            break
        if pending is None and len(out) >= max_new_tokens:
            break

    if asap is not None:
        asap.update(chooser.path, complete=finish == FINISH_STOP)
    if finish == FINISH_LENGTH and matcher is not None and matcher.is_finished():
        finish = FINISH_STOP  # the budget ended exactly where the constraint completes
    seconds = time.perf_counter() - start
    step_us = chooser.step_us
    stats: dict[str, Any] = {
        "tokens": len(out),
        "prompt_tokens": len(prompt_ids),
        "cached_prompt_tokens": runner.cached,
        "seconds": seconds,
        "model_seconds": runner.seconds,
        "prefill_seconds": prefill_seconds,
        "first_token_seconds": first_token_seconds,
        # decoding speed: the prompt's prefill is reported apart
        "tokens_per_second": len(out) / (seconds - prefill_seconds) if seconds > prefill_seconds else 0.0,
        "constraint_seconds": sum(step_us) / 1e6,
        "constraint_checks": chooser.checks,
        "forced_tokens": chooser.forced,
        "budget_restricted_steps": chooser.budget_steps,
        "sampler": sampler,
    }
    if speculator is not None:
        stats["speculative"] = {**speculator.stats(len(out)), "draft_seconds": draft_seconds}
    if awrs:
        stats["log_weight"] = chooser.log_weight
        stats["awrs_fallbacks"] = chooser.fallbacks
        if chooser.awrs_checks:
            checks = [float(c) for c in chooser.awrs_checks]
            stats["checks_per_token_mean"] = sum(checks) / len(checks)
            stats["checks_per_token_p50"] = percentile(checks, 0.5)
            stats["checks_per_token_p99"] = percentile(checks, 0.99)
    if step_us:
        stats["constraint_us_per_step_p50"] = percentile(step_us, 0.5)
        stats["constraint_us_per_step_p99"] = percentile(step_us, 0.99)
    return DecodeResult(out, finish, stats, step_us)
