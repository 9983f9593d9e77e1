"""Soundness of the Python monitor on real code nobody here wrote.

Installed third-party packages' files are cut at a few line starts; the next lines go
token by token (the default model's tokenizer) through the Python monitor alone, as an
editor's completion would: the text before the cut is the prefix, the rest of the file
after those lines is the suffix jedi sees. Every token should be accepted; each refused
one is printed with its context. (A refusal can also be legal code the monitor cannot
vouch for: a module missing on this Python, a name defined later in the very lines
being replayed.)

    ./run bench bench/monitor_soundness.py [--files 30] [--lines 8] [--humaneval]

``--humaneval`` also replays all 164 HumanEval canonical solutions (``../shared/data``).

Writes ``bench/results/monitor-soundness.json`` and prints a summary.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monitors import MonitoredConstraint, PythonMonitor  # noqa: E402
from plugin.models import load_tokenizer  # noqa: E402
from plugin.vocabulary import Vocabulary  # noqa: E402

PACKAGES = ["lark", "click", "h11", "jinja2", "attr", "jsonschema", "idna", "parso"]
CUTS = (0.2, 0.45, 0.7, 0.9)


def package_files(n: int) -> list[Path]:
    """``n`` files spread over :data:`PACKAGES` (those installed), in a fixed order."""
    files: list[Path] = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            files.extend(sorted(Path(spec.origin).parent.glob("*.py")))
    step = max(1, len(files) // n)
    return files[::step][:n]


def feed(
    monitor: PythonMonitor, prefix: str, code: str, vocab: Vocabulary, tokenizer
) -> tuple[int, dict | None]:
    """``code``'s tokens after ``prefix`` through ``monitor``: (tokens, the refused one or None)."""
    matcher = MonitoredConstraint(None, [monitor], vocab).matcher_after(prefix)
    ids = tokenizer(code, add_special_tokens=False).input_ids
    for tok in ids:
        if not matcher.accepts(tok):
            return len(ids), {
                "context": matcher.text()[-120:].decode(errors="replace"),
                "token": vocab.token_bytes[tok].decode(errors="replace"),
            }
        matcher.advance(tok)
    return len(ids), None


def humaneval(vocab: Vocabulary, tokenizer) -> list[dict]:
    """HumanEval's canonical solutions, each whole, through the monitor (its own file)."""
    path = REPO.parent / "shared" / "data" / "python-problems" / "HumanEval.jsonl.gz"
    if not path.exists():
        print(f"HumanEval not found at {path}: skipped", file=sys.stderr)
        return []
    with gzip.open(path, "rt") as fh:
        problems = [json.loads(line) for line in fh]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for p in problems:
            code = p["prompt"] + p["canonical_solution"]
            file = Path(tmp) / "solution.py"
            file.write_text(code)
            monitor = PythonMonitor(tmp, file, timeout=60)
            tokens, refused = feed(monitor, "", code, vocab, tokenizer)
            out.append({"file": p["task_id"], "line": 1, "tokens": tokens, "refused": refused})
    return out


def replay(path: Path, vocab: Vocabulary, tokenizer, lines_per_cut: int) -> list[dict]:
    """Each cut of ``path``: tokens accepted, the refused one if any."""
    code = path.read_text()
    lines = code.splitlines(keepends=True)
    out = []
    for q in CUTS:
        k = int(len(lines) * q)
        cut = sum(map(len, lines[:k]))
        end = sum(map(len, lines[: k + lines_per_cut]))
        prefix, continuation, suffix = code[:cut], code[cut:end], code[end:]
        if not continuation.strip():
            continue
        monitor = PythonMonitor(path.parent, path, suffix="\n" + suffix, timeout=60)
        tokens, refused = feed(monitor, prefix, continuation, vocab, tokenizer)
        out.append(
            {
                "file": str(path),
                "line": k + 1,
                "tokens": tokens,
                "refused": refused,
                "kinds": monitor.stats.kinds,
                "failures": monitor.stats.failures,
                "timeouts": monitor.stats.timeouts,
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=30)
    ap.add_argument("--lines", type=int, default=8, help="lines replayed after each cut")
    ap.add_argument("--humaneval", action="store_true", help="also every HumanEval solution (../shared/data)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "monitor-soundness.json")
    args = ap.parse_args()
    tokenizer = load_tokenizer()
    vocab = Vocabulary.from_tokenizer(tokenizer)
    start = time.perf_counter()
    cuts = []
    for i, path in enumerate(package_files(args.files)):
        print(f"[{i + 1}/{args.files}] {path}", file=sys.stderr, flush=True)
        cuts.extend(replay(path, vocab, tokenizer, args.lines))
    solutions = humaneval(vocab, tokenizer) if args.humaneval else []
    refused = [c for c in cuts + solutions if c["refused"]]
    kinds: dict[str, int] = {}
    for c in cuts:
        for k, v in c["kinds"].items():
            kinds[k] = kinds.get(k, 0) + v
    summary = {
        "cuts": len(cuts),
        "tokens": sum(c["tokens"] for c in cuts),
        "refused_cuts": sum(1 for c in cuts if c["refused"]),
        "analyses": kinds,
        "failures": sum(c["failures"] for c in cuts),
        "timeouts": sum(c["timeouts"] for c in cuts),
        "humaneval_solutions": len(solutions),
        "humaneval_refused": sum(1 for c in solutions if c["refused"]),
        "seconds": round(time.perf_counter() - start, 1),
    }
    for c in refused:
        r = c["refused"]
        print(f"REFUSED {c['file']}:{c['line']}: {r['context'][-70:]!r} + {r['token']!r}")
    print(json.dumps(summary, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "cuts": cuts, "humaneval": solutions}, indent=1))


if __name__ == "__main__":
    main()
