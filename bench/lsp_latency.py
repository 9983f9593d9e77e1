"""Completion latency of ``stencil serve`` as an editor sees it, on the default model.

The server runs as a subprocess over stdio and a real LSP client (pygls's) drives it.
Documents: Python (real code: standard-library modules, cut right after ``name.``) and
JSON (a pretty-printed array of records, cut after ``"key": ``) of about 100, 1,000
and 4,000 tokens (default tokenizer). Per document: open, one warm-up completion, then
``--repeats`` times: a single-character edit sent as an incremental ``didChange`` (a space
added at, then taken from, the end of a line: the first line, far from the cursor, for two
repeats, then the line above the cursor for two) and ``textDocument/completion`` at the
end of the document. The server applies each edit to the document's edit-aware KV cache
(:class:`plugin.kv.EditSession`); the breakdown says how long that took and how many of
the prompt's tokens came from the cache.

Reported per document: completion latency (request to response, at the client) p50/p95,
and time to first token (the server's measure, from the request's start, constraint
building and prefill included) p50/p95, with the server's default settings (the model
sees the last ``context_tokens`` = 1,024 tokens; the grammar and the jedi monitor read
the whole text before the cursor). No peer serves constrained completions over LSP, so
there is no side-by-side column.

    ./run bench bench/lsp_latency.py [--repeats 12] [--sizes 100 1000 4000] [--settings JSON]

``--settings`` adds initialization options (e.g. ``'{"sampler": "mask"}'``) to the defaults.

Writes ``bench/results/lsp-latency-<device>.json`` and ``.png`` and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import platform
import sys
import sysconfig
import tempfile
import time
import tokenize
from pathlib import Path
from typing import Any

from lsprotocol import types as lsp
from pygls.lsp.client import LanguageClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from plugin.decoding import percentile  # noqa: E402
from plugin.models import load_tokenizer  # noqa: E402

STDLIB_MODULES = [
    "imghdr.py",
    "genericpath.py",
    "textwrap.py",
    "shlex.py",
    "argparse.py",
    "configparser.py",
    "tarfile.py",
    "logging/__init__.py",
]


def python_document(tokenizer: Any, size: int) -> str:
    """A real standard-library file cut right after ``name.`` at the attribute access
    whose prefix has the token count nearest ``size``."""
    best: tuple[int, str] | None = None
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in STDLIB_MODULES:
        source = (stdlib / name).read_text(encoding="utf-8")
        lines = source.splitlines(keepends=True)
        starts = [0]
        for line in lines:
            starts.append(starts[-1] + len(line))
        cuts = []
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
        for a, b in itertools.pairwise(tokens):
            if a.type == tokenize.NAME and b.string == "." and b.start == a.end:
                cuts.append(starts[b.end[0] - 1] + b.end[1])
        ids = tokenizer(source, add_special_tokens=False, return_offsets_mapping=True)
        ends = [end for _, end in ids["offset_mapping"]]
        for cut in cuts:
            count = sum(1 for end in ends if end <= cut)
            if best is None or abs(count - size) < abs(best[0] - size):
                best = (count, source[:cut])
    assert best is not None
    return best[1]


def json_document(tokenizer: Any, size: int) -> str:
    """A pretty-printed array of records cut after the ``"key": `` whose prefix has the
    token count nearest ``size``."""
    records = [
        {
            "id": i,
            "name": f"item-{i}",
            "tags": ["a", "b"][: i % 3],
            "price": round(i * 1.25, 2),
            "active": i % 2 == 0,
        }
        for i in range(size)
    ]
    text = json.dumps(records, indent=2)
    best: tuple[int, str] | None = None
    ids = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ends = [end for _, end in ids["offset_mapping"]]
    position = 0
    while (found := text.find('"name": ', position)) >= 0:
        cut = found + len('"name": ')
        position = cut
        count = sum(1 for end in ends if end <= cut)
        if best is None or abs(count - size) < abs(best[0] - size):
            best = (count, text[:cut])
        if count > size * 1.5:
            break
    assert best is not None
    return best[1]


def _end(text: str) -> lsp.Position:
    lines = text.split("\n")
    return lsp.Position(line=len(lines) - 1, character=len(lines[-1].encode("utf-16-le")) // 2)


async def measure(
    client: LanguageClient, uri: str, language: str, text: str, repeats: int
) -> list[dict[str, Any]]:
    client.text_document_did_open(
        lsp.DidOpenTextDocumentParams(
            text_document=lsp.TextDocumentItem(uri=uri, language_id=language, version=1, text=text)
        )
    )
    lines = text.split("\n")
    near = max(0, len(lines) - 2)  # the line above the cursor's
    rows = []
    for i in range(repeats + 1):  # the first is a warm-up
        place = "far" if (i - 1) % 4 < 2 else "near"
        if i > 0:  # the single-character edit: a space added, then taken away
            line = 0 if place == "far" else near
            width = len(lines[line].encode("utf-16-le")) // 2
            added = i % 2 == 1
            end = width + (0 if added else 1)
            change = lsp.TextDocumentContentChangePartial(
                range=lsp.Range(
                    start=lsp.Position(line=line, character=width), end=lsp.Position(line=line, character=end)
                ),
                text=" " if added else "",
            )
            client.text_document_did_change(
                lsp.DidChangeTextDocumentParams(
                    text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=i + 1),
                    content_changes=[change],
                )
            )
        t0 = time.perf_counter()
        result = await client.text_document_completion_async(
            lsp.CompletionParams(text_document=lsp.TextDocumentIdentifier(uri=uri), position=_end(text))
        )
        latency = time.perf_counter() - t0
        item = result.items[0] if result and result.items else None
        data = item.data if item is not None else {}
        if i > 0:
            rows.append(
                {
                    "latency_s": latency,
                    "edit_place": place,
                    "edit_s": data.get("edit_seconds"),
                    "cached_prompt_tokens": data.get("cached_prompt_tokens"),
                    "first_token_s": data.get("first_token_seconds"),
                    "prefill_s": data.get("prefill_seconds"),
                    "constraint_build_s": data.get("constraint_build_seconds"),
                    "tokens": data.get("tokens", 0),
                    "text": item.text_edit.new_text if item is not None else "",
                }
            )
    client.text_document_did_close(
        lsp.DidCloseTextDocumentParams(text_document=lsp.TextDocumentIdentifier(uri=uri))
    )
    return rows


async def run(sizes: list[int], repeats: int, options: dict[str, Any]) -> dict[str, Any]:
    tokenizer = load_tokenizer()
    client = LanguageClient("stencil-bench", "0.1.0")
    await client.start_io(sys.executable, "-m", "plugin.cli", "serve", cwd=str(REPO))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        await client.initialize_async(
            lsp.InitializeParams(
                capabilities=lsp.ClientCapabilities(), root_uri=root.as_uri(), initialization_options=options
            )
        )
        client.initialized(lsp.InitializedParams())
        for language, build, suffix in (("python", python_document, ".py"), ("json", json_document, ".json")):
            for size in sizes:
                text = build(tokenizer, size)
                path = root / f"doc{size}{suffix}"
                path.write_text(text)
                count = len(tokenizer(text, add_special_tokens=False).input_ids)
                rows = await measure(client, path.as_uri(), language, text, repeats)
                latency = [r["latency_s"] * 1e3 for r in rows]
                ttft = [r["first_token_s"] * 1e3 for r in rows if r["first_token_s"] is not None]
                key = f"{language}-{size}"
                results[key] = {
                    "language": language,
                    "document_tokens": count,
                    "latency_ms_p50": percentile(latency, 0.5),
                    "latency_ms_p95": percentile(latency, 0.95),
                    "first_token_ms_p50": percentile(ttft, 0.5) if ttft else None,
                    "first_token_ms_p95": percentile(ttft, 0.95) if ttft else None,
                    "tokens_mean": sum(r["tokens"] for r in rows) / len(rows),
                    "prefill_ms_p50": percentile([(r["prefill_s"] or 0) * 1e3 for r in rows], 0.5),
                    "constraint_build_ms_p50": percentile(
                        [(r["constraint_build_s"] or 0) * 1e3 for r in rows], 0.5
                    ),
                    "edit_ms_p50": percentile([(r["edit_s"] or 0) * 1e3 for r in rows], 0.5),
                    "cached_prompt_tokens_p50": percentile(
                        [float(r["cached_prompt_tokens"] or 0) for r in rows], 0.5
                    ),
                    "by_place": {
                        place: {
                            "latency_ms_p50": percentile(
                                [r["latency_s"] * 1e3 for r in rows if r["edit_place"] == place], 0.5
                            ),
                            "first_token_ms_p50": percentile(
                                [
                                    r["first_token_s"] * 1e3
                                    for r in rows
                                    if r["edit_place"] == place and r["first_token_s"] is not None
                                ],
                                0.5,
                            ),
                        }
                        for place in ("far", "near")
                    },
                    "rows": rows,
                }
                print(
                    f"{key}: {count} tokens, p50 {results[key]['latency_ms_p50']:.0f} ms",
                    file=sys.stderr,
                    flush=True,
                )
        await client.shutdown_async(None)
        client.exit(None)
    await client.stop()
    return results


def print_table(results: dict[str, Any]) -> None:
    print("| document | tokens | latency p50 ms | latency p95 ms | TTFT p50 ms | TTFT p95 ms | generated |")
    print("|---|---|---|---|---|---|---|")
    for key, r in results.items():
        cells = (r["latency_ms_p50"], r["latency_ms_p95"], r["first_token_ms_p50"], r["first_token_ms_p95"])
        print(
            f"| {key} | {r['document_tokens']} | "
            + " | ".join(f"{c:.0f}" for c in cells)
            + f" | {r['tokens_mean']:.1f} |"
        )
    print(
        "\nTTFT p50 breakdown (server): "
        + "; ".join(
            f"{k} edit {r['edit_ms_p50']:.0f} ms, prefill {r['prefill_ms_p50']:.0f} ms "
            f"(prompt tokens from the cache {r['cached_prompt_tokens_p50']:.0f}), "
            f"constraint {r['constraint_build_ms_p50']:.1f} ms"
            for k, r in results.items()
        )
    )
    places = []
    for k, r in results.items():
        cells = [
            f"{p} {r['by_place'][p]['latency_ms_p50']:.0f}/{r['by_place'][p]['first_token_ms_p50']:.0f}"
            for p in ("far", "near")
        ]
        places.append(f"{k} " + ", ".join(cells))
    print("\nBy edit place (p50 latency / TTFT ms): " + "; ".join(places))


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for language, marker in (("python", "o"), ("json", "s")):
        rows = [r for r in results.values() if r["language"] == language]
        xs = [r["document_tokens"] for r in rows]
        ax.plot(xs, [r["latency_ms_p50"] for r in rows], marker=marker, label=f"{language} latency p50")
        ax.plot(
            xs,
            [r["first_token_ms_p50"] for r in rows],
            marker=marker,
            linestyle="--",
            label=f"{language} TTFT p50",
        )
    ax.set_xscale("log")
    ax.set_xlabel("document tokens")
    ax.set_ylabel("ms")
    ax.set_title("stencil serve: completion after a one-character edit")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 4000])
    ap.add_argument("--repeats", type=int, default=12)
    ap.add_argument("--settings", default="{}", help="JSON initialization options added to the defaults")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/lsp-latency-<device>.json)")
    args = ap.parse_args()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    options = json.loads(args.settings)
    results = asyncio.run(run(args.sizes, args.repeats, options))
    print_table(results)
    out = Path(args.out or REPO / "bench" / "results" / f"lsp-latency-{device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "device": device,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "repeats": args.repeats,
        "settings": options,
    }
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
