"""How many stale tokens before the reading point must be encoded again: the experiment
behind ``RECENT_STALE`` (plugin/kv/edit_session.py; docs/edit-cache.md).

Replays ``bench/edit_cache.py``'s seeded edit sequence (same documents, edits and
random draws) on one ``EditSession`` with the default refresh policy. After each edit
it compares, against a full re-encode of the new text, the session's next-token logits
at the end with the last ``R`` cached tokens encoded again from the session's cache
(R = 0, 8, 16, 32, 64, 128; the session itself is not changed by these reads; R = 0
is the session's own logits). The session runs with ``--recent-stale`` (default 0: as
before the rule, so R = 16 is what ``RECENT_STALE`` = 16 adds). Fidelity only, no timing.

    .venv/bin/python bench/edit_tail_replay.py [--sizes 1000 4000] [--corpora problems stdlib]
        [--recent-stale 0]

Writes ``bench/results/edit-tail-replay-cpu.json`` and prints a row per edit and the
top-1 agreement per R.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import edit_cache as ec  # noqa: E402  (bench/edit_cache.py: documents, edits, reference)

from plugin.kv import EditSession, edit_session  # noqa: E402
from plugin.kv.cache import cache_over, extend  # noqa: E402
from plugin.models import load_model  # noqa: E402

TAILS = (0, 8, 16, 32, 64, 128)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000])
    ap.add_argument("--corpora", nargs="+", choices=["stdlib", "problems"], default=["stdlib", "problems"])
    ap.add_argument("--edits", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--recent-stale", type=int, default=0, help="the session's RECENT_STALE")
    args = ap.parse_args()
    edit_session.RECENT_STALE = args.recent_stale
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(device="cpu")
    ctx = model.config.max_position_embeddings - ec.GENERATION_ROOM
    sources = {"stdlib": ec.stdlib_source, "problems": lambda _first: ec.problems_source()}
    rows: list[dict] = []
    out = REPO / "bench" / "results" / "edit-tail-replay-cpu.json"
    for index, size in enumerate(args.sizes):  # the index picks the stdlib module, as edit_cache does
        for corpus in args.corpora:
            source = sources[corpus](index)
            if source is None:
                print(f"edit-tail-replay: {ec.PROBLEMS} is absent: skipping {corpus}", file=sys.stderr)
                continue
            doc = ec.cut_document(tokenizer, source, min(size, ctx - ec.CUT_MARGIN))
            rng = random.Random(f"{args.seed}-{corpus}-{size}")
            session = EditSession(model, tokenizer, doc)
            kinds = [ec.KINDS[i % len(ec.KINDS)] for i in range(args.edits)]
            rng.shuffle(kinds)
            text = doc
            for number, kind in enumerate(kinds, 1):
                edit = ec.plan_edit(rng, text, kind)
                fraction = edit.position / len(text)
                text = edit.apply(text)
                for start, end, new in edit.changes:
                    session.edit(start, end, new)
                own = session.logits()
                ids = tokenizer(text, add_special_tokens=False).input_ids[-ctx:]
                reference, _ = ec.full_forward(model, ids, keep_cache=False)
                cached = session._cached
                result = {}
                for tail in TAILS:
                    if tail == 0:
                        logits = own
                    else:
                        with torch.inference_mode():
                            keep = cache_over(session._keys, session._values, len(cached) - tail)
                            logits = extend(model, keep, cached[-tail:])
                    top1, kl = ec.compare(reference, logits)
                    result[tail] = {"top1": top1, "kl": kl}
                top2 = torch.log_softmax(reference.double(), -1).topk(2).values
                # the draw edit_cache.py makes for its mid-document check, so the next edit matches
                half = len(text) // 2
                line_ends = [m.start() for m in re.finditer(r"[^\n]\n", text) if m.start() + 1 < half]
                if line_ends:
                    rng.randrange(len(line_ends))
                row = {
                    "corpus": corpus,
                    "size": size,
                    "edit": number,
                    "kind": kind,
                    "position_fraction": fraction,
                    "edits_since_refresh": session.stats["edits_since_refresh"],
                    "reference_margin": float(top2[0] - top2[1]),
                    "tails": result,
                }
                rows.append(row)
                out.write_text(
                    json.dumps({"arguments": vars(args), "rows": rows}, indent=2)
                )  # a cut run keeps its rows
                print(
                    f"[{corpus} {size}] edit {number} {kind} at {fraction:.2f}, "
                    f"margin {row['reference_margin']:.3f}: "
                    + " ".join(f"R{t}:{int(r['top1'])}" for t, r in result.items()),
                    flush=True,
                )
    print("\n| R (tokens encoded again) | top-1 agree |\n|---|---|")
    for tail in TAILS:
        agree = sum(r["tails"][tail]["top1"] for r in rows)
        print(f"| {tail} | {agree}/{len(rows)} |")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
