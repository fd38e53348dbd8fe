"""Entropy-codec benchmark: throughput and rate on a 32x28x28 latent of discretized Laplacians.

    .venv/bin/python bench/codec.py [--repeats 30] [--tables frame|trained]

Two settings, about 2 bits/symbol and about 0.3 bits/symbol of empirical entropy. For each codec:
encode and decode throughput on one thread (M symbols/s, median of repeats), payload bits per
symbol, the frame's empirical entropy (the ideal for static per-channel tables), the Huffman
code's own optimum (sum of its codeword lengths), and the 34-byte frame overhead.

``--tables frame`` (default) builds the tables from the coded frame itself, so the gap to the
empirical entropy is the coder's own overhead. ``--tables trained`` builds them from 64 other
draws of the same source, as a shipped model does; the extra gap is then the model mismatch.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from shared import bitstream  # noqa: E402
from shared.codecs import CODECS, make_codec  # noqa: E402
from shared.codecs.huffman import HuffmanCodec  # noqa: E402
from shared.tuning import tune_malloc  # noqa: E402

SHAPE = (32, 28, 28)
QF = 128
# Target empirical entropies (bits/symbol); the Laplace scale for each is found by bisection.
SETTINGS = {"2bit": 2.0, "0.3bit": 0.3}


def draw(scale: float, rng: np.random.Generator, n: int = 1) -> np.ndarray:
    # Channels differ in spread (0.5x..1.5x) as real latents do.
    spread = np.linspace(0.5, 1.5, SHAPE[0])[None, :, None, None]
    x = rng.laplace(QF / 2, scale * spread, size=(n, *SHAPE))
    return np.clip(np.round(x), 0, QF).astype(np.uint16)


def counts(symbols: np.ndarray) -> np.ndarray:
    """(..., C, H, W) -> (C, QF + 1) counts over everything but the channel axis."""
    per_channel = np.moveaxis(symbols, -3, 0).reshape(SHAPE[0], -1)
    return np.stack([np.bincount(ch, minlength=QF + 1) for ch in per_channel])


def empirical_entropy_bits(symbols: np.ndarray) -> float:
    t = counts(symbols).astype(np.float64)
    p = t / t.sum(axis=1, keepdims=True)
    return float(-(t * np.log2(np.where(p > 0, p, 1))).sum())


def scale_for_entropy(target: float, seed: int) -> float:
    lo, hi = 0.01, 20.0
    for _ in range(40):
        mid = (lo * hi) ** 0.5
        sample = draw(mid, np.random.default_rng(seed), 4)
        if empirical_entropy_bits(sample) / sample.size < target:
            lo = mid
        else:
            hi = mid
    return (lo * hi) ** 0.5


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--tables", choices=("frame", "trained"), default="frame")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-tune-malloc", action="store_true", help="measure with glibc's defaults")
    args = ap.parse_args()
    tuned = False if args.no_tune_malloc else tune_malloc()
    rng = np.random.default_rng(args.seed)
    n = int(np.prod(SHAPE))
    results = []
    for setting, target in SETTINGS.items():
        scale = scale_for_entropy(target, args.seed + 1)
        symbols = draw(scale, rng)[0]
        tables = counts(symbols) if args.tables == "frame" else counts(draw(scale, rng, 64))
        entropy = empirical_entropy_bits(symbols)
        for name in sorted(CODECS):
            codec = make_codec(name, tables)
            payload = codec.encode(symbols)
            assert np.array_equal(codec.decode(payload, SHAPE), symbols)
            t_enc = median_seconds(lambda c=codec, s=symbols: c.encode(s), args.repeats)
            t_dec = median_seconds(lambda c=codec, p=payload: c.decode(p, SHAPE), args.repeats)
            row = {
                "setting": setting,
                "codec": name,
                "tables": args.tables,
                "symbols": n,
                "encode_msym_s": round(n / t_enc / 1e6, 2),
                "decode_msym_s": round(n / t_dec / 1e6, 2),
                "payload_bits_per_symbol": round(8 * len(payload) / n, 4),
                "empirical_entropy_bits_per_symbol": round(entropy / n, 4),
                "payload_over_entropy_pct": round(100 * (8 * len(payload) / entropy - 1), 2),
                "frame_overhead_bytes": bitstream.OVERHEAD,
                "frame_overhead_pct_of_frame": round(
                    100 * bitstream.OVERHEAD / (bitstream.OVERHEAD + len(payload)), 2
                ),
            }
            if isinstance(codec, HuffmanCodec):
                optimum = codec.code_bits(symbols)
                row["huffman_optimum_bits_per_symbol"] = round(optimum / n, 4)
                row["payload_over_huffman_optimum_pct"] = round(
                    100 * (8 * len(payload) / optimum - 1), 2
                )
            results.append(row)
            print(
                f"{setting:7s} {name:8s} enc {row['encode_msym_s']:7.2f} M/s  dec {row['decode_msym_s']:7.2f} M/s  "
                f"{row['payload_bits_per_symbol']:.4f} bits/sym  entropy {row['empirical_entropy_bits_per_symbol']:.4f}  "
                f"(+{row['payload_over_entropy_pct']:.2f}%)"
            )
    print(
        json.dumps(
            {
                "benchmark": "codec",
                "shape": list(SHAPE),
                "qf": QF,
                "malloc_tuned": tuned,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
