"""The server's settings: from ``initializationOptions`` and
``workspace/didChangeConfiguration`` (the VS Code client sends its ``stencil.*`` section).

Unknown keys and wrong types are refused with the key's dotted path, so a typo in an
editor's settings file is reported rather than silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from plugin.api import SAMPLERS
from plugin.errors import OptionError


@dataclass(frozen=True)
class LanguageSettings:
    """Per-language constraint: a grammar (built-in name, Lark text or path), a JSON
    Schema (for JSON documents without ``$schema``), a SQLite database (SQL), and
    whether the static-analysis monitors run (Python: jedi; SQL: the database)."""

    grammar: str | None = None
    schema: dict[str, Any] | str | None = None
    database: str | None = None
    monitors: bool = True


@dataclass(frozen=True)
class Settings:
    """Everything a completion depends on besides the document."""

    model: str | None = None  # HF id or local path; None: the bundled default model
    device: str | None = None  # "cpu", "cuda"; None: CUDA when available
    sampler: str = "awrs"  # greedy AWRS = the masked argmax, at a few checks per token
    max_tokens: int = 32
    stop_at_newline: bool = True  # inline completions end at the end of the line
    context_tokens: int = 1024  # at most this many tokens of the document go to the model
    fim: bool = True  # fill-in-the-middle (prefix and suffix) when the tokenizer has FIM tokens
    refresh_every: int = 4  # re-encode a document's cache, when idle, after this many edits (0: never)
    # "off", "auto" or drafter names joined by commas (plugin.speculation); "auto" by
    # default: copies from the document pay even on line completions now that no draft
    # runs past the line's end (bench/lsp_latency.py, docs/speculative.md); "off" when
    # the sampler is "asap" and speculative is not set (ASAp samples every token itself)
    speculative: str = "auto"
    max_sessions: int = 32  # open documents holding a generation session (LRU beyond)
    analysis_timeout: float = 5.0
    python: LanguageSettings = field(default_factory=lambda: LanguageSettings(grammar="python"))
    json: LanguageSettings = field(default_factory=lambda: LanguageSettings(grammar="json"))
    sql: LanguageSettings = field(default_factory=lambda: LanguageSettings(grammar="sql"))

    def updated(self, raw: Any, where: str = "settings") -> Settings:
        """These settings with the keys of ``raw`` (a dict, maybe nested under
        ``"stencil"``) changed; :class:`OptionError` names a bad key by its path."""
        if raw is None:
            return self
        if not isinstance(raw, dict):
            raise OptionError(f"{where} must be an object, got {type(raw).__name__}")
        if set(raw) == {"stencil"}:
            return self.updated(raw["stencil"], f"{where}.stencil")
        changes: dict[str, Any] = {}
        known = {f.name: f for f in fields(self)}
        for key, value in raw.items():
            path = f"{where}.{key}"
            if key not in known:
                raise OptionError(f"unknown setting {path!r}; known: {', '.join(sorted(known))}")
            current = getattr(self, key)
            if isinstance(current, LanguageSettings):
                changes[key] = _language(current, value, path)
            elif value is None and key in ("model", "device"):
                changes[key] = None
            else:
                changes[key] = _typed(key, value, path)
        out = replace(self, **changes)
        if out.sampler == "asap" and "speculative" not in changes:
            out = replace(out, speculative="off")  # the default follows the sampler
        if out.sampler not in SAMPLERS or out.sampler == "smc":
            raise OptionError(f"{where}.sampler must be one of mask, awrs, asap; got {out.sampler!r}")
        if out.sampler == "asap" and out.speculative != "off":
            raise OptionError(
                f"{where}.speculative must be 'off' with sampler 'asap' (ASAp samples every token itself)"
            )
        return out


_TYPES: dict[str, type | tuple[type, ...]] = {
    "model": str,
    "device": str,
    "sampler": str,
    "max_tokens": int,
    "stop_at_newline": bool,
    "context_tokens": int,
    "fim": bool,
    "refresh_every": int,
    "speculative": str,
    "max_sessions": int,
    "analysis_timeout": (int, float),
}


def _typed(key: str, value: Any, path: str) -> Any:
    want = _TYPES[key]
    if not isinstance(value, want) or (isinstance(value, bool) and want is int):
        raise OptionError(f"{path} must be {getattr(want, '__name__', 'a number')}, got {value!r}")
    if key in ("max_tokens", "context_tokens", "max_sessions") and value < 1:
        raise OptionError(f"{path} must be at least 1, got {value!r}")
    if key == "refresh_every" and value < 0:
        raise OptionError(f"{path} must be 0 (never) or a positive number of edits, got {value!r}")
    if key == "speculative":
        from plugin.speculation import resolve_speculative

        try:
            resolve_speculative(value)
        except OptionError as exc:
            raise OptionError(
                f"{path} must be 'off', 'auto' or drafter names joined by commas ({exc})"
            ) from None
    if key == "analysis_timeout" and value <= 0:
        raise OptionError(f"{path} must be positive, got {value!r}")
    return value


def _language(current: LanguageSettings, value: Any, path: str) -> LanguageSettings:
    if not isinstance(value, dict):
        raise OptionError(f"{path} must be an object, got {value!r}")
    known = {f.name for f in fields(current)}
    for key, item in value.items():
        if key not in known:
            raise OptionError(f"unknown setting {path}.{key!r}; known: {', '.join(sorted(known))}")
        if key == "monitors" and not isinstance(item, bool):
            raise OptionError(f"{path}.monitors must be true or false, got {item!r}")
        if key in ("grammar", "database") and item is not None and not isinstance(item, str):
            raise OptionError(f"{path}.{key} must be a string, got {item!r}")
        if key == "schema" and item is not None and not isinstance(item, dict | str):
            raise OptionError(f"{path}.schema must be an object or a path, got {item!r}")
    return replace(current, **value)
