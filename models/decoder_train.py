"""``spic-decoder train``: a better decoder for the bits already sent.

The codec (encoder, quantizer, entropy model) stays frozen, so its id and every frame in the
field stay as they are; only the cloud's picture changes. Training reads the cached encoder
outputs (``models.decoder_cache``), quantizes each batch at a QF drawn at random from the band
(so one decoder serves the band), decodes random latent crops (``--crop`` latent positions, 16x
that in pixels) and fits the crop of the image the encoder saw. The learning rate follows a
cosine over the wall-clock budget (``--minutes``) or ``--steps``, whichever ends first, so a run
on a shared CPU ends on time with a decayed rate. Then the decoder is exported to ONNX (input
``latent``, output ``image`` in [0, 1], as the bundle's decoder.onnx), measured on a seeded val
subset through onnxruntime, and sealed into a decoder folder (``shared.decoders``).
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from models.data import split_folder
from models.decoder_cache import LatentCache, build_split, open_cache
from models.decoder_measure import graph_decoder, measure, quantized
from models.decoder_net import LOSSES, DecoderConfig, LatentDecoder, decoder_loss, load_shipped
from shared.decoders import DecoderManifest, DecoderMeasured, write_decoder
from shared.manifest import BundleFile
from shared.quantize import check_qf
from shared.runtime import SpicCodec

OPSET = 17


def batches(cache: LatentCache, qfs: list[int], batch: int, crop: int, rng: np.random.Generator):
    """Endless (ŷ crop, image crop) batches: a random image, QF of the band and latent window."""
    n, _, h, w = cache.y.shape
    s = cache.images.shape[1] // h  # pixels per latent position (the codec's stride)
    while True:
        idx = np.sort(rng.choice(n, batch, replace=False))  # sorted: memmap reads in order
        ys, xs = rng.integers(0, h - crop + 1, batch), rng.integers(0, w - crop + 1, batch)
        y = np.stack(
            [
                np.asarray(cache.y[i, :, a : a + crop, b : b + crop])
                for i, a, b in zip(idx, ys, xs, strict=True)
            ]
        )
        x = np.stack(
            [
                cache.images[i, a * s : (a + crop) * s, b * s : (b + crop) * s]
                for i, a, b in zip(idx, ys, xs, strict=True)
            ]
        )
        qf = int(rng.choice(qfs))
        yield (
            quantized(torch.from_numpy(y), qf),
            torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0,
        )


def export(model: LatentDecoder, path: Path, channels: int) -> None:
    model.eval()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice is noise
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.rand(1, channels, 4, 4),),
            str(path),
            input_names=["latent"],
            output_names=["image"],
            dynamic_axes={
                "latent": {0: "batch", 2: "height", 3: "width"},
                "image": {0: "batch", 2: "height", 3: "width"},
            },
            opset_version=OPSET,
            dynamo=False,
        )


def train(a: argparse.Namespace) -> int:
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    codec = SpicCodec(a.codec)
    qfs = [check_qf(int(q)) for q in a.qfs.split(",")]
    bad = [
        q for q in qfs if q not in codec.manifest.qfs or codec.manifest.decoder_role(q) != "decoder"
    ]
    if bad:
        raise SystemExit(f"QFs {bad}: not base-latent QFs of {codec.manifest.name}")
    cache_dir = Path(a.cache or Path(a.out).parent / "decoder-cache")
    train_set = open_cache(codec, a.data, cache_dir, "train")
    val_set = open_cache(codec, a.data, cache_dir, "val")
    c = codec.manifest.latent.channels
    shipped_channels = codec.manifest.architecture_config.get("dec_channels", [128, 64, 32])
    cfg = DecoderConfig(c, list(shipped_channels), a.width, a.blocks)
    model = LatentDecoder(cfg)
    if a.init == "bundle":
        load_shipped(model, codec.path / codec.manifest.files["decoder"].path)
    # The shipped path is already trained: a smaller rate keeps it from being thrown off while
    # the new path is still zero.
    shipped = [p for n, p in model.named_parameters() if n.startswith("net.")]
    context = [p for n, p in model.named_parameters() if not n.startswith("net.")]
    groups = [{"params": context, "lr": a.lr}, {"params": shipped, "lr": a.lr * a.shipped_lr}]
    opt = torch.optim.Adam(groups)
    base = [g["lr"] for g in opt.param_groups]
    t0, step, avg = time.time(), 0, None
    model.train()
    for y, x in batches(train_set, qfs, a.batch, a.crop, rng):
        done = max(step / a.steps, (time.time() - t0) / (60 * a.minutes))
        if done >= 1:
            break
        # A linear warm-up first: Adam's first steps move every weight by about the full rate,
        # which knocks the warm-started path off its 18 dB before the moments settle.
        warm = min(1.0, (step + 1) / a.warmup)
        for g, lr in zip(opt.param_groups, base, strict=True):
            g["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * done))
        loss = decoder_loss(model(y), x, a.loss)
        opt.zero_grad()
        loss.backward()
        # One bad batch (a QF 1 crop of a busy scene) must not throw the warm start away.
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        opt.step()
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        step += 1
        if step % a.log_every == 0:
            print(f"step {step} {time.time() - t0:.0f}s loss {avg:.5f}", flush=True)
    seconds = time.time() - t0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "decoder.pt")
    export(model, out / "decoder.onnx", c)
    measured = measure(graph_decoder(out / "decoder.onnx", a.threads), val_set, qfs, a.val_limit)
    n_val = min(a.val_limit, len(val_set))
    manifest = DecoderManifest(
        name=a.name,
        codec_id=codec.model_id,
        qfs=qfs,
        architecture=f"latent-decoder w{a.width} b{a.blocks} ({a.init} init, {a.loss})",
        files={"graph": BundleFile(path="decoder.onnx", sha256="")},
        measured=DecoderMeasured(
            dataset=str(val_set.meta["root"]),
            n_val=n_val,
            per_qf=measured,
            train_seconds=round(seconds, 1),
            train_steps=step,
            loss=a.loss,
            command=a.command,
        ),
    )
    (out / "decoder.pt").unlink()  # the artifact is the graph; keep no second copy
    sealed = write_decoder(out, manifest)
    print(f"decoder {sealed.name} {sealed.decoder_id} for codec {sealed.codec_id}: {out}")
    return 0


def cache(a: argparse.Namespace) -> int:
    codec = SpicCodec(a.codec, threads=1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        qfs = [int(q) for q in a.frame_qfs.split(",")] if split == "val" else None
        limit = a.val_limit if split == "val" else None
        n = build_split(codec, split_folder(a.data, split), out, split, limit, qfs)
        print(f"{split}: {n} images cached in {out}", flush=True)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spic-decoder", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache", help="encode a dataset once: latents, crops, val frame bytes")
    c.add_argument("--codec", required=True, help="the bundle whose encoder is frozen")
    c.add_argument("--data", required=True, help="dataset root with train/ and val/")
    c.add_argument("--out", required=True, help="cache folder (outside the repository)")
    c.add_argument("--val-limit", type=int, default=None, help="a seeded subset of val")
    c.add_argument("--frame-qfs", default="1,2,4,8,16", help="QFs whose frame bytes val keeps")
    t = sub.add_parser("train", help="train a decoder for a QF band of a frozen codec")
    t.add_argument("--codec", required=True, help="the bundle whose latents are decoded")
    t.add_argument("--data", required=True, help="dataset root with train/ and val/")
    t.add_argument("--out", required=True, help="the decoder folder to write")
    t.add_argument("--qfs", default="1,2,4,8,16", help="the QF band it serves")
    t.add_argument("--loss", choices=LOSSES, default="mse")
    t.add_argument("--name", default="decoder", help="the decoder's name")
    t.add_argument("--cache", default=None, help="latent cache (default: OUT/../decoder-cache)")
    t.add_argument("--minutes", type=float, default=40.0, help="wall-clock training budget")
    t.add_argument("--steps", type=int, default=1_000_000, help="at most this many steps")
    # 16 crops of 7x7 latents (112² pixels): a 2-3 s step on 2 shared cores; 7 is half the
    # 14² latent, so crops cover borders and interior alike.
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--crop", type=int, default=7, help="latent positions per crop side")
    # 1e-3 diverged within 100 steps (loss 0.022 -> 0.14, docs/research/decoder.md).
    t.add_argument("--lr", type=float, default=3e-4, help="Adam's rate for the new path")
    t.add_argument("--shipped-lr", type=float, default=0.1, help="the shipped path's, relative")
    t.add_argument("--warmup", type=int, default=100, help="steps of linear warm-up")
    t.add_argument("--clip", type=float, default=0.5, help="gradient norm clip")
    t.add_argument("--width", type=int, default=128)
    t.add_argument("--blocks", type=int, default=4)
    t.add_argument("--init", choices=("bundle", "scratch"), default="bundle")
    t.add_argument("--val-limit", type=int, default=500, help="seeded val subset measured")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--log-every", type=int, default=25)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parser().parse_args(argv)
    a.command = "spic-decoder " + shlex.join(argv)
    return cache(a) if a.cmd == "cache" else train(a)


if __name__ == "__main__":
    sys.exit(main())
