"""Where Stencil keeps its caches (dequantized models, constraint indexes)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$STENCIL_CACHE`` if set, else ``~/.cache/stencil``."""
    root = os.environ.get("STENCIL_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "stencil"
