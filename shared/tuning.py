"""Process-level memory tuning, opt-in for programs (never done on import).

The vectorized codecs make a handful of 100 kB-1 MB temporaries per frame. glibc serves blocks
that large with mmap and hands them back on free, so every frame pays fresh page faults: measured
here (bench/codec.py, 2 bits/symbol) Huffman encode ran 4x and decode 2x slower than with the
blocks kept in the heap. ``tune_malloc`` raises glibc's mmap and trim thresholds, the same as
setting MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ before start. Elsewhere it does nothing.
The edge and the benchmarks use it; the cloud does not, because it must give memory back after a
large request (``release_memory``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 256 << 20  # blocks below 256 MiB stay in the heap; memory is reused, not leaked


def tune_malloc() -> bool:
    """Keep large temporaries in the heap. Returns True if glibc accepted the settings."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(M_MMAP_THRESHOLD, KEEP_BYTES) == 1
    return bool(ok and mallopt(M_TRIM_THRESHOLD, 2 * KEEP_BYTES) == 1)


def release_memory() -> bool:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``); elsewhere a no-op.

    A service calls it after a large request, so its resident memory returns to the baseline
    instead of staying at the request's peak. Returns True if glibc released anything.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False
