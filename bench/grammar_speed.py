"""Grammar engine speed: compile time, per-token ``accepts`` and ``fill_mask``, vs peers.

Same inputs for every engine: the Llama-3 128k tokenizer from ``../shared/data``, and
real texts walked token by token (JSON: MaskBench valid instances; SQL: Spider gold
queries; Python: HumanEval prompts with their canonical solutions). At each token every
engine computes the full mask, then checks and consumes the token. Peers: llguidance
(our ``.lark`` files less the ``_REJECT*`` terminals, as it has no terminal priorities;
no Python indentation) and xgrammar (its built-in JSON
grammar; no Lark front end). Timings are per token; "first pass" includes the lazy
per-lexer-state token tables, "tables from disk" is a new process that finds them in the
disk cache, "second pass" reuses in-memory mask caches as a long-running server would.

    python bench/grammar_speed.py [--texts 100] [--out bench/results]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from grammars import lark_compile  # noqa: E402
from grammars.lark_compile import GRAMMAR_DIR, compile_grammar  # noqa: E402
from grammars.token_tables import wait_for_table_saves  # noqa: E402
from plugin.decoding import percentile  # noqa: E402
from plugin.vocabulary import Vocabulary  # noqa: E402

SHARED = REPO.parent / "shared" / "data"


def corpus(name: str, n: int) -> list[str]:
    if name == "json":
        texts = []
        for f in sorted((SHARED / "maskbench").glob("*.json")):
            for case in json.loads(f.read_text())["tests"]:
                if case["valid"]:
                    texts.append(json.dumps(case["data"]))
            if len(texts) >= n:
                break
        return texts[:n]
    if name == "sql":
        return [d["query"] for d in json.loads((SHARED / "spider" / "dev.json").read_text())][:n]
    with gzip.open(SHARED / "python-problems" / "HumanEval.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for line in fh]
    return [r["prompt"] + r["canonical_solution"] for r in rows][:n]


def summary(xs: list[float]) -> dict[str, float]:
    us = [x * 1e6 for x in xs]
    return {
        "mean_us": statistics.fmean(us),
        "p50_us": percentile(us, 0.5),
        "p99_us": percentile(us, 0.99),
        "n": len(us),
    }


def bench_stencil(name: str, tok, texts: list[list[int]]) -> dict:
    with tempfile.TemporaryDirectory() as cache:  # cold: nothing on disk from earlier runs
        os.environ["STENCIL_CACHE"] = cache
        try:
            return _bench_stencil(name, tok, texts)
        finally:
            del os.environ["STENCIL_CACHE"]
            lark_compile._MEMORY.clear()


def _bench_stencil(name: str, hf_tok, texts: list[list[int]]) -> dict:
    tok = Vocabulary.from_tokenizer(hf_tok)
    compile_grammar('start: "a"', tok)  # vocabulary-level set-up, outside the timing (as for peers)
    lark_compile._MEMORY.clear()
    t0 = time.perf_counter()
    g = compile_grammar(name, tok)
    cold = time.perf_counter() - t0
    lark_compile._MEMORY.clear()
    t0 = time.perf_counter()
    compile_grammar(name, tok)
    from_disk = time.perf_counter() - t0
    t0 = time.perf_counter()
    compile_grammar(name, tok)
    in_memory = time.perf_counter() - t0
    out = {"compile_cold_s": cold, "compile_from_disk_s": from_disk, "compile_in_memory_s": in_memory}
    passes = {
        # token tables built as lexer states are first met (a new grammar or vocabulary)
        "first_pass": g,
        # a new process: token tables read from the disk cache, masks not cached
        "tables_from_disk": None,
        # the same matcher state seen again: masks cached in memory (a server)
        "second_pass": None,
    }
    for label in passes:
        if label == "tables_from_disk":
            wait_for_table_saves()  # as a process exiting does: the next one finds them all
            lark_compile._MEMORY.clear()
            g = compile_grammar(name, tok)
        mask = torch.zeros(g.vocab.size, dtype=torch.bool)
        masks, accepts, rejected = [], [], 0
        for ids in texts:
            m = g.matcher()
            for t in ids:
                mask.zero_()
                t0 = time.perf_counter()
                m.fill_mask(mask)
                t1 = time.perf_counter()
                ok = m.accepts(t)
                t2 = time.perf_counter()
                masks.append(t1 - t0)
                accepts.append(t2 - t1)
                if not ok or not mask[t]:
                    rejected += 1
                    break
                m.advance(t)
        out[label] = {"fill_mask": summary(masks), "accepts": summary(accepts), "texts_rejected": rejected}
    return out


def peer_lark(name: str) -> str:
    """Our grammar as llguidance takes it: without terminal priorities, so without the
    ``_REJECT*`` terminals that use them (they only refuse bad lexemes like ``1abc``)."""
    lines = (GRAMMAR_DIR / f"{name}.lark").read_text().splitlines()
    return "\n".join(line for line in lines if not line.startswith("_REJECT"))


def bench_llguidance(name: str, hf_tok, texts: list[list[int]]) -> dict:
    try:
        import llguidance
        import llguidance.hf
    except ImportError:
        return {"error": "llguidance not installed (pip install -e '.[bench]')"}
    if name == "python":
        return {"error": "no Python indentation (INDENT/DEDENT) support"}
    ll_tok = llguidance.hf.from_tokenizer(hf_tok)
    text = peer_lark(name)
    t0 = time.perf_counter()
    grammar = llguidance.LLMatcher.grammar_from_lark(text)
    msg = llguidance.LLMatcher.validate_grammar(grammar, ll_tok)
    if msg:
        return {"error": f"grammar refused: {msg[:200]}"}
    m0 = llguidance.LLMatcher(ll_tok, grammar)
    cold = time.perf_counter() - t0
    out: dict = {"compile_cold_s": cold}
    masks, accepts, rejected = [], [], 0
    for ids in texts:
        m = llguidance.LLMatcher(ll_tok, grammar)
        for t in ids:
            t0 = time.perf_counter()
            m.compute_bitmask()
            t1 = time.perf_counter()
            n = m.validate_tokens([t])
            t2 = time.perf_counter()
            masks.append(t1 - t0)
            accepts.append(t2 - t1)
            if n != 1 or not m.consume_token(t):
                rejected += 1
                break
    del m0
    out["first_pass"] = {"fill_mask": summary(masks), "accepts": summary(accepts), "texts_rejected": rejected}
    return out


def bench_xgrammar(name: str, hf_tok, texts: list[list[int]]) -> dict:
    try:
        import xgrammar as xgr
    except ImportError:
        return {"error": "xgrammar not installed (pip install -e '.[bench]')"}
    if name != "json":
        return {"error": "no Lark front end (EBNF only); not measured on our grammar"}
    info = xgr.TokenizerInfo.from_huggingface(hf_tok, vocab_size=len(hf_tok))
    t0 = time.perf_counter()
    compiled = xgr.GrammarCompiler(info, cache_enabled=False).compile_builtin_json_grammar()
    cold = time.perf_counter() - t0
    bitmask = xgr.allocate_token_bitmask(1, info.vocab_size)
    masks, accepts, rejected = [], [], 0
    for ids in texts:
        m = xgr.GrammarMatcher(compiled)
        for t in ids:
            t0 = time.perf_counter()
            m.fill_next_token_bitmask(bitmask)
            t1 = time.perf_counter()
            ok = m.accept_token(t)
            t2 = time.perf_counter()
            masks.append(t1 - t0)
            accepts.append(t2 - t1)
            if not ok:
                rejected += 1
                break
    return {
        "compile_cold_s": cold,
        "first_pass": {
            "fill_mask": summary(masks),
            "accept_token": summary(accepts),
            "texts_rejected": rejected,
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--texts", type=int, default=100, help="texts per grammar")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(str(SHARED / "tokenizers" / "llama3-128k"))
    results: dict = {
        "tokenizer": "llama3-128k",
        "machine": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "grammars": {},
    }
    for name in ("json", "sql", "python"):
        texts = [hf_tok.encode(t, add_special_tokens=False) for t in corpus(name, args.texts)]
        print(f"{name}: {len(texts)} texts, {sum(map(len, texts))} tokens", flush=True)
        results["grammars"][name] = {
            "tokens": sum(map(len, texts)),
            "stencil": bench_stencil(name, hf_tok, texts),
            "llguidance": bench_llguidance(name, hf_tok, texts),
            "xgrammar": bench_xgrammar(name, hf_tok, texts),
        }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "grammar-speed-cpu.json").write_text(json.dumps(results, indent=2))
    print_table(results)
    plot(results, out / "grammar-speed-cpu.png")
    return 0


LABELS = {"first_pass": "", "tables_from_disk": " (tables from disk)", "second_pass": " (2nd pass)"}


def print_table(results: dict) -> None:
    print(
        "\n| grammar | engine | compile cold | fill_mask mean / p50 / p99 (µs) "
        "| accepts p50 (µs) | rejected |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in results["grammars"].items():
        for engine in ("stencil", "llguidance", "xgrammar"):
            e = r[engine]
            if "error" in e:
                print(f"| {name} | {engine} | n/a: {e['error']} | | | |")
                continue
            for label, suffix in LABELS.items():
                if label not in e:
                    continue
                p = e[label]
                fm = p["fill_mask"]
                acc = p.get("accepts") or p.get("accept_token")
                tag = engine + suffix
                print(
                    f"| {name} | {tag} | {e['compile_cold_s'] * 1e3:.0f} ms "
                    f"| {fm['mean_us']:.0f} / {fm['p50_us']:.0f} / "
                    f"{fm['p99_us']:.0f} | {acc['p50_us']:.1f} | {p['texts_rejected']} |"
                )


def plot(results: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(8, 6))
    labels, means, p50s = [], [], []
    for name, r in results["grammars"].items():
        for engine in ("stencil", "llguidance", "xgrammar"):
            e = r[engine]
            if "error" in e:
                continue
            for label, suffix in LABELS.items():
                if label in e:
                    labels.append(f"{name} {engine}{suffix}")
                    means.append(e[label]["fill_mask"]["mean_us"])
                    p50s.append(e[label]["fill_mask"]["p50_us"])
    y = list(range(len(labels)))
    ax.barh([i - 0.2 for i in y], means, height=0.4, label="mean")
    ax.barh([i + 0.2 for i in y], p50s, height=0.4, label="p50")
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("fill_mask per token (µs, log)")
    ax.legend()
    ax.set_title("Mask time per token, Llama-3 128k vocabulary, CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
