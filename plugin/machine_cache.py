"""Facts measured once per machine and kept in ``$STENCIL_CACHE``: which kernel a matrix
product should use (:mod:`plugin.linear_kernels`), what a forward costs by the tokens it
reads (:mod:`plugin.speculation.forward_cost`).

Such a measurement depends on the CPU (or GPU), torch, the thread count and the model's
shapes, not on the weights' values, so one JSON file per kind of fact holds an entry
per key built from those; a fresh process reads it instead of measuring again. A file
that cannot be read is measured over; one that cannot be written costs only the
measurement next time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

import torch

from plugin.paths import cache_dir

log = logging.getLogger(__name__)


def machine_key(**facts: Any) -> str:
    """A short key for ``facts`` on this machine (CPU model and flags, core count,
    torch, its thread count, the CUDA device when there is one)."""
    everything = {
        "cpu": _cpu_identity(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        **facts,
    }
    return hashlib.sha256(json.dumps(everything, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cpu_identity() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"{platform.machine()} {platform.processor()} {os.cpu_count()}"
    lines = [line for line in text.splitlines() if line.startswith(("model name", "flags"))]
    return f"{os.cpu_count()} " + " ".join(sorted(set(lines)))


def read_entry(file_name: str, key: str) -> dict[str, Any] | None:
    """The entry ``key`` of ``$STENCIL_CACHE/file_name``, or None."""
    try:
        entries = json.loads((cache_dir() / file_name).read_text())
    except (OSError, ValueError):
        return None
    entry = entries.get(key) if isinstance(entries, dict) else None
    return entry if isinstance(entry, dict) else None


def write_entry(file_name: str, key: str, entry: dict[str, Any]) -> None:
    """Store ``entry`` under ``key`` in ``$STENCIL_CACHE/file_name`` (atomically)."""
    path = cache_dir() / file_name
    try:
        entries = json.loads(path.read_text()) if path.exists() else {}
        if not isinstance(entries, dict):
            entries = {}
    except (OSError, ValueError):
        entries = {}
    entries[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=1))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot save %s: %s", path, exc)
