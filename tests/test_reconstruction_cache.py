"""ReconstructionCache: the stored frames' PNGs, bounded, least recently used out first, counted."""

from __future__ import annotations

from cloud_service.idempotency import IdempotencyStore
from cloud_service.metrics import Metrics
from cloud_service.reconstruction_cache import ReconstructionCache
from cloud_service.settings import Settings
from cloud_service.state import ServiceState


def counted(metrics: Metrics) -> dict[str, float]:
    return {
        outcome: metrics.registry.get_sample_value(
            "spic_reconstruction_cache_total", {"outcome": outcome}
        )
        or 0.0
        for outcome in ("hit", "miss", "eviction")
    }


def test_bound_and_least_recently_used_out_first():
    metrics = Metrics()
    cache = ReconstructionCache(2, metrics)
    cache.put(1, b"one")
    cache.put(2, b"two")
    assert cache.get(1) == b"one"  # 1 is now the most recently used: 2 goes first
    cache.put(3, b"three")
    assert len(cache) == 2
    assert cache.get(2) is None
    assert (cache.get(1), cache.get(3)) == (b"one", b"three")
    assert counted(metrics) == {"hit": 3.0, "miss": 1.0, "eviction": 1.0}


def test_put_again_refreshes_and_drop_forgets():
    metrics = Metrics()
    cache = ReconstructionCache(2, metrics)
    cache.put(1, b"a")
    cache.put(2, b"b")
    cache.put(1, b"a2")  # a frame cached again is the newest, not a second entry
    cache.put(3, b"c")
    assert (cache.get(1), cache.get(2)) == (b"a2", None)
    cache.drop(1)
    cache.drop(99)  # not cached: nothing to do
    assert cache.get(1) is None and len(cache) == 1


def test_a_zero_bound_keeps_nothing():
    metrics = Metrics()
    cache = ReconstructionCache(0, metrics)
    cache.put(1, b"png")
    assert len(cache) == 0 and cache.get(1) is None
    assert counted(metrics) == {"hit": 0.0, "miss": 1.0, "eviction": 0.0}


def test_the_state_bounds_it_by_the_settings():
    metrics = Metrics()
    state = ServiceState(Settings(reconstruction_cache=3), metrics, IdempotencyStore())
    assert isinstance(state.reconstructions, ReconstructionCache)
    assert state.reconstructions.bound == 3
    state.reconstructions.get(7)
    assert counted(metrics)["miss"] == 1.0
