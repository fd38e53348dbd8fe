"""What caps a trained SPIC model's reconstruction? Probes behind docs/research/training-log.md.

    .venv/bin/python scripts/reconstruction_probe.py pca --data ../shared/data/imagenette
    .venv/bin/python scripts/reconstruction_probe.py finetune --checkpoint C --minutes 15
    .venv/bin/python scripts/reconstruction_probe.py spread --bundle B --split val --images 100

* ``klt``: the enhancement layer of ``models/enhancement.py`` alone: its transform fitted on 600
  train crops, quantized at each QF, on 300 val crops: PSNR, SSIM, and the rate of ideal
  per-channel static tables measured on the train crops (bits over 224² pixels, no header).
* ``pca``: the PSNR of k principal components per 16×16×3 block (fitted on 300 train crops,
  unquantized, clipped to [0, 1]), on 200 val crops: what k numbers per stride-16 latent
  position can carry with a linear transform.
* ``finetune``: the checkpoint's ``g_a`` frozen, its own ``g_s`` trained further on MSE alone.
* ``deeper``: ``g_a`` frozen, a fresh decoder with residual blocks at 1/16 and 1/8 scale.
* ``scratch``: ``g_a`` and ``g_s`` of the checkpoint's architecture from scratch, MSE alone.
* ``spread``: per latent channel of a bundle's encoder, the standard deviation over a split's
  crops: how many channels are active (≥ 0.01), exactly constant, the active ones' median,
  and per QF the most distinct symbols any idle channel takes (1: it already codes for free).

The three network probes quantize at one QF (straight-through), train with Adam at 1e-3 on
batches of 32 random 128² crops for a wall-time budget, and print the PSNR on the same 200 val
crops before and after, with the steps taken, as JSON lines (the last line is the summary).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.blocks import BasicBlock  # noqa: E402
from models.data import InMemoryImages, eval_arrays, train_batches  # noqa: E402
from models.network import SPIC, quantize  # noqa: E402
from models.objective import psnr_db  # noqa: E402
from models.trainer import to_tensor  # noqa: E402
from models.zoo import load_checkpoint  # noqa: E402
from shared.manifest import load_manifest  # noqa: E402
from shared.preprocess import batch_input  # noqa: E402
from shared.quantize import quantize as quantize_np  # noqa: E402

CPU = torch.device("cpu")


def pca(data: str) -> dict:
    def blocks(a: np.ndarray) -> np.ndarray:
        b = a.reshape(len(a), a.shape[1] // 16, 16, a.shape[2] // 16, 16, 3)
        return b.transpose(0, 1, 3, 2, 4, 5).reshape(-1, 768).astype(np.float64) / 255

    train, _, _ = eval_arrays(f"{data}/train", 224, 300)
    val, _, _ = eval_arrays(f"{data}/val", 224, 200)
    b = blocks(train)
    mu = b.mean(0)
    _, _, vt = np.linalg.svd(b - mu, full_matrices=False)
    v = blocks(val)
    out = {}
    for k in (8, 16, 29, 48, 64, 96, 128):
        r = np.clip((v - mu) @ vt[:k].T @ vt[:k] + mu, 0, 1)
        mse = ((r - v) ** 2).reshape(len(val), -1).mean(1)
        out[str(k)] = round(float(np.mean(10 * np.log10(1 / mse))), 2)
    return {"probe": "pca", "psnr_by_components": out}


def klt(data: str) -> dict:
    from skimage.metrics import structural_similarity

    from models.enhancement import KLTEnhancement, fit_klt

    train, _, _ = eval_arrays(f"{data}/train", 224, 600)
    val, _, _ = eval_arrays(f"{data}/val", 224, 300)
    xt, xv = torch.from_numpy(batch_input(train)), torch.from_numpy(batch_input(val))
    out = {}
    for m in (32, 48, 64, 96):
        layer = KLTEnhancement(*fit_klt(train, m, 16))
        with torch.no_grad():
            yt, yv = layer.encode(xt).numpy(), layer.encode(xv).numpy()
        for q in (16, 32, 48, 64, 128, 255):
            st, sv = quantize_np(yt, q), quantize_np(yv, q)
            bits = 0.0
            for c in range(m):
                p = np.bincount(st[:, c].ravel(), minlength=q + 1) + 1.0
                bits -= np.log2(p / p.sum())[sv[:, c].ravel()].sum()
            with torch.no_grad():
                rec = layer.decode(torch.from_numpy(sv / np.float32(q))).clamp(0, 1)
            ref, img = xv.numpy().transpose(0, 2, 3, 1), rec.numpy().transpose(0, 2, 3, 1)
            mse = ((ref - img) ** 2).reshape(len(val), -1).mean(1)
            ssim = [
                structural_similarity(a, b, channel_axis=2, data_range=1.0)
                for a, b in zip(ref, img, strict=True)
            ]
            out[f"{m}@{q}"] = {
                "bpp": round(bits / (len(val) * 224 * 224), 4),
                "psnr": round(float(np.mean(10 * np.log10(1 / mse))), 2),
                "ssim": round(float(np.mean(ssim)), 3),
            }
            print(json.dumps({m: {q: out[f"{m}@{q}"]}}), flush=True)
    return {"probe": "klt", "channels@qf": out}


class DeepDecoder(nn.Module):
    """Capacity where a stride-16 latent needs it: residual blocks at 1/16 and 1/8 scale, then
    the transposed-convolution tail of spic-s16-c64's decoder."""

    def __init__(self, cin: int):
        super().__init__()
        up = [(256, 192), (192, 96), (96, 48), (48, 3)]
        self.net = nn.Sequential(
            nn.Conv2d(cin, 256, 3, 1, 1),
            nn.LeakyReLU(0.1),
            BasicBlock(256, 256),
            BasicBlock(256, 256),
            nn.ConvTranspose2d(*up[0], 4, 2, 1),
            nn.LeakyReLU(0.1),
            BasicBlock(192, 192),
            nn.ConvTranspose2d(*up[1], 4, 2, 1),
            nn.LeakyReLU(0.1),
            nn.ConvTranspose2d(*up[2], 4, 2, 1),
            nn.LeakyReLU(0.1),
            nn.ConvTranspose2d(*up[3], 4, 2, 1),
            nn.Sigmoid(),
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)  # type: ignore[no-any-return]


def spread(args: argparse.Namespace) -> dict:
    images, _, _ = eval_arrays(f"{args.data}/{args.split}", 224, args.images)
    session = ort.InferenceSession(str(args.bundle / "encoder.onnx"))
    y = np.concatenate(
        [
            session.run(None, {"image": batch_input(images[i : i + 50])})[0]
            for i in range(0, len(images), 50)
        ]
    )
    std = y.std(axis=(0, 2, 3))
    active = std >= 0.01
    return {
        "probe": "spread",
        "bundle": str(args.bundle),
        "images": len(images),
        "channels": len(std),
        "active": int(active.sum()),
        "constant": int((std == 0).sum()),
        "active_median_std": round(float(np.median(std[active])), 4) if active.any() else None,
        "idle_symbols_by_qf": {
            q: max(
                (len(np.unique(quantize_np(y[:, c], q))) for c in np.flatnonzero(~active)),
                default=0,
            )
            for q in load_manifest(args.bundle).qfs
        },
    }


def train_decoder(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, _ = load_checkpoint(args.checkpoint)
    if args.probe == "scratch":
        model = SPIC(model.cfg)
    g_a, g_s = model.g_a, model.g_s
    if args.probe == "deeper":
        g_s = DeepDecoder(model.cfg.latent_channels)  # type: ignore[assignment]
    joint = args.probe == "scratch"
    params = list(g_s.parameters()) + (list(g_a.parameters()) if joint else [])
    opt = torch.optim.Adam(params, lr=1e-3)
    val, _, _ = eval_arrays(f"{args.data}/val", 224, 200)
    xv = to_tensor(val, CPU)

    def val_psnr() -> float:
        g_a.eval()
        g_s.eval()
        with torch.no_grad():
            total = sum(
                psnr_db(g_s(quantize(g_a(x), args.qf, "ste")), x).sum().item() for x in xv.split(25)
            )
        g_a.train(joint)
        g_s.train()
        return round(total / len(xv), 2)

    before = val_psnr()
    print(json.dumps({"probe": args.probe, "step": 0, "psnr": before}), flush=True)
    train = InMemoryImages(f"{args.data}/train", short_side=224)
    rng = np.random.default_rng(0)
    t0, step = time.time(), 0
    while time.time() - t0 < args.minutes * 60:
        for xb, _ in train_batches(train, 32, 128, rng):
            x = to_tensor(xb, CPU)
            with torch.set_grad_enabled(joint):
                y = g_a(x)
            loss = torch.mean((g_s(quantize(y, args.qf, "ste")) - x) ** 2)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            step += 1
            if step % 100 == 0:
                print(json.dumps({"step": step, "mse": round(loss.item(), 5)}), flush=True)
            if time.time() - t0 >= args.minutes * 60:
                break
    return {
        "probe": args.probe,
        "checkpoint": args.checkpoint,
        "qf": args.qf,
        "minutes": args.minutes,
        "steps": step,
        "psnr_before": before,
        "psnr_after": val_psnr(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("probe", choices=["klt", "pca", "finetune", "deeper", "scratch", "spread"])
    p.add_argument("--data", default="../shared/data/imagenette")
    p.add_argument("--checkpoint", default="runs/ladder-v2/checkpoint.pt")
    p.add_argument("--qf", type=int, default=255)
    p.add_argument("--minutes", type=float, default=15.0, help="training wall-time budget")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bundle", type=Path, help="spread: the bundle whose encoder.onnx to read")
    p.add_argument("--split", default="val", help="spread: train or val")
    p.add_argument("--images", type=int, default=100, help="spread: seeded subset size")
    args = p.parse_args()
    probes = {
        "pca": lambda: pca(args.data),
        "klt": lambda: klt(args.data),
        "spread": lambda: spread(args),
    }
    print(json.dumps(probes.get(args.probe, lambda: train_decoder(args))()))


if __name__ == "__main__":
    main()
