"""One process-wide cache of per-state results (token ids, bool rows, distances),
bounded in bytes.

Why one cache for the whole process: a state's entry over a 128k vocabulary holds up to
a few MB, a long string visits a new state per character, and a process keeps dozens of
compiled constraints (the compile caches). Bounds per constraint multiplied by the
number of constraints grew a MaskBench worker past 10 GB; one budget shared by all, most
recently used kept, cannot. An evicted entry is recomputed on its next use.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

CAPACITY_BYTES = 1 << 30  # 1 GiB for every constraint of the process together


class StateCache:
    """A most-recently-used map whose values carry their size in bytes."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity = capacity_bytes
        self.bytes = 0
        self._data: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._owners = itertools.count()

    def owner(self) -> int:
        """A key prefix for one compiled constraint, never reused (``id()`` may be)."""
        return next(self._owners)

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            self._data.move_to_end(key)
            return hit[0]

    def put(self, key: Hashable, value: Any, nbytes: int) -> Any:
        """Keep ``value`` (of ``nbytes``), evicting the least recent entries; returns it."""
        with self._lock:
            if key not in self._data:
                self._data[key] = (value, nbytes)
                self.bytes += nbytes
                while self.bytes > self.capacity and len(self._data) > 1:
                    _, (_, size) = self._data.popitem(last=False)
                    self.bytes -= size
        return value


STATE_CACHE = StateCache(CAPACITY_BYTES)
