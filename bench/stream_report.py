"""The verdicts and the table of ``bench/streams.py``: each stream mode against frames coded alone
and against the codecs at equal agreement, per clip, as issue 32's floor reads them."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any


def best_at(points: list[dict[str, Any]], level: float) -> dict[str, Any] | None:
    """The cheapest codec point whose agreement is at least ``level``."""
    ok = [p for p in points if p["agree"] >= level]
    return min(ok, key=lambda p: p["bytes"]) if ok else None


def judge(clip: dict[str, Any]) -> dict[str, Any]:
    """Per stream mode: bytes saved against frames coded alone, the floor's two conditions, and
    each codec's cheapest point at the stream's agreement. A codec that reaches that agreement
    at no CRF of the range counts as beaten when even its dearest point (lowest CRF) costs more
    bytes than the stream (``unreached``)."""
    verdict: dict[str, Any] = {}
    alone = clip["alone"]["bytes"]
    for mode in [k for k in clip if k.startswith("stream_")]:
        st = clip[mode]
        v: dict[str, Any] = {"saving_vs_alone": 1 - st["bytes"] / alone}
        v["floor_vs_alone"] = v["saving_vs_alone"] >= 0.7 and st["agree_alone"] >= 0.98
        for name, points in clip["codecs"].items():
            match = best_at(points, st["agree_u"])
            v[f"{name}_at_equal_agreement"] = match or "unreached"
            v[f"fewer_bytes_than_{name}"] = (
                st["bytes"] < match["bytes"]
                if match
                else st["bytes"] < max(p["bytes"] for p in points)
            )
        v["cpu_not_above_alone"] = st["cpu_ms"] <= clip["alone"]["cpu_ms"]
        v["floor_bytes"] = v["floor_vs_alone"] and v.get("fewer_bytes_than_x264", False)
        v["floor"] = v["floor_bytes"] and v["cpu_not_above_alone"]
        best = [v[f"{n}_at_equal_agreement"] for n in clip["codecs"]]
        reached = [b["bytes"] for b in best if isinstance(b, dict)]
        v["third_of_best_codec"] = bool(reached) and st["bytes"] <= min(reached) / 3
        verdict[mode] = v
    return verdict


def finish(summary: dict[str, Any]) -> None:
    clips = summary["clips"]
    for clip in clips.values():
        clip["verdict"] = judge(clip)
    modes = next(iter(clips.values()))["verdict"] if clips else {}
    summary["floor_met_on_every_clip"] = {
        m: all(c["verdict"][m]["floor"] for c in clips.values()) for m in modes
    }
    summary["bytes_floor_met_on_every_clip"] = {
        m: all(c["verdict"][m]["floor_bytes"] for c in clips.values()) for m in modes
    }


def markdown(summary: dict[str, Any]) -> str:
    """The README table: per clip, SPIC alone, the lossless stream and the guarded one, and
    x264/x265/AV1 at each stream's agreement; whether the floor holds for each."""
    rows = [
        "| clip | frames | SPIC alone B (agree U) | lossless stream B (vs alone, agree alone) "
        "| x264 / x265 / AV1 B at its agreement | guarded stream B (vs alone, agree alone) "
        "| x264 / x265 / AV1 B at its agreement | edge CPU ms/frame: alone / lossless / guarded "
        "| floor: lossless / guarded |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in summary["clips"].items():
        alone = c["alone"]
        cells = [f"{name} ({c['camera']})", str(c["frames"])]
        cells.append(f"{alone['bytes']:.0f} ({100 * alone['agree_u']:.1f}%)")
        floors = []
        for mode in ("stream_m1", "stream_guard"):
            st, v = c.get(mode), c["verdict"].get(mode)
            if st is None or v is None:
                cells += ["-", "-"]
                floors.append("-")
                continue
            saved = 100 * (1 - st["bytes"] / alone["bytes"])
            cell = f"{st['bytes']:.0f} (−{saved:.0f}%, {100 * st['agree_alone']:.1f}%)"
            hb = c.get(f"{mode}_heartbeat")
            if hb is not None:
                cell += f"; {hb['bytes']:.0f} (−{100 * (1 - hb['bytes'] / alone['bytes']):.0f}%)"
                cell += f" with a skip every {hb['heartbeat_s']:g} s"
            cells.append(cell)
            at = []
            for codec in ("x264", "x265", "av1"):
                p = v.get(f"{codec}_at_equal_agreement")
                at.append(f"{p['bytes']:.0f}" if isinstance(p, dict) else "not reached")
            cells.append(" / ".join(at))
            floors.append("met" if v["floor"] else "not met")
        cpu = [c[k]["cpu_ms"] for k in ("alone", "stream_m1", "stream_guard") if k in c]
        cells.append(" / ".join(f"{t:.1f}" for t in cpu))
        cells.append(" / ".join(floors))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def read_text(path: Path) -> str:
    """A summary, gzipped when its name ends in .gz (how docs/results keeps it)."""
    return gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()


def write_text(path: Path, text: str) -> None:
    data = text.encode()
    path.write_bytes(gzip.compress(data, 9, mtime=0) if path.suffix == ".gz" else data)
