"""Would a QF per latent channel (gain vectors, Cui et al., CVPR 2021) buy a better low end than
one QF for all? Without retraining anything: every channel starts at a coarse QF, channels are
ranked once by the top-1 each gains per bit when it alone moves to a finer QF, then moved in that
order; top-1 and the model's rate estimate are read at each step.

    python scripts/channel_qf_probe.py runs/split-s16/checkpoint.pt --data ../shared/data/imagenette

The ranking is chosen on center crops of training images and measured on a seeded subset of val,
so the curve is not fitted to the images that measure it. Rates are the model's estimate, without
the frame header. The last line is a JSON summary.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from models.data import eval_arrays
from models.network import SPIC, quantize
from models.trainer import to_tensor
from models.zoo import load_checkpoint, probe_parser

CPU = torch.device("cpu")


class Latents:
    """One image set's latents and labels, and what a per-channel QF gives on it."""

    def __init__(self, model: SPIC, images: np.ndarray, labels: np.ndarray):
        self.model = model
        with torch.no_grad():
            self.y = torch.cat(
                [model.g_a(to_tensor(images[i : i + 100], CPU)) for i in range(0, len(images), 100)]
            )
        self.labels = torch.from_numpy(labels)
        self.pixels = images.shape[1] * images.shape[2]
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def at(self, qf: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The latent quantized at ``qf`` and its bits per channel per image (N, C)."""
        if qf not in self.cache:
            with torch.no_grad():
                y_hat = quantize(self.y, qf, "ste")
                lik = self.model.entropy_model.likelihood(y_hat, qf)
                bits = -torch.log2(lik).sum((2, 3))
            self.cache[qf] = (y_hat, bits)
        return self.cache[qf]

    @torch.no_grad()
    def measure(self, qfs: list[int]) -> tuple[float, float]:
        """Top-1 and bits per pixel with channel c quantized at ``qfs[c]``."""
        y_hat = torch.stack([self.at(q)[0][:, c] for c, q in enumerate(qfs)], 1)
        bits = sum(self.at(q)[1][:, c] for c, q in enumerate(qfs))
        logits = torch.cat([self.model.h_c(y_hat[i : i + 250]) for i in range(0, len(y_hat), 250)])
        top1 = (logits.argmax(1) == self.labels).float().mean().item()
        return top1, float(bits.mean()) / self.pixels  # type: ignore[union-attr]


def main() -> None:
    ap = probe_parser(__doc__.split("\n")[0])
    ap.add_argument("--coarse", type=int, default=1, help="every channel's starting QF")
    ap.add_argument("--fine", type=int, default=4, help="the QF a ranked channel moves to")
    ap.add_argument("--images", type=int, default=500, help="images to rank on and to measure on")
    args = ap.parse_args()
    model, _ = load_checkpoint(args.checkpoint)
    rank_set = Latents(model, *eval_arrays(args.data / "train", 224, args.images)[:2])
    val = Latents(model, *eval_arrays(args.data / "val", 224, args.images)[:2])
    channels = model.cfg.latent_channels
    base = [args.coarse] * channels
    top1_0, bpp_0 = rank_set.measure(base)
    gain = []
    for c in range(channels):
        top1, bpp = rank_set.measure([args.fine if i == c else q for i, q in enumerate(base)])
        gain.append((top1 - top1_0) / max(bpp - bpp_0, 1e-6))
    order = sorted(range(channels), key=lambda c: -gain[c])
    curve = []
    qfs = list(base)
    for k in range(channels + 1):
        if k:
            qfs[order[k - 1]] = args.fine
        top1, bpp = val.measure(qfs)
        curve.append({"fine_channels": k, "bpp": round(bpp, 4), "top1": round(top1, 4)})
        print(json.dumps(curve[-1]), flush=True)
    uniform = {q: val.measure([q] * channels) for q in (1, 2, 4, 8)}
    print(
        json.dumps(
            {
                "checkpoint": args.checkpoint,
                "coarse": args.coarse,
                "fine": args.fine,
                "order": order,
                "uniform_qf": {
                    q: {"bpp": round(b, 4), "top1": round(t, 4)} for q, (t, b) in uniform.items()
                },
                "curve": curve,
            }
        )
    )


if __name__ == "__main__":
    main()
