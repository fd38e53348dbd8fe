"""What reading video costs the edge: ffmpeg's CPU (the child's rusage) and the pipe read in
Python, per frame sampled, for ``spic-edge stream`` (``edge_client.video``).

    PYTHONPATH=. .venv/bin/python bench/video_read.py CLIP... [--fps 5]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from edge_client.video import frames


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("clips", nargs="+")
    ap.add_argument("--fps", type=float, default=5.0)
    args = ap.parse_args()
    out = {}
    for clip in args.clips:
        child, own = children_cpu(), time.process_time()
        n = sum(1 for _ in frames(clip, args.fps))
        out[clip] = {
            "frames": n,
            "ffmpeg_cpu_ms": 1e3 * (children_cpu() - child) / n,
            "python_read_ms": 1e3 * (time.process_time() - own) / n,
        }
    print(json.dumps({"benchmark": "video_read", "fps": args.fps, "clips": out}))


if __name__ == "__main__":
    main()
