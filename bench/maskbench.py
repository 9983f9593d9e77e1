"""MaskBench: JSON Schema coverage, correctness and mask speed, Stencil vs the peers.

The protocol of MaskBench (github.com/guidance-ai/jsonschemabench), on the files in
``../shared/data/maskbench/`` (each: a ``schema`` and ``tests`` with valid and invalid
instances). Every instance is serialized with ``json.dumps(data)`` and tokenized with the
Llama-3 128k tokenizer. Per engine and schema: compile the schema and compute the first
mask (time to first mask, TTFM); then for each instance walk its tokens, computing the
full mask before each token (time between masks, TBM) and checking the token is allowed.
A valid instance must be accepted to the end (and the end accepted); an invalid one must
be refused at some token or not end accepting. A schema *passes* when all its instances
are judged right; an *invalidation error* is an invalid instance accepted (the engine
would let a model emit JSON the schema rejects).

Engines, each in its own worker process (a schema that runs past ``--timeout`` kills the
worker and counts as not compiled): ``stencil`` (``grammars.compile_json_schema``),
``llguidance``, ``xgrammar`` and ``outlines-core`` (its own schema-to-regex, as outlines
uses it), all with flexible whitespace.

    ./run bench bench/maskbench.py [--every 10] [--limit N] [--timeout 60] [--engines ...]

Writes ``bench/results/maskbench-cpu.json`` (summary and per-schema rows) and a plot, and
prints the table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"
TOKENIZER = SHARED / "tokenizers" / "llama3-128k"
ENGINES = ("stencil", "llguidance", "xgrammar", "outlines-core")


# --- engines (run inside the worker) ---------------------------------------------------


class _Engine:
    """compile(schema text) -> handle; start(handle) -> a walker with mask/allows/consume/accepting."""

    def compile(self, schema: str) -> Any:
        raise NotImplementedError

    def start(self, handle: Any) -> Any:
        raise NotImplementedError


class _StencilEngine(_Engine):
    def __init__(self, hf_tok: Any) -> None:
        import torch

        from plugin.vocabulary import Vocabulary

        self.vocab = Vocabulary.from_tokenizer(hf_tok)
        self.torch = torch

    def compile(self, schema: str) -> Any:
        from grammars import compile_json_schema

        return compile_json_schema(schema, self.vocab)

    def start(self, handle: Any) -> Any:
        return _StencilWalk(handle.matcher(), self.torch.zeros(self.vocab.size, dtype=self.torch.bool))


class _StencilWalk:
    def __init__(self, matcher: Any, mask: Any) -> None:
        self.m, self.buf = matcher, mask

    def mask(self) -> None:
        self.buf.zero_()
        self.m.fill_mask(self.buf)

    def allows(self, t: int) -> bool:
        return bool(self.buf[t])

    def consume(self, t: int) -> bool:
        self.m.advance(t)
        return True

    def accepting(self) -> bool:
        return self.m.is_accepting()


class _LLGuidanceEngine(_Engine):
    def __init__(self, hf_tok: Any) -> None:
        import llguidance
        import llguidance.hf

        self.ll = llguidance
        self.tok = llguidance.hf.from_tokenizer(hf_tok)

    def compile(self, schema: str) -> Any:
        grammar = self.ll.LLMatcher.grammar_from_json_schema(schema)
        m = self.ll.LLMatcher(self.tok, grammar)
        if m.is_error():
            raise ValueError(m.get_error())
        return grammar

    def start(self, handle: Any) -> Any:
        return _LLWalk(self.ll.LLMatcher(self.tok, handle))


class _LLWalk:
    def __init__(self, m: Any) -> None:
        self.m, self.bits = m, b""

    def mask(self) -> None:
        self.bits = self.m.compute_bitmask()

    def allows(self, t: int) -> bool:
        return bool(self.bits[t // 8] >> (t % 8) & 1)

    def consume(self, t: int) -> bool:
        return bool(self.m.consume_token(t)) and not self.m.is_error()

    def accepting(self) -> bool:
        return bool(self.m.is_accepting())


class _XGrammarEngine(_Engine):
    def __init__(self, hf_tok: Any) -> None:
        import xgrammar as xgr

        self.xgr = xgr
        self.info = xgr.TokenizerInfo.from_huggingface(hf_tok, vocab_size=len(hf_tok))
        self.compiler = xgr.GrammarCompiler(self.info, cache_enabled=False)
        self.bitmask = xgr.allocate_token_bitmask(1, self.info.vocab_size)
        self.eos = hf_tok.eos_token_id

    def compile(self, schema: str) -> Any:
        return self.compiler.compile_json_schema(schema, any_whitespace=True)

    def start(self, handle: Any) -> Any:
        return _XGWalk(self.xgr.GrammarMatcher(handle), self.bitmask, self.eos)


class _XGWalk:
    def __init__(self, m: Any, bitmask: Any, eos: int) -> None:
        self.m, self.bitmask, self.eos = m, bitmask, eos

    def mask(self) -> None:
        self.m.fill_next_token_bitmask(self.bitmask)

    def allows(self, t: int) -> bool:
        return bool(int(self.bitmask[0, t // 32]) >> (t % 32) & 1)

    def consume(self, t: int) -> bool:
        return bool(self.m.accept_token(t))

    def accepting(self) -> bool:
        return bool(self.m.accept_token(self.eos))


class _OutlinesEngine(_Engine):
    def __init__(self, hf_tok: Any) -> None:
        import outlines_core
        import torch

        from plugin.vocabulary import Vocabulary

        self.oc, self.torch = outlines_core, torch
        vocab = Vocabulary.from_tokenizer(hf_tok)
        self.size = vocab.size
        self.vocab = outlines_core.Vocabulary(min(vocab.eos_ids), vocab.text_tokens())
        self.buf = torch.zeros((self.size + 31) // 32, dtype=torch.int32)

    def compile(self, schema: str) -> Any:
        from outlines_core.json_schema import build_regex_from_schema

        return self.oc.Index(build_regex_from_schema(schema, r"[ \t\n\r]*"), self.vocab)

    def start(self, handle: Any) -> Any:
        return _OCWalk(self.oc.Guide(handle), self.buf)


class _OCWalk:
    def __init__(self, guide: Any, buf: Any) -> None:
        self.g, self.buf = guide, buf

    def mask(self) -> None:
        self.g.write_mask_into(self.buf.data_ptr(), self.buf.numel(), self.buf.element_size())

    def allows(self, t: int) -> bool:
        return bool(int(self.buf[t // 32]) >> (t % 32) & 1)

    def consume(self, t: int) -> bool:
        self.g.advance(t)
        return True

    def accepting(self) -> bool:
        return bool(self.g.is_finished())


_MAKERS = {
    "stencil": _StencilEngine,
    "llguidance": _LLGuidanceEngine,
    "xgrammar": _XGrammarEngine,
    "outlines-core": _OutlinesEngine,
}


def run_schema(engine: _Engine, schema: str, tests: list[tuple[bool, list[int]]]) -> dict[str, Any]:
    """One schema through one engine: compile + first mask, then every instance."""
    t0 = time.perf_counter()
    try:
        handle = engine.compile(schema)
        engine.start(handle).mask()
    except Exception as exc:  # a peer's refusal comes in many exception types
        return {"compiled": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    ttfm = time.perf_counter() - t0
    tbm: list[float] = []
    verdicts: list[dict[str, Any]] = []
    for valid, ids in tests:
        walk = engine.start(handle)
        accepted = True
        for t in ids:
            s = time.perf_counter()
            walk.mask()
            tbm.append(time.perf_counter() - s)
            try:
                if not walk.allows(t) or not walk.consume(t):
                    accepted = False
                    break
            except Exception:
                accepted = False
                break
        accepted = accepted and walk.accepting()
        verdicts.append({"valid": valid, "accepted": accepted})
    return {"compiled": True, "ttfm_s": ttfm, "tbm_s": tbm, "verdicts": verdicts}


def _worker(name: str, conn: Any) -> None:
    from transformers import AutoTokenizer

    engine = _MAKERS[name](AutoTokenizer.from_pretrained(str(TOKENIZER)))
    conn.send("ready")
    while True:
        task = conn.recv()
        if task is None:
            return
        conn.send(run_schema(engine, *task))


# --- driver ------------------------------------------------------------------------------


class _Pool:
    """One worker process for an engine, restarted after a timeout."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: Any = None
        self.conn: Any = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(self.name, child), daemon=True)
        self.proc.start()
        if not self.conn.poll(300) or self.conn.recv() != "ready":
            raise RuntimeError(f"{self.name}: worker did not start")

    def run(self, schema: str, tests: list, timeout: float) -> dict[str, Any]:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        self.conn.send((schema, tests))
        if self.conn.poll(timeout):
            try:
                return self.conn.recv()
            except EOFError:
                pass
        self.proc.kill()
        self.proc.join()
        self.proc = None
        return {"compiled": False, "error": f"timeout: no answer within {timeout:.0f} s"}

    def close(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.conn.send(None)
            self.proc.join(10)


def load_cases(every: int, limit: int | None) -> list[tuple[str, str, list[tuple[bool, list[int]]]]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    files = sorted((SHARED / "maskbench").glob("*.json"))[::every]
    if limit:
        files = files[:limit]
    cases = []
    for f in files:
        doc = json.loads(f.read_text())
        tests = [
            (bool(t["valid"]), tok.encode(json.dumps(t["data"]), add_special_tokens=False))
            for t in doc["tests"]
        ]
        cases.append((f.name, json.dumps(doc["schema"]), tests))
    return cases


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    compiled = [r for r in rows if r["compiled"]]
    tbm = [x * 1e6 for r in compiled for x in r["tbm_s"]]
    ttfm = [r["ttfm_s"] * 1e3 for r in compiled]
    verdicts = [v for r in compiled for v in r["verdicts"]]
    return {
        "schemas": len(rows),
        "compiled": len(compiled),
        "passed": sum(all(v["valid"] == v["accepted"] for v in r["verdicts"]) for r in compiled),
        "invalidation_errors": sum(1 for v in verdicts if not v["valid"] and v["accepted"]),
        "valid_rejected": sum(1 for v in verdicts if v["valid"] and not v["accepted"]),
        "timeouts": sum(1 for r in rows if r.get("error", "").startswith("timeout")),
        "ttfm_ms_p50": _pct(ttfm, 0.5),
        "ttfm_ms_p99": _pct(ttfm, 0.99),
        "tbm_us_mean": statistics.fmean(tbm) if tbm else float("nan"),
        "tbm_us_p50": _pct(tbm, 0.5),
        "tbm_us_p99": _pct(tbm, 0.99),
        "tokens": len(tbm),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--every", type=int, default=1, help="take every Nth schema file (sorted by name)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many schema files")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per schema and engine")
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()
    cases = load_cases(args.every, args.limit)
    n_tests = sum(len(t) for _, _, t in cases)
    print(f"{len(cases)} schemas, {n_tests} instances", flush=True)
    results: dict[str, Any] = {
        "tokenizer": "llama3-128k",
        "machine": platform.platform(),
        "every": args.every,
        "limit": args.limit,
        "timeout_s": args.timeout,
        "engines": {},
    }
    for name in args.engines:
        pool = _Pool(name)
        rows = []
        t0 = time.perf_counter()
        try:
            for i, (fname, schema, tests) in enumerate(cases, 1):
                row = pool.run(schema, tests, args.timeout)
                row["file"] = fname
                rows.append(row)
                if i % 50 == 0:
                    print(f"  {name}: {i}/{len(cases)} ({time.perf_counter() - t0:.0f} s)", flush=True)
        except (RuntimeError, ImportError) as exc:
            results["engines"][name] = {"error": str(exc)}
            continue
        finally:
            pool.close()
        summary = summarize(rows)
        summary["seconds"] = time.perf_counter() - t0
        for r in rows:  # keep the per-schema rows small: the token timings are summarized
            tbm = r.pop("tbm_s", None)
            if tbm:
                r["tbm_us_mean"] = statistics.fmean(tbm) * 1e6
        results["engines"][name] = {"summary": summary, "rows": rows}
        print(f"  {name}: done in {summary['seconds']:.0f} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "maskbench-cpu.json").write_text(json.dumps(results, indent=1))
    print_table(results)
    plot(results, out / "maskbench-cpu.png")
    return 0


def print_table(results: dict[str, Any]) -> None:
    print(
        "\n| engine | compiled | passed | invalidation errors | valid rejected | timeouts "
        "| TTFM p50 / p99 (ms) | TBM mean / p50 / p99 (µs) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, e in results["engines"].items():
        if "error" in e:
            print(f"| {name} | n/a: {e['error']} | | | | | | |")
            continue
        s = e["summary"]
        n = s["schemas"]
        print(
            f"| {name} | {s['compiled']}/{n} | {s['passed']}/{n} ({100 * s['passed'] / n:.0f}%) "
            f"| {s['invalidation_errors']} | {s['valid_rejected']} | {s['timeouts']} "
            f"| {s['ttfm_ms_p50']:.1f} / {s['ttfm_ms_p99']:.0f} "
            f"| {s['tbm_us_mean']:.0f} / {s['tbm_us_p50']:.0f} / {s['tbm_us_p99']:.0f} |"
        )


def plot(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    names = [n for n, e in results["engines"].items() if "summary" in e]
    if not names:
        return
    s = [results["engines"][n]["summary"] for n in names]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.bar(names, [100 * x["passed"] / x["schemas"] for x in s])
    a.set_ylabel("schemas passed (%)")
    a.set_title("MaskBench: all instances judged right")
    b.bar(names, [x["tbm_us_mean"] for x in s], label="mean")
    b.bar(names, [x["tbm_us_p50"] for x in s], label="p50", alpha=0.7)
    b.set_yscale("log")
    b.set_ylabel("time between masks (µs, log)")
    b.set_title("Mask time per token, Llama-3 128k, CPU")
    b.legend()
    for ax in (a, b):
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
