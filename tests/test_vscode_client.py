"""The VS Code client (lsp_bridge/vscode/): its settings are the server's, and it builds
with ``npm ci && npm run compile`` (npm's registry is reachable in CI; without npm the
build test skips saying so)."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest

from lsp_bridge.settings import Settings

CLIENT = Path(__file__).resolve().parents[1] / "lsp_bridge" / "vscode"
CLIENT_ONLY = ("server.", "client.")


def _contributed() -> dict[str, object]:
    """The defaults of the extension's ``stencil.*`` settings the server reads."""
    package = json.loads((CLIENT / "package.json").read_text())
    properties = package["contributes"]["configuration"]["properties"]
    return {
        key.removeprefix("stencil."): spec["default"]
        for key, spec in properties.items()
        if not key.removeprefix("stencil.").startswith(CLIENT_ONLY)
    }


def test_the_extensions_settings_are_the_servers():
    contributed = _contributed()
    assert set(contributed) == {f.name for f in fields(Settings)}
    assert Settings().updated({"stencil": contributed}) == Settings(), "defaults differ"


def test_the_client_builds_and_sends_what_the_server_accepts(tmp_path):
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip("npm/node not found: the VS Code client cannot be built here")
    work = tmp_path / "vscode"
    shutil.copytree(CLIENT, work, ignore=shutil.ignore_patterns("node_modules", "out"))
    for step in (["ci", "--no-audit", "--no-fund"], ["run", "compile"]):
        proc = subprocess.run([npm, *step], cwd=work, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (
            f"npm {' '.join(step)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    assert (work / "out" / "extension.js").exists()
    # the compiled settings module, fed VS Code's defaults plus client-only keys
    defaults = {f"stencil.{k}": v for k, v in _contributed().items()} | {
        "stencil.server.command": ["stencil"]
    }
    script = (
        "const s = require('./out/settings.js');"
        f"const values = {json.dumps({k.removeprefix('stencil.'): v for k, v in defaults.items()})};"
        "console.log(JSON.stringify(s.serverSettings({get: (k) => values[k]})));"
    )
    sent = json.loads(
        subprocess.run([node, "-e", script], cwd=work, capture_output=True, text=True, check=True).stdout
    )
    assert Settings().updated(sent, "initializationOptions") == Settings()
