"""The real bundled default model: the demo, the CLI, and MaskBench schemas end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
import pytest

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
    assert out.count("--- valid: True") == 5 and "5/5 outputs valid" in out


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


@pytest.mark.shared_data
def test_maskbench_schemas_generate_valid_json(default_model):
    """A sample (every 20th) of the end-to-end run of ``bench/json_end_to_end.py``: each
    schema is refused with a clear StencilError, or too long for the budget (reported),
    or the default model's output validates with jsonschema."""
    from bench.json_end_to_end import run_schema, spread, summarise

    model, tok = default_model
    files = spread(sorted(shared_path("maskbench").glob("*.json")), 300)[::20]
    runs = [run_schema(model, tok, path, max_tokens=448) for path in files]
    summary = summarise(runs)
    print(f"maskbench end-to-end sample: {json.dumps(summary)}")
    assert summary["generated"] >= 10
    assert not summary["invalid"], [(r.file, r.detail, r.text[:200]) for r in runs if r.outcome == "invalid"]
