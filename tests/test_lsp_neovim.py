"""A real editor nobody here wrote: headless Neovim's built-in LSP client against
``stencil serve`` (open a Python file of a project, edit it, complete after ``obj.``,
apply the item with Neovim's own code, check the result parses and the server's copy
matches the buffer). ``.ci/run`` installs Debian's ``neovim``; elsewhere the test skips
saying so."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.default_model

SCRIPT = Path(__file__).parent / "editors" / "neovim_complete.lua"
SHAPES = (
    "class Rect:\n    def __init__(self, w, h):\n        self.w = w\n        self.h = h\n\n"
    "    def area(self):\n        return self.w * self.h\n"
)
MAIN = "from shapes import Rect\n\n\ndef total(r):\n    first = Rect(1, 2)\n    return first.\n"


def test_neovim_completes_a_real_attribute(tmp_path):
    nvim = shutil.which("nvim")
    if nvim is None:
        pytest.skip("Neovim not found: install Debian's `neovim` (.ci/run does)")
    (tmp_path / "shapes.py").write_text(SHAPES)
    main = tmp_path / "main.py"
    main.write_text(MAIN)
    out = tmp_path / "out.json"
    env = os.environ | {
        "STENCIL_FILE": str(main),
        "STENCIL_ROOT": str(tmp_path),
        "STENCIL_SERVER": json.dumps([sys.executable, "-m", "plugin.cli", "serve"]),
        "STENCIL_EDIT_LINE": "4",
        "STENCIL_EDIT_TEXT": "    unused = 0",
        "STENCIL_OUT": str(out),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    proc = subprocess.run(
        [nvim, "--headless", "--clean", "-c", f"luafile {SCRIPT}"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.exists(), (
        f"Neovim wrote nothing (rc {proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
    )
    result = json.loads(out.read_text())
    assert "error" not in result, result["error"]
    assert result["server"] == result["buffer"], "the server's copy differs from Neovim's buffer"
    assert "    unused = 0\n    first = Rect" in result["buffer"]
    ident = result["inserted"].split("(")[0].split(")")[0].strip()
    assert ident in {"area", "w", "h"} or ident.startswith("__"), result["inserted"]
    last = result["buffer"].rstrip("\n").splitlines()[-1]
    closing = ")" * (last.count("(") - last.count(")"))
    ast.parse(result["buffer"].rstrip("\n") + closing + "\n")
    assert main.read_text() == MAIN, "the server (or the test) wrote to the user's file"
