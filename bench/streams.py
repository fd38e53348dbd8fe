"""Streams against frames coded alone and against the video codecs cameras ship (issue 32).

    PYTHONPATH=. .venv/bin/python bench/streams.py --videos DIR --reference DIR [--fps 5]

On each fixed-camera clip, frames sampled at ``--fps`` and cut to the bundle's 224² center crop
(``shared.preprocess``, the pixels the SPIC encoder sees) are coded four ways:

* SPIC alone: every frame a version-1 frame at ``--qf`` (rANS);
* SPIC stream: ``shared.stream.StreamEncoder`` (key every ``--key-interval``), for each
  ``--position-changes`` N (1: lossless; more: a latent position is re-sent only when N of its
  channels changed, a frame with none is a skip);
* SPIC stream with the semantic guard (``shared.stream_guard``, ``spic-edge stream --guard``):
  the cheapest target symbols that keep the bundle's answer, the classifier's runs counted in
  the edge CPU; and its mildest target sent unchecked on every frame (``stream_dead_zone``: the
  same edge CPU as a lossless stream, what the answers cost without the classifier);
* SPIC stream steered by the cloud's answers (``stream_feedback_T``): no classifier on the edge;
  the camera sends that mildest target while the margin (top-1 minus top-2 logit) the cloud
  reported for the frame it holds is above ``T``, else the exact symbols (``FEEDBACK_MARGINS``);
* x264, x265 and AV1 (SVT-AV1) through ffmpeg on the same crops at the same frame rate, a key
  frame every ``--key-interval`` frames, over the CRFs in ``CRFS``; bytes: the elementary stream.

Agreement is each pipeline's answer on the compressed frame against its own answer on the
uncompressed crop: SPIC (alone or stream) against SPIC-U (the bundle's classifier on the
unquantized latent), each codec's decoded frame read by the pixel reference (``--reference``,
e.g. reference-imagenette-ema, written by ``make old-codecs``) against the reference on the crop.
A stream is also held to the frames coded alone (``agree_alone``: the floor asks ≥ 98%). The
codec "at equal agreement" is its cheapest CRF point whose agreement is at least the stream's.
Edge CPU is process time per frame (preprocess, encoder, quantize, entropy code; ffmpeg's
encoder for the codecs, from the children's rusage). The JSON summary is the last line.

``--reuse SUMMARY`` keeps the codec points (bytes, CPU, agreement) a saved summary has for the
same clips at the same settings and encodes only the CRFs it lacks; SPIC is measured again.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.stream_report import finish, judge, markdown, read_text, write_text
from edge_client.video import frames
from evaluation.reference import ReferenceClassifier
from shared.bundles import DEFAULT_BUNDLE
from shared.preprocess import resize_center_crop
from shared.runtime import SpicCodec
from shared.stream import StreamEncoder
from shared.stream_guard import guard_for, target

CLIPS = {  # file -> what the camera is (SOURCE.md beside the clips says where they come from)
    "bgslibrary_video.avi": "fixed, road from above",
    "bgslibrary_video02.avi": "fixed, highway CCTV",
    "bgslibrary_video03.avi": "fixed, road from an overpass",
    "intel_one-by-one-person-detection.mp4": "fixed, indoor",
    "intel_car-detection.mp4": "drifts up to ~12 px, parking lot",
    "intel_bottle-detection.mp4": "nearly fixed, tabletop",
}
CODECS = {  # name -> (ffmpeg encoder args, elementary stream format); key frames via -g
    "x264": (["-c:v", "libx264", "-preset", "medium"], "h264"),
    "x265": (["-c:v", "libx265", "-preset", "medium", "-x265-params", "log-level=error"], "hevc"),
    "av1": (["-c:v", "libsvtav1", "-preset", "8"], "obu"),
}
CRFS = {"x264": [28, 32, 36, 40, 44, 48, 51], "x265": [28, 32, 36, 40, 44, 48, 51]}
CRFS["av1"] = [40, 46, 52, 56, 60, 63]
DEAD_ZONE = (0.1, 1)  # shared.stream_guard.TARGETS' last: re-send what moved 0.1 step past a cell
# Logit margins for the feedback modes: a sweep, not a choice (no threshold was picked on these
# clips); the cloud's runs are not edge CPU.
FEEDBACK_MARGINS = (0.5, 1.0, 2.0)
HEARTBEAT_S = 2.0  # the guarded stream's heartbeat mode: a skip at most every 2 s of video


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_codec(name: str, crf: int, crops: np.ndarray, fps: float, gop: int) -> dict[str, Any]:
    """Encode the crops with one codec at one CRF, decode them; bytes, CPU and decoded crops."""
    args, fmt = CODECS[name]
    n, h, w, _ = crops.shape
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"clip.{fmt}"
        cpu0 = children_cpu()
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24"]
            + ["-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "-", *args, "-crf", str(crf)]
            + ["-g", str(gop), "-pix_fmt", "yuv420p", "-f", fmt, str(out)],
            input=crops.tobytes(),
            check=True,
            capture_output=True,
        )
        cpu = children_cpu() - cpu0
        size = out.stat().st_size
        raw = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(out), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
            check=True,
            capture_output=True,
        ).stdout
    decoded = np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)
    if len(decoded) != n:
        raise RuntimeError(f"{name} CRF {crf}: {len(decoded)} frames decoded of {n}")
    return {"bytes": size / n, "cpu_ms": 1e3 * cpu / n, "decoded": decoded}


def agree(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def spic_modes(
    codec: SpicCodec,
    crops: np.ndarray,
    qf: int,
    key_interval: int,
    modes: list[int],
    fps: float,
) -> dict[str, Any]:
    """Alone and stream, with their predictions and edge CPU per frame."""
    m, size = codec.manifest, (crops.shape[2], crops.shape[1])
    ys, t_net = [], 0.0
    for crop in crops:
        t0 = time.process_time()
        ys.append(codec.analyse(to_array_uint8(crop), enhancement=False))
        t_net += time.process_time() - t0
    y = np.stack(ys)
    t0 = time.process_time()
    symbols = [m.quantize_latent(v, qf) for v in y]
    t_quant = time.process_time() - t0
    t0 = time.process_time()
    alone = [codec.compress(v, qf, "rans", size)[1] for v in y]
    t_alone = time.process_time() - t0
    pred_u = codec.classify_latents(y.astype(np.float32)).argmax(1)
    pred_q = codec.classify_latents(codec.latents(symbols, [qf] * len(y))).argmax(1)
    n = len(y)
    out: dict[str, Any] = {
        "alone": {
            "bytes": float(np.mean([len(f) for f in alone])),
            "agree_u": agree(pred_q, pred_u),
            "cpu_ms": 1e3 * (t_net + t_alone) / n,
        },
        "pred_u": pred_u,
        "symbols": symbols,
    }
    for mc in modes:
        enc = StreamEncoder(codec.codebook, qf, key_interval=key_interval, position_changes=mc)
        t0 = time.process_time()
        made = [enc.encode(s, size) for s in symbols]
        t_stream = time.process_time() - t0
        pred = codec.classify_latents(codec.latents([f.symbols for f in made], [qf] * n))
        pred = pred.argmax(1)
        kinds = [f.kind for f in made]
        deltas = [len(f.data) - 22 for f in made if f.kind == "delta"]
        out[f"stream_m{mc}"] = {
            "position_changes": mc,
            "bytes": float(np.mean([len(f.data) for f in made])),
            "agree_alone": agree(pred, pred_q),
            "agree_u": agree(pred, pred_u),
            "cpu_ms": 1e3 * (t_net + t_quant + t_stream) / n,
            "frames": {k: kinds.count(k) for k in ("key", "delta", "skip")},
            "delta_payload_bytes": float(np.mean(deltas)) if deltas else 0.0,
            "unchanged_symbols": float(
                np.mean([np.mean(a == b) for a, b in zip(symbols, symbols[1:], strict=False)])
            ),
        }
    # the guard; its mildest target unchecked on every frame; that target steered by the margin
    # of the answer the cloud holds (neither with a classifier on the edge)
    runs: dict[str, dict[str, Any]] = {"stream_guard": {}, "stream_dead_zone": {"dead_zone": True}}
    runs |= {f"stream_feedback_{t:g}": {"feedback": t} for t in FEEDBACK_MARGINS}
    for name, how in runs.items():
        out[name] = guarded(codec, y, symbols, qf, key_interval, size, t_net + t_quant, **how)
        gp = out[name].pop("pred")
        out[name]["agree_alone"] = agree(gp, pred_q)
        out[name]["agree_u"] = agree(gp, pred_u)
        if name != "stream_guard":
            for k in ("sizes", "kinds"):
                out[name].pop(k)
    # the same stream with a skip sent at most every HEARTBEAT_S (spic-edge stream --heartbeat):
    # the same symbols and answers; a withheld skip costs nothing, the frame after it the same
    sizes = out["stream_guard"].pop("sizes")
    kinds, since, sent = out["stream_guard"].pop("kinds"), 0, 0
    every = max(1, round(HEARTBEAT_S * fps))
    for kind, size_b in zip(kinds, sizes, strict=True):
        since += 1
        if kind == "skip" and since < every:
            continue
        since, sent = 0, sent + size_b
    out["stream_guard_heartbeat"] = {
        **{k: out["stream_guard"][k] for k in ("agree_alone", "agree_u", "cpu_ms")},
        "bytes": sent / n,
        "heartbeat_s": HEARTBEAT_S,
    }
    return out


def guarded(
    codec: SpicCodec,
    y: np.ndarray,
    symbols: list[np.ndarray],
    qf: int,
    key_interval: int,
    size: tuple[int, int],
    t_before: float,
    dead_zone: bool = False,
    feedback: float | None = None,
) -> dict[str, Any]:
    """The stream with the semantic guard: its bytes, answers and edge CPU (the encoder's share
    ``t_before``, then the guard's classifier runs and the delta coding). With ``dead_zone``, the
    guard's mildest target (``DEAD_ZONE``) sent on every frame with no classifier on the edge:
    what the guard's runs buy. With ``feedback``, that target only while the margin of the
    cloud's answer on the frame it holds (which a camera reads from the cloud's replies) is above
    it; the cloud's classifier runs are timed apart, not edge CPU."""
    guard = guard_for(codec, qf)
    assert guard is not None, f"QF {qf} frames carry a layer: no guard"
    enc = StreamEncoder(codec.codebook, qf, key_interval=key_interval)
    t0, t_cloud, margin = time.process_time(), 0.0, -np.inf
    made = []
    for v, s in zip(y, symbols, strict=True):
        held = enc.reference
        if not dead_zone and feedback is None:
            chosen = guard.choose(v, s, held, qf)
        elif held is not None and (dead_zone or (feedback is not None and margin > feedback)):
            chosen = target(v[: s.shape[0]], held, qf, *DEAD_ZONE)
        else:
            chosen = s
        made.append(enc.encode(chosen, size))
        if feedback is not None:
            t1 = time.process_time()
            p = np.sort(codec.classify_latents(codec.latents([made[-1].symbols], [qf]))[0])
            margin = float(np.log(p[-1]) - np.log(max(p[-2], 1e-30)))  # = the logits' difference
            t_cloud += time.process_time() - t1
    t_guard = time.process_time() - t0 - t_cloud
    sent = [f.symbols for f in made]
    n = len(made)
    # the guard's answer is 2 · most probable class + the unknown verdict (shared.stream_guard)
    answers = guard.answers(codec.latents(sent, [qf] * n))
    exact = guard.answers(codec.latents(symbols, [qf] * n))
    kinds = [f.kind for f in made]
    return {
        "bytes": float(np.mean([len(f.data) for f in made])),
        # argmax (the floor's measure) and the whole answer, unknown included
        "pred": answers // 2,
        "agree_answer_alone": agree(answers, exact),
        "cpu_ms": 1e3 * (t_before + t_guard) / n,
        "classifier_runs_per_frame": guard.runs / n,
        "targets": guard.chosen,
        "frames": {k: kinds.count(k) for k in ("key", "delta", "skip")},
        "kinds": kinds,
        "sizes": [len(f.data) for f in made],
    }


def to_array_uint8(crop: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(crop.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def conditioned_tables(symbols: dict[str, list[np.ndarray]], qf: int) -> dict[str, float]:
    """Bytes per delta payload of tables P(symbol | previous symbol, channel), fitted on the other
    clips and applied to each (the ideal code length, no coder overhead): what shipping such
    tables would buy over ``shared.stream``'s prior."""
    k = qf + 1

    def counts(seq: list[np.ndarray]) -> np.ndarray:
        s = np.stack(seq).astype(np.int64)
        a, b = s[:-1], s[1:]
        c = np.broadcast_to(np.arange(s.shape[1])[None, :, None, None], a.shape)
        out = np.zeros((s.shape[1], k, k))
        np.add.at(out, (c.ravel(), a.ravel(), b.ravel()), 1)
        return out

    per = {clip: counts(seq) for clip, seq in symbols.items()}
    result = {}
    for clip, seq in symbols.items():
        fit = np.sum([v for c, v in per.items() if c != clip], axis=0) + 0.5
        p = fit / fit.sum(2, keepdims=True)
        result[clip] = float(-(per[clip] * np.log2(p)).sum() / 8 / (len(seq) - 1))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=Path, help="folder of the clips")
    ap.add_argument("--clips", nargs="+", default=list(CLIPS))
    ap.add_argument("--reference", type=Path, help="pixel reference bundle")
    ap.add_argument("--render", type=Path, help="a saved summary: judge it again, print the table")
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--max-frames", type=int, default=300)
    ap.add_argument("--qf", type=int, default=4)
    ap.add_argument("--key-interval", type=int, default=300)
    ap.add_argument("--position-changes", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--codecs", nargs="*", default=list(CODECS))
    ap.add_argument("--out", type=Path, help="also write the summary here")
    ap.add_argument("--reuse", type=Path, help="a saved summary: keep its codec points")
    args = ap.parse_args()
    if args.render:
        summary = json.loads(read_text(args.render))
        finish(summary)
        write_text(args.render, json.dumps(summary, indent=1) + "\n")
        print(markdown(summary))
        print(json.dumps(summary))
        return
    if args.videos is None or args.reference is None:
        ap.error("--videos and --reference are needed to measure")
    codec = SpicCodec(args.bundle)
    ref = ReferenceClassifier(args.reference, threads=1)
    kept: dict[str, Any] = {}
    if args.reuse:
        old = json.loads(read_text(args.reuse))
        same = ("fps", "qf", "key_interval", "crop")
        ours = {"fps": args.fps, "qf": args.qf, "key_interval": args.key_interval}
        ours["crop"] = codec.manifest.preprocessing.size
        if any(old.get(k) != ours[k] for k in same):
            ap.error(f"--reuse {args.reuse} was measured at other settings")
        kept = old["clips"]
    size = codec.manifest.preprocessing.size
    clips, all_symbols = {}, {}
    for clip in args.clips:
        t0 = time.time()
        crops = []
        for im in frames(str(args.videos / clip), args.fps):
            crops.append(np.asarray(resize_center_crop(im, size, size)))
            if len(crops) >= args.max_frames:
                break
        x = np.stack(crops)
        spic = spic_modes(codec, x, args.qf, args.key_interval, args.position_changes, args.fps)
        all_symbols[clip] = spic.pop("symbols")
        spic.pop("pred_u")
        saved = kept.get(clip, {}).get("codecs", {})
        ref_u: np.ndarray | None = None
        video: dict[str, list[dict[str, Any]]] = {}
        for name in args.codecs:
            video[name] = []
            for crf in CRFS[name]:
                old = [p for p in saved.get(name, []) if p["crf"] == crf]
                if old and kept[clip]["frames"] == len(x):
                    video[name].append(old[0])
                    continue
                if ref_u is None:
                    ref_u = ref.predict(list(x))
                r = run_codec(name, crf, x, args.fps, args.key_interval)
                point = {"crf": crf, "bytes": r["bytes"], "cpu_ms": r["cpu_ms"]}
                point["agree"] = agree(ref.predict(list(r["decoded"])), ref_u)
                video[name].append(point)
        clips[clip] = {
            "camera": CLIPS.get(clip, "?"),
            "frames": len(x),
            **spic,
            "codecs": video,
            "seconds": round(time.time() - t0, 1),
        }
        clips[clip]["verdict"] = judge(clips[clip])
        print(json.dumps({"clip": clip, **clips[clip]}), flush=True)
    cond = conditioned_tables(all_symbols, args.qf) if len(all_symbols) > 1 else {}
    summary = {
        "benchmark": "streams",
        "command": "PYTHONPATH=. python bench/streams.py " + " ".join(sys.argv[1:]),
        "bundle": codec.manifest.name,
        "model_id": codec.model_id,
        "reference": f"{ref.manifest.name} {ref.manifest.model_id}",
        "reused_codec_points_from": str(args.reuse) if args.reuse else None,
        "fps": args.fps,
        "qf": args.qf,
        "key_interval": args.key_interval,
        "crop": size,
        "clips": clips,
        "conditioned_tables_loo_bytes": cond,
    }
    finish(summary)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.out, json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
