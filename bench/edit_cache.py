"""The edit-aware KV cache (``EditSession``, PIE) on real code: latency and fidelity per edit.

Documents are code the project did not write: Python standard-library modules and the
HumanEval/MBPP canonical solutions (``../shared/data/python-problems``; without it, the
stdlib alone), cut at a line boundary to about ``--sizes`` tokens of the default
tokenizer (at most the session's context less a small margin, so the whole document is
cached). Each document gets ``--edits`` random edits of four kinds, split evenly:
``insert_line`` (a copy of another line, re-indented, at a line start), ``delete_line``,
``rename`` (up to three occurrences of an identifier become ``name_x``, one
``session.edit`` call each) and ``literal`` (a number or short string changed). Every
edit's place is drawn uniformly over the document, so prefix reuse is sometimes cheap and
sometimes not. The edits accumulate on one session, as in an editor.

Per edit, the time from the edit to the next-token logits at the document's end for:
``pie`` (``session.edit`` + ``session.logits()``), ``prefix_reuse`` (an independent plain
``DynamicCache`` cropped to the first changed token, the rest re-encoded: what a
prefix-caching server does) and ``full`` (one forward over the whole new text). ``full`` is
also the reference: PIE keeps the suffix's values as they were computed before the edit,
so we measure top-1 agreement and KL(full ‖ pie) of the next-token distribution, exact
match of a greedy 16-token continuation, and the same at a random line end in the first
half of the document; all of it by edits since the last refresh (``--refresh-every``,
default the library's policy; 0 never refreshes: pure PIE).

    .venv/bin/python bench/edit_cache.py [--sizes 1000 4000 8000] [--edits 24] [--refresh-every N]
        [--corpora stdlib problems] [--seed 0] [--threads 2] [--device cpu] [--out DIR]

On two CPU cores, ``--sizes 1000 4000 --edits 16`` takes about 20 minutes for both
corpora; at 8,000 tokens one edit takes about 100 s (a full re-encode alone is 43 s), so
``--sizes 8000 --edits 8`` takes about half an hour. Writes
``bench/results/edit-cache-<device>.json`` and ``.png`` and prints the tables; progress
goes to stderr.
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import io
import itertools
import json
import keyword
import math
import random
import re
import sys
import sysconfig
import time
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from run_meta import model_run_meta  # noqa: E402  (bench/run_meta.py)

from plugin.api import constrained_generate  # noqa: E402
from plugin.decoding import percentile  # noqa: E402
from plugin.kv import CachedPrefix, EditSession  # noqa: E402
from plugin.kv.cache import extend, layers_of  # noqa: E402
from plugin.kv.edit_session import GENERATION_ROOM, REFRESH_EVERY  # noqa: E402
from plugin.models import load_model  # noqa: E402

STDLIB_MODULES = [
    "argparse.py",
    "tarfile.py",
    "configparser.py",
    "logging/__init__.py",
    "textwrap.py",
    "shlex.py",
]
PROBLEMS = REPO.parent / "shared" / "data" / "python-problems"
KINDS = ("insert_line", "delete_line", "rename", "literal")
METHODS = ("pie", "prefix_reuse", "full")
CUT_MARGIN = 36  # tokens left free below context_tokens when cutting (8k model: cut at ≤ 7,900)
GREEDY_TOKENS = 16
BUCKETS = ((0, 0, "0 (just refreshed)"), (1, 4, "1–4"), (5, 8, "5–8"), (9, 16, "9–16"), (17, 10**9, "17+"))
IDENTIFIER = re.compile(r"\b[A-Za-z_][A-Za-z_0-9]{2,}\b")
RESERVED = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist)
WORDS = ("alpha", "value", "name", "data", "item", "error", "path", "mode", "key", "spam")


# ---------------------------------------------------------------------------- documents
def stdlib_source(first: int) -> str:
    """Standard-library modules concatenated, starting at ``STDLIB_MODULES[first]`` (so each
    size reads a different module first and the documents are not prefixes of each other)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    order = STDLIB_MODULES[first % len(STDLIB_MODULES) :] + STDLIB_MODULES[: first % len(STDLIB_MODULES)]
    return "".join((stdlib / name).read_text(encoding="utf-8") + "\n\n" for name in order)


def problems_source() -> str | None:
    """HumanEval prompts with their canonical solutions and MBPP's sanitized solutions,
    alternating (so every size holds both), as one file; None when ``../shared/data`` is absent."""
    human_eval, mbpp = PROBLEMS / "HumanEval.jsonl.gz", PROBLEMS / "sanitized-mbpp.json"
    if not human_eval.exists() or not mbpp.exists():
        return None
    with gzip.open(human_eval, "rt", encoding="utf-8") as f:
        ours = [json.loads(line) for line in f if line.strip()]
    first = [(r["prompt"] + r["canonical_solution"]).rstrip() + "\n" for r in ours]
    second = [r["code"].replace("\r\n", "\n").rstrip() + "\n" for r in json.loads(mbpp.read_text())]
    parts = [part for pair in itertools.zip_longest(first, second) for part in pair if part]
    return "\n\n".join(parts)


def cut_document(tokenizer: Any, source: str, size: int) -> str:
    """The longest line-boundary prefix of ``source`` with at most ``size`` tokens (counted by
    tokenizing the prefix itself: the boundary token may merge differently)."""
    encoded = tokenizer(source, add_special_tokens=False, return_offsets_mapping=True)
    ends = [end for _, end in encoded["offset_mapping"]]
    if len(ends) <= size:
        return source
    limit = ends[size - 1]  # characters that the first `size` tokens cover
    cut = source.rfind("\n", 0, limit) + 1
    while cut > 0:
        if len(tokenizer(source[:cut], add_special_tokens=False).input_ids) <= size:
            return source[:cut]
        cut = source.rfind("\n", 0, cut - 1) + 1
    raise SystemExit(f"no line boundary of the source fits {size} tokens")


def count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False).input_ids)


# ---------------------------------------------------------------------------- edits
@dataclass(frozen=True)
class Edit:
    """One logical edit: ``changes`` are ``(start, end, new_text)`` applied in order (last
    occurrence first, so the offsets of the others stay valid)."""

    kind: str
    changes: list[tuple[int, int, str]]
    position: int  # first changed character

    def apply(self, text: str) -> str:
        for start, end, new in self.changes:
            text = text[:start] + new + text[end:]
        return text


def _nearest(starts: list[int], target: int) -> int:
    """Index of the value in sorted ``starts`` nearest ``target``."""
    i = bisect.bisect_left(starts, target)
    if i == len(starts) or (i > 0 and target - starts[i - 1] <= starts[i] - target):
        i -= 1
    return i


def _lines(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every line (split at ``\\n`` only), the newline included in ``end``."""
    spans, start = [], 0
    for line in text.split("\n"):
        end = min(len(text), start + len(line) + 1)
        if end > start:
            spans.append((start, end))
        start = end
    return spans


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def plan_insert_line(rng: random.Random, text: str, target: int) -> Edit:
    """A copy of another non-blank line, with the indentation of the line it goes before
    (or of the nearest non-blank line above, when that one is blank)."""
    lines = _lines(text)
    at = _nearest([s for s, _ in lines], target)
    body = [text[s:e].strip() for s, e in lines if text[s:e].strip()]
    content = rng.choice(body)
    indent = ""
    for k in range(at, -1, -1):
        line = text[lines[k][0] : lines[k][1]]
        if line.strip():
            indent = _indent(line)
            break
    start = lines[at][0]
    return Edit("insert_line", [(start, start, indent + content + "\n")], start)


def plan_delete_line(rng: random.Random, text: str, target: int) -> Edit:
    lines = _lines(text)
    start, end = lines[_nearest([s for s, _ in lines], target)]
    return Edit("delete_line", [(start, end, "")], start)


def plan_rename(rng: random.Random, text: str, target: int) -> Edit | None:
    """The identifier occurrence nearest ``target`` (a name seen at least twice, not a
    keyword) and its next occurrences, up to three, become ``name_x``."""
    matches = [m for m in IDENTIFIER.finditer(text) if m.group() not in RESERVED]
    counts: dict[str, int] = {}
    for m in matches:
        counts[m.group()] = counts.get(m.group(), 0) + 1
    matches = [m for m in matches if counts[m.group()] >= 2]
    if not matches:
        return None
    chosen = matches[_nearest([m.start() for m in matches], target)]
    occurrences = [m for m in matches if m.group() == chosen.group()]
    k = occurrences.index(chosen)
    picked = occurrences[k : k + 3]
    picked += occurrences[max(0, k - (3 - len(picked))) : k][::-1]
    picked.sort(key=lambda m: m.start(), reverse=True)
    changes = [(m.start(), m.end(), m.group() + "_x") for m in picked]
    return Edit("rename", changes, min(m.start() for m in picked))


def _literal_spans(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, kind)`` of number literals and short one-line plain strings, from
    Python's tokenizer (a document cut inside a construct ends in an error: the tokens
    before it are kept)."""
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]  # readline splits at "\n" only
    spans: list[tuple[int, int, str]] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.start[0] != tok.end[0]:
                continue
            start = line_starts[tok.start[0] - 1] + tok.start[1]
            end = line_starts[tok.end[0] - 1] + tok.end[1]
            if tok.type == tokenize.NUMBER:
                spans.append((start, end, "number"))
            elif (
                tok.type == tokenize.STRING
                and tok.string[0] in "'\""
                and 2 <= len(tok.string) <= 26
                and not tok.string.startswith(("'''", '"""'))
                and "\\" not in tok.string
            ):
                spans.append((start, end, "string"))
    except (tokenize.TokenError, SyntaxError):
        pass
    return spans


def plan_literal(rng: random.Random, text: str, target: int) -> Edit | None:
    """The number or short string literal nearest ``target`` gets another value."""
    spans = _literal_spans(text)
    if not spans:
        spans = [(m.start(), m.end(), "number") for m in re.finditer(r"(?<![\w.])\d+(?![\w.])", text)]
    if not spans:
        return None
    start, end, what = spans[_nearest([s for s, _, _ in spans], target)]
    old = text[start:end]
    if what == "number":
        new = str(int(old) + rng.randint(1, 9)) if old.isdigit() else str(rng.randint(2, 99))
    else:
        quote = old[0]
        new = quote + rng.choice([w for w in WORDS if quote + w + quote != old]) + quote
    return Edit("literal", [(start, end, new)], start)


PLANNERS = {
    "insert_line": plan_insert_line,
    "delete_line": plan_delete_line,
    "rename": plan_rename,
    "literal": plan_literal,
}


def plan_edit(rng: random.Random, text: str, kind: str) -> Edit:
    """An edit of ``kind`` at a place drawn uniformly over ``text`` (a line edit when the
    document offers no identifier or literal to change)."""
    target = rng.randrange(len(text))
    edit = PLANNERS[kind](rng, text, target)
    return edit if edit is not None else plan_insert_line(rng, text, target)


# ---------------------------------------------------------------------------- model side
def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so that perf_counter measures the work, not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PrefixReuse:
    """The baseline: one plain ``DynamicCache`` of the current text; an edit crops it to the
    tokens shared with the new text and re-encodes the rest (exact, like a prefix cache).
    Holds the last ``context_tokens`` tokens, as the session does."""

    def __init__(self, model: Any, tokenizer: Any, text: str, context_tokens: int) -> None:
        from transformers import DynamicCache

        self.model, self.tokenizer, self.context_tokens = model, tokenizer, context_tokens
        self.cache = DynamicCache()
        self.ids: list[int] = []
        self.reencoded = 0
        self.update(text)

    @torch.inference_mode()
    def update(self, text: str) -> torch.Tensor:
        """Make the cache hold ``text``; return the float32 next-token logits after it."""
        ids = self.tokenizer(text, add_special_tokens=False).input_ids[-self.context_tokens :]
        shared, limit = 0, min(len(ids) - 1, len(self.ids))  # the last token is always fed
        while shared < limit and ids[shared] == self.ids[shared]:
            shared += 1
        self.cache.crop(shared - self.cache.get_seq_length())  # negative: tokens to drop
        logits = extend(self.model, self.cache, ids[shared:])  # LM head on the last position only
        self.ids, self.reencoded = ids, len(ids) - shared
        return logits


@torch.inference_mode()
def full_forward(model: Any, ids: list[int], keep_cache: bool) -> tuple[torch.Tensor, Any]:
    """One forward over all of ``ids`` from nothing (chunks of 1,024, LM head on the last
    position only, as the session's own encode): the reference logits (and its cache)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    logits = extend(model, cache, ids)
    return logits, cache if keep_cache else None


def compare(reference: torch.Tensor, other: torch.Tensor) -> tuple[bool, float]:
    """Top-1 agreement and KL(reference ‖ other) of the softmax distributions, in float64."""
    p = torch.log_softmax(reference.double().cpu(), dim=-1)
    q = torch.log_softmax(other.double().cpu(), dim=-1)
    kl = float((p.exp() * (p - q)).sum())
    return bool(reference.argmax() == other.argmax()), max(kl, 0.0)


def greedy_reference(model: Any, tokenizer: Any, ids: list[int], cache: Any) -> list[int]:
    """Plain greedy continuation of ``ids`` on the full re-encode's own cache (exact KV:
    it saves the second prefill of the whole document)."""
    keys, values = layers_of(cache)
    prefix = CachedPrefix(
        tuple(ids[:-1]),
        tuple(k[:, :, : len(ids) - 1] for k in keys),
        tuple(v[:, :, : len(ids) - 1] for v in values),
    )
    gen = constrained_generate(
        model, tokenizer, ids, max_new_tokens=GREEDY_TOKENS, temperature=0.0, prompt_cache=prefix
    )
    return list(gen.token_ids)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# ---------------------------------------------------------------------------- the run
def run_document(
    model: Any,
    tokenizer: Any,
    corpus: str,
    size: int,
    doc: str,
    args: argparse.Namespace,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All edits on one document with one session carried through them."""
    device = next(model.parameters()).device
    rng = random.Random(f"{args.seed}-{corpus}-{size}")
    session = EditSession(model, tokenizer, doc, refresh_every=args.refresh_every or None)
    ctx = session.context_tokens
    baseline = PrefixReuse(model, tokenizer, doc, ctx)
    session.logits()  # warm-up (first-call allocations), untimed
    full_forward(model, baseline.ids, keep_cache=False)
    start_tokens = count_tokens(tokenizer, doc)
    kinds = [KINDS[i % len(KINDS)] for i in range(args.edits)]
    rng.shuffle(kinds)
    text = doc
    rows: list[dict[str, Any]] = []
    for number, kind in enumerate(kinds, 1):
        edit = plan_edit(rng, text, kind)
        fraction = edit.position / len(text)
        text = edit.apply(text)
        before = dict(session.stats)

        synchronize(device)
        t0 = time.perf_counter()
        for start, end, new in edit.changes:
            session.edit(start, end, new)
        pie_logits = session.logits()
        synchronize(device)
        pie_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        ids = tokenizer(text, add_special_tokens=False).input_ids
        window = ids[-ctx:]
        ref_logits, ref_cache = full_forward(model, window, keep_cache=True)
        synchronize(device)
        full_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        prefix_logits = baseline.update(text)
        synchronize(device)
        prefix_s = time.perf_counter() - t0

        top1, kl = compare(ref_logits, pie_logits)
        prefix_top1, prefix_kl = compare(ref_logits, prefix_logits)
        pie_greedy = list(session.generate(max_new_tokens=GREEDY_TOKENS, temperature=0.0).token_ids)
        ref_greedy = greedy_reference(model, tokenizer, window, ref_cache)
        del ref_cache

        line_ends = [m.start() for m in re.finditer(r"[^\n]\n", text) if m.start() + 1 < len(text) // 2]
        mid = (line_ends[rng.randrange(len(line_ends))] + 1) if line_ends else None
        mid_row: dict[str, Any] = {"mid_offset_fraction": None, "mid_top1": None, "mid_kl": None}
        if mid is not None:
            t0 = time.perf_counter()
            mid_pie = session.logits(mid)
            synchronize(device)
            mid_pie_s = time.perf_counter() - t0
            mid_ids = tokenizer(text[:mid], add_special_tokens=False).input_ids[-ctx:]
            mid_top1, mid_kl = compare(full_forward(model, mid_ids, keep_cache=False)[0], mid_pie)
            mid_row = {
                "mid_offset_fraction": mid / len(text),
                "mid_tokens": len(mid_ids),
                "mid_pie_ms": mid_pie_s * 1e3,
                "mid_top1": mid_top1,
                "mid_kl": mid_kl,
            }

        stats = session.stats
        row = {
            "corpus": corpus,
            "size": size,
            "document_tokens": len(ids),
            "edit": number,
            "kind": kind if edit.kind == kind else f"{kind}->{edit.kind}",
            "calls": len(edit.changes),
            "position_fraction": fraction,
            "half": "first" if fraction < 0.5 else "second",
            "changes": [[s, e, new] for s, e, new in edit.changes],
            "pie_ms": pie_s * 1e3,
            "prefix_reuse_ms": prefix_s * 1e3,
            "full_ms": full_s * 1e3,
            "prefix_reuse_reencoded_tokens": baseline.reencoded,
            "pie_tokens_encoded": stats["tokens_encoded"] - before["tokens_encoded"],
            "pie_tokens_rerotated": stats["tokens_rerotated"] - before["tokens_rerotated"],
            "refreshed": stats["refreshes"] > before["refreshes"],
            "edits_since_refresh": stats["edits_since_refresh"],
            "top1": top1,
            "kl": kl,
            "prefix_reuse_top1": prefix_top1,
            "prefix_reuse_kl": prefix_kl,
            "greedy_exact": pie_greedy == ref_greedy,
            "greedy_common_tokens": common_prefix(pie_greedy, ref_greedy),
            "pie_greedy": pie_greedy,
            "full_greedy": ref_greedy,
            "text_matches": session.text == text,
            "token_ids_match": session.token_ids == ids,
            **mid_row,
        }
        rows.append(row)
        print(
            f"[{corpus} {size}] edit {number}/{len(kinds)} {row['kind']} at {fraction:.2f}: "
            f"pie {row['pie_ms']:.0f} ms, prefix {row['prefix_reuse_ms']:.0f} ms "
            f"({baseline.reencoded} tok), full {row['full_ms']:.0f} ms; top-1 {top1}, KL {kl:.2e}, "
            f"greedy {row['greedy_common_tokens']}/{GREEDY_TOKENS}, "
            f"since refresh {row['edits_since_refresh']}"
            + (
                "" if row["text_matches"] and row["token_ids_match"] else "  ** session text/tokens differ **"
            ),
            file=sys.stderr,
            flush=True,
        )
    document = {
        "corpus": corpus,
        "size": size,
        "tokens": start_tokens,
        "characters": len(doc),
        "first_line": doc.splitlines()[0] if doc else "",
        "context_tokens": ctx,
        "session_stats": dict(session.stats),
    }
    return rows, document


# ---------------------------------------------------------------------------- reporting
def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """p50s of the latencies and the fidelity rates of a group of edits."""
    ms = {m: [r[f"{m}_ms"] for r in rows] for m in METHODS}
    mid = [r for r in rows if r["mid_top1"] is not None]
    out: dict[str, Any] = {"edits": len(rows)}
    for m in METHODS:
        out[f"{m}_ms_p50"] = percentile(ms[m], 0.5)
        out[f"{m}_ms_p95"] = percentile(ms[m], 0.95)
    out["full_over_pie"] = out["full_ms_p50"] / out["pie_ms_p50"] if rows else float("nan")
    out["prefix_reuse_over_pie"] = out["prefix_reuse_ms_p50"] / out["pie_ms_p50"] if rows else float("nan")
    out["top1"] = _mean([float(r["top1"]) for r in rows])
    out["kl_mean"] = _mean([r["kl"] for r in rows])
    out["kl_p95"] = percentile([r["kl"] for r in rows], 0.95)
    out["greedy_exact"] = _mean([float(r["greedy_exact"]) for r in rows])
    out["greedy_common_mean"] = _mean([r["greedy_common_tokens"] for r in rows])
    out["mid_top1"] = _mean([float(r["mid_top1"]) for r in mid])
    out["mid_kl_mean"] = _mean([r["mid_kl"] for r in mid])
    out["prefix_reuse_top1"] = _mean([float(r["prefix_reuse_top1"]) for r in rows])
    out["prefix_reuse_kl_mean"] = _mean([r["prefix_reuse_kl"] for r in rows])
    out["document_tokens_mean"] = _mean([r["document_tokens"] for r in rows])
    return out


def bucket_of(since: int) -> str:
    return next(name for low, high, name in BUCKETS if low <= since <= high)


def summaries(rows: list[dict[str, Any]], sizes: list[int], corpora: list[str]) -> dict[str, Any]:
    """Every grouping the tables and the plot show, keyed ``size/kind``, ``size/half``, …"""
    out: dict[str, Any] = {"by_kind": {}, "by_half": {}, "by_bucket": {}, "by_corpus": {}}
    for size in sizes:
        mine = [r for r in rows if r["size"] == size]
        for kind in (*KINDS, "all"):
            group = [r for r in mine if kind == "all" or r["kind"] == kind]
            if group:
                out["by_kind"][f"{size}/{kind}"] = summarize(group)
        for corpus in corpora:
            group = [r for r in mine if r["corpus"] == corpus]
            if group:
                out["by_corpus"][f"{size}/{corpus}"] = summarize(group)
        for half in ("first", "second"):
            group = [r for r in mine if r["half"] == half]
            if group:
                out["by_half"][f"{size}/{half}"] = summarize(group)
    for size in (*sizes, "all"):
        for _, _, name in BUCKETS:
            group = [
                r
                for r in rows
                if (size == "all" or r["size"] == size) and bucket_of(r["edits_since_refresh"]) == name
            ]
            if group:
                out["by_bucket"][f"{size}/{name}"] = summarize(group)
    return out


def _f(value: float, spec: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def print_tables(summary: dict[str, Any], documents: list[dict[str, Any]]) -> None:
    tokens = {
        key.split("/")[0]: round(value["document_tokens_mean"]) for key, value in summary["by_kind"].items()
    }
    print(
        "| tokens | kind | edits | PIE ms p50 | prefix-reuse ms p50 | full ms p50 | full/PIE "
        "| top-1 agree | KL mean | greedy-16 exact |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = list(summary["by_kind"].items())
    rows += [(key.replace("/", "/all (") + ")", value) for key, value in summary["by_corpus"].items()]
    rows.sort(key=lambda kv: (int(kv[0].split("/")[0]), kv[0].split("/")[1].startswith("all")))
    for key, s in rows:
        size, kind = key.split("/", 1)
        print(
            f"| {tokens[size]} | {kind} | {s['edits']} | {_f(s['pie_ms_p50'], '.1f')} "
            f"| {_f(s['prefix_reuse_ms_p50'], '.1f')} | {_f(s['full_ms_p50'], '.0f')} "
            f"| {_f(s['full_over_pie'], '.1f')}× | {_f(s['top1'], '.2f')} | {_f(s['kl_mean'], '.2e')} "
            f"| {_f(s['greedy_exact'], '.2f')} |"
        )
    print("\nWhere the edit is: PIE vs prefix reuse (position as a fraction of the document)\n")
    print(
        "| tokens | half | edits | PIE ms p50 | prefix-reuse ms p50 | prefix/PIE | top-1 agree | KL mean "
        "| prefix-reuse top-1 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for key, s in summary["by_half"].items():
        size, half = key.split("/")
        print(
            f"| {tokens[size]} | {half} | {s['edits']} | {_f(s['pie_ms_p50'], '.1f')} "
            f"| {_f(s['prefix_reuse_ms_p50'], '.1f')} | {_f(s['prefix_reuse_over_pie'], '.1f')}× "
            f"| {_f(s['top1'], '.2f')} | {_f(s['kl_mean'], '.2e')} | {_f(s['prefix_reuse_top1'], '.2f')} |"
        )
    print(
        "\nFidelity by edits since the last refresh (end of document; mid = a line end in the first half)\n"
    )
    print(
        "| tokens | edits since refresh | edits | top-1 agree | KL mean | KL p95 | greedy-16 exact "
        "| greedy common tokens | mid top-1 | mid KL mean |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, s in summary["by_bucket"].items():
        size, bucket = key.split("/")
        print(
            f"| {tokens.get(size, size)} | {bucket} | {s['edits']} | {_f(s['top1'], '.2f')} "
            f"| {_f(s['kl_mean'], '.2e')} | {_f(s['kl_p95'], '.2e')} | {_f(s['greedy_exact'], '.2f')} "
            f"| {_f(s['greedy_common_mean'], '.1f')} | {_f(s['mid_top1'], '.2f')} "
            f"| {_f(s['mid_kl_mean'], '.2e')} |"
        )
    print("\nSession stats at the end of each document\n")
    print(
        "| corpus | tokens | edits | refreshes | tokens encoded | tokens re-rotated | failed updates "
        "| rotation |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for d in documents:
        st = d["session_stats"]
        print(
            f"| {d['corpus']} | {d['tokens']} | {st['edits']} | {st['refreshes']} | {st['tokens_encoded']} "
            f"| {st['tokens_rerotated']} | {st['failed_updates']} | {st['rotation']} |"
        )


def plot(summary: dict[str, Any], sizes: list[int], path: Path, refresh_every: int | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    alls = [summary["by_kind"][f"{size}/all"] for size in sizes if f"{size}/all" in summary["by_kind"]]
    xs = [s["document_tokens_mean"] for s in alls]
    for method, marker, label in (
        ("pie", "o", "PIE (edit session)"),
        ("prefix_reuse", "s", "prefix reuse"),
        ("full", "^", "full re-encode"),
    ):
        left.plot(xs, [s[f"{method}_ms_p50"] for s in alls], marker=marker, label=label)
    left.set_yscale("log")
    left.set_xlabel("document tokens")
    left.set_ylabel("edit → next-token logits, ms (p50)")
    left.set_title("latency after one edit")
    left.legend()
    names = [name for _, _, name in BUCKETS if f"all/{name}" in summary["by_bucket"]]
    groups = [summary["by_bucket"][f"all/{name}"] for name in names]
    positions = list(range(len(names)))
    right.plot(positions, [g["top1"] for g in groups], marker="o", label="top-1 agreement")
    right.plot(positions, [g["greedy_exact"] for g in groups], marker="s", label="greedy-16 exact")
    right.plot(
        positions, [g["mid_top1"] for g in groups], marker="^", linestyle="--", label="mid-document top-1"
    )
    for x, g in zip(positions, groups, strict=True):
        right.annotate(f"n={g['edits']}", (x, 1.08), ha="center", fontsize=8)
    right.set_xticks(positions, names)
    right.set_ylim(0, 1.15)
    right.set_xlabel("edits since the last refresh")
    right.set_ylabel("fraction of edits")
    policy = f"refresh every {refresh_every}" if refresh_every else "never refreshed"
    right.set_title(f"fidelity vs full re-encode ({policy})")
    right.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 8000], help="document tokens")
    ap.add_argument("--edits", type=int, default=24, help="edits per document (split evenly between kinds)")
    ap.add_argument(
        "--refresh-every",
        type=int,
        default=REFRESH_EVERY,
        help=f"EditSession refresh_every (default {REFRESH_EVERY}, the library's; 0: never)",
    )
    ap.add_argument("--corpora", nargs="+", choices=["stdlib", "problems"], default=["stdlib", "problems"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--dtype", default=None, help="model dtype (default: float32 on CPU, bf16/fp16 on CUDA)")
    ap.add_argument("--out", default=None, help="folder for the JSON and PNG (default bench/results)")
    args = ap.parse_args()
    if args.edits < 1:
        ap.error("--edits must be at least 1")
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(device=args.device, dtype=args.dtype)
    device = next(model.parameters()).device
    tag = "cuda" if device.type == "cuda" else "cpu"
    limit = getattr(model.config, "max_position_embeddings", None)
    context_tokens = (limit - GENERATION_ROOM) if limit else 4096
    sources: dict[str, Any] = {"stdlib": stdlib_source}
    if "problems" in args.corpora:
        problems = problems_source()
        if problems is None:
            print(f"edit-cache: {PROBLEMS} is absent: using the standard library only", file=sys.stderr)
        else:
            sources["problems"] = lambda _first: problems
    corpora = [c for c in args.corpora if c in sources] or ["stdlib"]
    rows: list[dict[str, Any]] = []
    documents: list[dict[str, Any]] = []
    began = time.perf_counter()
    for index, size in enumerate(args.sizes):
        cut = min(size, context_tokens - CUT_MARGIN)
        if cut < size:
            print(
                f"edit-cache: size {size} cut at {cut} tokens to fit the session's context", file=sys.stderr
            )
        for corpus in corpora:
            doc = cut_document(tokenizer, sources[corpus](index), cut)
            new_rows, document = run_document(model, tokenizer, corpus, size, doc, args)
            rows += new_rows
            documents.append(document)
    summary = summaries(rows, args.sizes, corpora)
    print_tables(summary, documents)
    folder = Path(args.out) if args.out else REPO / "bench" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"edit-cache-{tag}.json"
    meta = {
        **model_run_meta("edit_cache", model, device),
        "context_tokens": context_tokens,
        "corpora": corpora,
        "arguments": vars(args),
        "seconds": time.perf_counter() - began,
    }
    payload = {"meta": meta, "documents": documents, "summary": summary, "rows": rows}
    out.write_text(json.dumps(payload, indent=2))
    plot(summary, args.sizes, out.with_suffix(".png"), args.refresh_every)
    print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
