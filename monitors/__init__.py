"""Static-analysis monitors (monitor-guided decoding): jedi and tree-sitter for Python, a
live SQLite database for SQL. See :mod:`monitors.base` for the API and
:mod:`monitors.matcher` for how monitors compose with a grammar.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monitors.base import AnalysisTimeout, Monitor, MonitorStats
from monitors.matcher import MonitoredConstraint, MonitoredMatcher
from monitors.python import PythonMonitor
from monitors.restriction import Restriction
from monitors.sql import SQLiteMonitor, SQLiteSchema
from plugin.errors import OptionError

MONITOR_NAMES = ("python", "sql")


def build_monitors(
    spec: str | Monitor | Sequence[str | Monitor] | None,
    *,
    project_root: str | Path | None = None,
    file_path: str | Path | None = None,
    prefix: str | bytes | None = None,
    suffix: str | None = None,
    database: str | Path | sqlite3.Connection | None = None,
    timeout: float = 5.0,
) -> list[Monitor]:
    """The monitors named by ``spec`` (``"python"``, ``"sql"``, Monitor objects, or a list).

    A ``database`` adds the SQL monitor even when ``spec`` does not name it. The Python
    monitor needs ``project_root`` (default: the folder of ``file_path``); when
    ``file_path`` exists and its text starts with ``prefix`` (the code before the
    cursor), the rest of the file is spliced after the generated code for jedi. An
    editor, whose buffer may differ from the file on disk, gives that rest as ``suffix``.
    """
    items: list[str | Monitor]
    if spec is None:
        items = []
    elif isinstance(spec, str | Monitor):
        items = [spec]
    else:
        items = list(spec)
    if database is not None and "sql" not in items:
        items.append("sql")
    out: list[Monitor] = []
    for item in items:
        if isinstance(item, Monitor):
            out.append(item)
        elif item == "python":
            out.append(_python_monitor(project_root, file_path, prefix, suffix, timeout))
        elif item == "sql":
            if database is None:
                raise OptionError("monitors='sql' needs database= (a SQLite file or connection)")
            out.append(SQLiteMonitor(database, timeout=timeout))
        else:
            raise OptionError(f"unknown monitor {item!r}; available: {', '.join(MONITOR_NAMES)}")
    return out


def _python_monitor(
    project_root: str | Path | None,
    file_path: str | Path | None,
    prefix: str | bytes | None,
    suffix: str | None,
    timeout: float,
) -> PythonMonitor:
    if project_root is None:
        if file_path is None:
            raise OptionError("monitors='python' needs project_root= (or file_path= inside the project)")
        project_root = Path(file_path).resolve().parent
    if suffix is None:
        suffix = _rest_of_file(project_root, file_path, prefix)
    return PythonMonitor(project_root, file_path, suffix=suffix, timeout=timeout)


def _rest_of_file(project_root: str | Path, file_path: str | Path | None, prefix: str | bytes | None) -> str:
    """The file's text after ``prefix`` when the file on disk starts with it, else ``""``."""
    suffix = ""
    if file_path is not None and prefix:
        path = Path(file_path)
        if not path.is_absolute():
            path = Path(project_root) / path
        try:
            whole = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            whole = ""
        before = prefix.decode("utf-8", "replace") if isinstance(prefix, bytes) else prefix
        if whole.startswith(before):
            suffix = whole[len(before) :]
    return suffix


def with_monitors(constraint: Any, monitors: list[Monitor], vocab: Any) -> Any:
    """``constraint ∧ monitors`` (the constraint itself when there are no monitors)."""
    if not monitors:
        return constraint
    return MonitoredConstraint(constraint, monitors, vocab)


__all__ = [
    "MONITOR_NAMES",
    "AnalysisTimeout",
    "Monitor",
    "MonitorStats",
    "MonitoredConstraint",
    "MonitoredMatcher",
    "PythonMonitor",
    "Restriction",
    "SQLiteMonitor",
    "SQLiteSchema",
    "build_monitors",
    "with_monitors",
]
