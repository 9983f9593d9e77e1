"""The process-wide state cache keeps to its byte budget, most recent entries kept."""

from __future__ import annotations

from grammars.state_cache import StateCache


def test_evicts_least_recent_to_stay_in_budget():
    cache = StateCache(capacity_bytes=100)
    a, b = cache.owner(), cache.owner()
    assert a != b
    cache.put((a, "allowed", 1), "one", 40)
    cache.put((b, "allowed", 1), "two", 40)
    assert cache.get((a, "allowed", 1)) == "one"  # now the most recent
    cache.put((a, "row", 2), "three", 40)
    assert cache.bytes <= 100
    assert cache.get((b, "allowed", 1)) is None  # the least recent went
    assert cache.get((a, "allowed", 1)) == "one" and cache.get((a, "row", 2)) == "three"
    cache.put((a, "row", 3), "huge", 500)  # larger than the budget: kept alone
    assert cache.get((a, "row", 3)) == "huge" and cache.bytes == 500
