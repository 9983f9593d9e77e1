"""The ``stencil`` command: ``stencil generate …`` and ``stencil demo``.

Every :class:`StencilError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from plugin.errors import OptionError, StencilError


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise OptionError(f"cannot read {what} file {path!r}: {exc.strerror or exc}") from None


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="HF model id or local path (default: bundled SmolLM2-135M-Instruct)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dtype", help="float32, float16 or bfloat16")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stencil", description="Constrained generation for code LMs.")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate one constrained output")
    src = gen.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text")
    src.add_argument("--prompt-file", help="read the prompt from a file")
    con = gen.add_mutually_exclusive_group()
    con.add_argument("--json-schema", metavar="FILE", help="JSON Schema file")
    con.add_argument("--regex", help="regular expression the whole output must match")
    con.add_argument("--grammar", metavar="NAME|FILE", help="built-in grammar (json, sql, python) or .lark")
    gen.add_argument(
        "--prefix-file",
        metavar="FILE",
        help="completion mode: the constraint first consumes this file's text (code before the cursor)",
    )
    gen.add_argument(
        "--monitor",
        action="append",
        choices=["python", "sql"],
        help="static analysis during decoding (repeatable): python (jedi; with --project-root "
        "and --file) or sql (with --database)",
    )
    gen.add_argument("--project-root", metavar="DIR", help="with --monitor python: the project jedi analyses")
    gen.add_argument("--file", metavar="FILE", help="with --monitor python: the file being edited")
    gen.add_argument(
        "--database", metavar="DB", help="SQLite file whose tables, columns and functions SQL may name"
    )
    gen.add_argument("--max-new-tokens", type=int, default=256)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--repetition-penalty", type=float, default=1.0)
    gen.add_argument("--seed", type=int)
    gen.add_argument(
        "--sampler",
        default="mask",
        help="mask (full mask each step), awrs (adaptive weighted rejection sampling: a few "
        "checks per token), smc (sequential Monte Carlo over AWRS particles) or asap "
        "(grammar-aligned sampling)",
    )
    gen.add_argument("--particles", type=int, help="with --sampler smc: number of particles (default 4)")
    gen.add_argument(
        "--ess-threshold", type=float, help="with --sampler smc: resample below this ESS fraction (0.5)"
    )
    gen.add_argument(
        "--speculative",
        metavar="auto|DRAFTERS",
        help="speculative decoding: auto, or drafters joined by commas (constraint, lookup, recycling, "
        "draft_model, layer_skip); same output, fewer model forwards",
    )
    gen.add_argument(
        "--draft-model", metavar="ID|PATH", help="a smaller model sharing the tokenizer, to draft"
    )
    gen.add_argument(
        "--stop",
        action="append",
        metavar="line|statement|block|function|TEXT",
        help="end the completion at a boundary of the code, or where TEXT appears (repeatable)",
    )
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    gen.add_argument("--whitespace", help="JSON whitespace: flexible, compact, or a regex")
    gen.add_argument(
        "--no-strict", action="store_true", help="drop unsupported schema keywords (with a warning)"
    )
    gen.add_argument(
        "--extra-properties",
        choices=["declared", "schema"],
        default="declared",
        help="objects hold only declared properties unless the schema says more may come "
        "(declared, default), or undeclared ones wherever JSON Schema allows (schema)",
    )
    gen.add_argument("--json", action="store_true", help="print the Generation as JSON")
    _add_model_args(gen)

    demo = sub.add_parser("demo", help="constrained JSON, SQL and Python on the default model")
    demo.add_argument("--max-new-tokens", type=int, default=96)
    _add_model_args(demo)

    serve = sub.add_parser("serve", help="run the language server (stdio; --tcp for debugging)")
    serve.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP instead of stdio")
    return parser


def _generate(args: argparse.Namespace) -> int:
    from plugin.api import JSON_GENERATION_WHITESPACE, build_constraint, constrained_generate
    from plugin.gc_pause import freeze_loaded_heap
    from plugin.models import load_model, load_tokenizer

    prompt = args.prompt if args.prompt is not None else _read(args.prompt_file, "prompt")
    schema = _read(args.json_schema, "--json-schema") if args.json_schema else None
    # Compile before loading the model so that a bad constraint fails at once.
    constraint = None
    if schema is not None or args.regex is not None or args.grammar is not None:
        constraint = build_constraint(
            load_tokenizer(args.model),
            grammar=args.grammar,
            json_schema=schema,
            regex=args.regex,
            whitespace=args.whitespace or JSON_GENERATION_WHITESPACE,
            strict=not args.no_strict,
            extra_properties=args.extra_properties,
        )
    prefix = _read(args.prefix_file, "--prefix-file") if args.prefix_file else None
    monitors = None
    if (args.project_root or args.file) and "python" not in (args.monitor or []):
        raise OptionError("--project-root and --file are options of --monitor python")
    if args.monitor or args.database:  # like the constraint: fail before loading the model
        from monitors import build_monitors

        monitors = build_monitors(
            args.monitor,
            project_root=args.project_root,
            file_path=args.file,
            prefix=prefix,
            database=args.database,
        )
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    freeze_loaded_heap()
    gen = constrained_generate(
        model,
        tokenizer,
        prompt,
        sampler=args.sampler,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        chat=args.chat,
        constraint=constraint,
        repetition_penalty=args.repetition_penalty,
        prefix=prefix,
        **{
            k: v
            for k, v in (
                ("particles", args.particles),
                ("ess_threshold", args.ess_threshold),
                ("monitors", monitors),
                ("speculative", args.speculative),
                ("draft_model", args.draft_model),
                ("stop", args.stop),
            )
            if v is not None
        },
    )
    if args.json:
        print(json.dumps(gen.to_dict(), ensure_ascii=False))
    else:
        print(gen.text)
        print(
            f"[{gen.finish_reason}, valid={gen.valid}, {gen.stats['tokens']} tokens, "
            f"{gen.stats['tokens_per_second']:.1f} tok/s"
            + (
                f", {gen.stats['speculative']['tokens_per_forward']:.2f} tokens per forward]"
                if "speculative" in gen.stats
                else "]"
            ),
            file=sys.stderr,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            return _generate(args)
        if args.command == "serve":
            from lsp_bridge.server import serve

            if args.tcp is not None and not args.tcp.rpartition(":")[2].isdigit():
                raise OptionError(f"--tcp must be HOST:PORT, got {args.tcp!r}")
            serve(args.tcp)
            return 0
        from plugin.demo import run_demo

        return run_demo(args.model, device=args.device, dtype=args.dtype, max_new_tokens=args.max_new_tokens)
    except StencilError as exc:
        print(f"stencil: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
