"""The real bundled default model: the demo, the CLI, and MaskBench schemas end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from plugin import StencilError, constrained_generate
from tests.conftest import REPO, shared_path

pytestmark = pytest.mark.default_model
STENCIL = [sys.executable, "-m", "plugin.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([*STENCIL, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def test_demo_outputs_are_all_valid(default_model, capsys):
    from plugin.demo import run_demo

    assert run_demo() == 0
    out = capsys.readouterr().out
    assert out.count("--- valid: True") == 4 and "4/4 outputs valid" in out


def test_cli_generate_json_schema_prints_a_valid_generation(tmp_path):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    proc = run_cli(
        "generate",
        "--json-schema",
        str(path),
        "--chat",
        "--json",
        "--max-new-tokens",
        "64",
        "--prompt",
        "Give one example city as JSON: " + json.dumps(schema),
    )
    assert proc.returncode == 0, proc.stderr
    gen = json.loads(proc.stdout)
    assert set(gen) == {"text", "token_ids", "finish_reason", "valid", "stats", "particles"}
    assert gen["finish_reason"] == "stop" and gen["valid"]
    jsonschema.validate(json.loads(gen["text"]), schema)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--regex", "(ab", "--prompt", "x"], "invalid regex"),
        (["--json-schema", "/nonexistent/schema.json", "--prompt", "x"], "cannot read --json-schema file"),
        (["--model", "./no/such/model", "--prompt", "x"], "does not exist"),
        (["--grammar", "pythn", "--prompt", "x"], "unknown built-in grammar"),
        (["--grammar", "sql", "--database", "/no/such.sqlite", "--prompt", "x"], "does not exist"),
        (["--monitor", "python", "--prompt", "x"], "needs project_root"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(args, message):
    proc = run_cli("generate", *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stencil: error:") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def _maskbench_files(count: int) -> list[Path]:
    """A deterministic spread of MaskBench schemas, every source represented. Schemas we
    refuse stay in: they must be refused with a clear error."""
    files = sorted(shared_path("maskbench").glob("*.json"))
    return files[:: max(1, len(files) // count)][:count]


@pytest.mark.shared_data
def test_maskbench_schemas_generate_valid_json(default_model):
    """Every sampled schema either compiles and yields JSON that jsonschema validates, or
    is refused with a clear StencilError. At least 50 schemas are tried. Schemas whose
    shortest instance needs more than 448 tokens (by the compiled bound) are reported,
    not generated: the guarantee needs a budget at least that bound."""
    from grammars.json_schema import compile_json_schema

    model, tok = default_model
    tried = compiled = 0
    failures = []
    too_long = []  # shortest instance beyond the test's budget (e.g. minItems: 600)
    for path in _maskbench_files(60):
        tried += 1
        schema = json.loads(path.read_text())["schema"]
        try:
            constraint = compile_json_schema(schema, tok, whitespace=r"[ ]?")
        except StencilError:
            continue
        compiled += 1
        bound = constraint.distance(constraint.initial_state)
        if bound > 448:
            too_long.append(path.name)
            continue
        budget = bound + 64  # finish_within_budget guarantees completion within it
        gen = constrained_generate(
            model,
            tok,
            "Give one example JSON instance of this schema: " + json.dumps(schema)[:1500],
            constraint=constraint,
            chat=True,
            max_new_tokens=budget,
            repetition_penalty=1.1,
        )
        validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
        try:
            ok = gen.finish_reason == "stop" and validator.is_valid(json.loads(gen.text))
        except json.JSONDecodeError:
            ok = False
        if not ok:
            failures.append((path.name, gen.finish_reason, gen.text[:200]))
    print(
        f"maskbench end-to-end: {tried} schemas tried, {compiled} compiled, "
        f"{len(too_long)} need more than 448 tokens {too_long}, {len(failures)} invalid"
    )
    assert tried >= 50 and compiled - len(too_long) >= 30
    assert not failures
