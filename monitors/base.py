"""The Monitor API: static analysis asked at trigger points during decoding.

A monitor (monitor-guided decoding, Agrawal et al. 2023) watches the text being
generated. At every point where an identifier may start it is asked
:meth:`Monitor.restriction`; most points are not triggers and the answer is ``None``
after a cheap look at the last bytes. At a trigger (``obj.``, ``import ``, ``FROM``) the
analyser runs once, its answer is cached by the text, and the identifier that follows
is restricted to the legal ones (see :mod:`monitors.restriction`). A monitor may also
refuse some other bytes (its :attr:`Monitor.gated` ones, asked with
:meth:`Monitor.refused`): the Python monitor refuses ``)`` while a call lacks arguments.

Analysis must never crash or stall a generation: an analyser that raises or runs past
``timeout`` seconds leaves that trigger unrestricted, and the failure is counted in
:attr:`Monitor.stats`.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from monitors.restriction import Restriction

T = TypeVar("T")
_CACHE_ENTRIES = 4096


class AnalysisTimeout(Exception):
    """The analyser did not answer within the monitor's timeout."""


@dataclass
class MonitorStats:
    """What a monitor did during one generation (``Generation.stats["monitors"]``).

    ``triggers``: trigger points analysed; ``restricted``: of those, how many restricted
    the next identifier; ``unknown``: the analyser could not tell (no restriction);
    ``failures``/``timeouts``: the analyser raised or ran out of time (no restriction);
    ``analysis_ms``: time of each analysis.
    """

    triggers: int = 0
    restricted: int = 0
    unknown: int = 0
    failures: int = 0
    timeouts: int = 0
    errors: list[str] = field(default_factory=list)
    analysis_ms: list[float] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        ms = sorted(self.analysis_ms)
        return {
            "triggers": self.triggers,
            "restricted": self.restricted,
            "unknown": self.unknown,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "errors": self.errors[:10],
            "kinds": dict(self.kinds),
            "analysis_ms_p50": ms[len(ms) // 2] if ms else 0.0,
            "analysis_ms_max": ms[-1] if ms else 0.0,
        }


class Monitor(ABC):
    """A static analysis consulted where identifiers start (see module docstring)."""

    name: str = "monitor"
    # Bytes other than identifier starts that this monitor may refuse (``)`` for call
    # arity); :meth:`refused` is asked only before one of them.
    gated: frozenset[int] = frozenset()
    # One analysis at a time per analyser kind, across instances: jedi keeps process-wide
    # state and breaks when two inferences overlap (a timed-out one may still be running).
    _busy: threading.Lock = threading.Lock()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._busy = threading.Lock()

    def __init__(self, *, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self.stats = MonitorStats()
        self._cache: OrderedDict[bytes, Restriction | None] = OrderedDict()
        self._gates: OrderedDict[bytes, frozenset[int]] = OrderedDict()

    def restriction(self, text: bytes) -> Restriction | None:
        """The identifiers allowed to start right after ``text`` (None: no restriction)."""
        return self._cached(self._cache, text, self.analyse, None)

    def refused(self, text: bytes) -> frozenset[int]:
        """The bytes of :attr:`gated` that may not come right after ``text``."""
        if not self.gated:
            return frozenset()
        return self._cached(self._gates, text, self.analyse_gate, frozenset())

    def _cached(self, cache: OrderedDict[bytes, Any], text: bytes, fn: Callable[[bytes], T], free: T) -> T:
        """``fn(text)`` once per text; an analyser that fails or times out answers ``free``."""
        if text in cache:
            cache.move_to_end(text)
            return cache[text]
        try:
            found = fn(text)
        except AnalysisTimeout:
            self.stats.timeouts += 1
            found = free
        except Exception as exc:  # an analyser bug must not end the generation
            self.stats.failures += 1
            self.stats.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            found = free
        cache[text] = found
        if len(cache) > _CACHE_ENTRIES:
            cache.popitem(last=False)
        return found

    @abstractmethod
    def analyse(self, text: bytes) -> Restriction | None:
        """Decide whether an identifier starting after ``text`` is restricted, and to what.

        Called once per distinct ``text`` (the answer is cached). Cheap checks first:
        this runs for every point where an identifier could start.
        """

    def accepts_end(self, text: bytes) -> bool:
        """Whether the output may end right after ``text`` (end-of-sequence allowed):
        a monitor whose names may be bound later (an SQL qualifier used before the
        ``FROM`` that binds it) refuses the end while one is still unbound. Default:
        True."""
        return True

    def analyse_gate(self, text: bytes) -> frozenset[int]:
        """Which bytes of :attr:`gated` may not come right after ``text``; called once per
        distinct ``text`` (cached), only by monitors with a non-empty :attr:`gated`."""
        return frozenset()

    def record(self, kind: str, restriction: Restriction | None, seconds: float) -> Restriction | None:
        """Count one analysed trigger of ``kind`` and pass ``restriction`` through."""
        self.count(kind, restriction is not None, seconds)
        return restriction

    def count(self, kind: str, restricted: bool, seconds: float) -> None:
        """Count one analysis of ``kind`` that took ``seconds``: it restricts or not."""
        s = self.stats
        s.triggers += 1
        s.analysis_ms.append(seconds * 1e3)
        s.kinds[kind] = s.kinds.get(kind, 0) + 1
        if restricted:
            s.restricted += 1
        else:
            s.unknown += 1

    def call_with_timeout(self, fn: Callable[[], T]) -> T:
        """Run the analyser ``fn`` in a worker thread; raise :class:`AnalysisTimeout` after
        ``timeout`` seconds in all, waiting included: while an earlier call (of any
        monitor of this kind, maybe one that timed out) still runs, this one waits for it
        (the analyser is not re-entrant)."""
        deadline = time.perf_counter() + self.timeout
        if not self._busy.acquire(timeout=self.timeout):
            raise AnalysisTimeout(f"an earlier {self.name} analysis still ran after {self.timeout:.1f} s")
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:
                box["error"] = exc
            finally:
                self._busy.release()

        worker = threading.Thread(target=work, name=f"stencil-{self.name}-analysis", daemon=True)
        worker.start()
        worker.join(max(0.0, deadline - time.perf_counter()))
        if worker.is_alive():
            raise AnalysisTimeout(f"{self.name} analysis ran past {self.timeout:.1f} s")
        if "error" in box:
            raise box["error"]
        return box["value"]
