"""The PNGs of stored frames' reconstructions, kept in memory: a bounded LRU, counted.

A reconstruction costs a decoder run in the heavy lane; the dashboard asks for the same few frames
again and again. Each lookup counts as a hit or a miss, and each entry pushed out by the bound as an
eviction, in ``spic_reconstruction_cache`` (so a bound too small for the traffic shows).
"""

from __future__ import annotations

from collections import OrderedDict

from cloud_service.metrics import Metrics


class ReconstructionCache:
    """frame id -> PNG bytes, the most recently used last; at most ``bound`` entries (0: none)."""

    def __init__(self, bound: int, metrics: Metrics) -> None:
        self.bound = bound
        self._pngs: OrderedDict[int, bytes] = OrderedDict()
        self._counts = metrics.reconstruction_cache

    def __len__(self) -> int:
        return len(self._pngs)

    def get(self, frame_id: int) -> bytes | None:
        png = self._pngs.get(frame_id)
        if png is None:
            self._counts.labels("miss").inc()
            return None
        self._pngs.move_to_end(frame_id)
        self._counts.labels("hit").inc()
        return png

    def put(self, frame_id: int, png: bytes) -> None:
        if not self.bound:
            return
        self._pngs[frame_id] = png
        self._pngs.move_to_end(frame_id)
        while len(self._pngs) > self.bound:
            self._pngs.popitem(last=False)
            self._counts.labels("eviction").inc()

    def drop(self, frame_id: int) -> None:
        """Forget a frame (deleted from the store): its PNG must not outlive it."""
        self._pngs.pop(frame_id, None)

    def clear(self) -> None:
        """Forget every picture: a new decoder renders frames otherwise from now on."""
        self._pngs.clear()
