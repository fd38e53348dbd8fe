"""Is a coarse QF's accuracy lost in the latent or in the shared classifier? Train a copy of a
checkpoint's classifier ``h_c`` on one QF's latents alone, the encoder frozen, and compare top-1
at that QF (and at QF 16) before and after on a seeded subset of val.

    python scripts/qf_classifier_probe.py runs/split-fd-cap/checkpoint.pt \
        --data ../shared/data/imagenette --qf 1 --steps 300

If the specialised classifier gains little, the quantized latent itself lacks the information,
and only a change to the encoder (its training) can raise that QF (docs/research/training-log.md).
The last line is a JSON summary.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import torch
import torch.nn.functional as F

from models.data import InMemoryImages, eval_arrays, train_batches
from models.network import quantize
from models.objective import evaluate
from models.trainer import to_tensor
from models.zoo import load_checkpoint, probe_parser

CPU = torch.device("cpu")


def main() -> None:
    ap = probe_parser(__doc__.split("\n")[0])
    ap.add_argument("--qf", type=int, default=1, help="the QF whose latents train the copy")
    ap.add_argument("--steps", type=int, default=300, help="batches of 64")
    ap.add_argument(
        "--crop", type=int, default=128, help="training crop (the split runs end at 192)"
    )
    ap.add_argument("--val-limit", type=int, default=500, help="seeded val subset, as training's")
    args = ap.parse_args()
    torch.manual_seed(0)
    model, _ = load_checkpoint(args.checkpoint)
    train = InMemoryImages(args.data / "train", short_side=224)
    images, labels, _ = eval_arrays(args.data / "val", 224, args.val_limit)
    qfs = sorted({args.qf, 16})
    before = evaluate(model, images, labels, qfs, CPU)
    model.eval()  # evaluate() leaves the model in train mode; the frozen encoder stays in eval
    h_c = copy.deepcopy(model.h_c).train()
    # AdamW at training's peak rate for the split models: enough for the head to adapt in a few
    # hundred steps, if the information is there to adapt to.
    opt = torch.optim.AdamW(h_c.parameters(), lr=3e-4, weight_decay=0.05)
    rng, step = np.random.default_rng(0), 0
    while step < args.steps:
        for batch, target in train_batches(train, 64, args.crop, rng, 0, 1):
            with torch.no_grad():
                y_hat = quantize(model.g_a(to_tensor(batch, CPU)), args.qf, "ste")
            loss = F.cross_entropy(h_c(y_hat), torch.from_numpy(target), label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= args.steps:
                break
    model.h_c = h_c  # training's own validation pass, now through the copy
    after = evaluate(model, images, labels, qfs, CPU)
    summary = {"checkpoint": args.checkpoint, "qf": args.qf, "steps": args.steps, "crop": args.crop}
    top1 = {
        name: {q: m[f"qf{q}"]["top1"] for q in qfs}
        for name, m in (("before", before), ("after", after))
    }
    print(json.dumps({**summary, "top1_before": top1["before"], "top1_after": top1["after"]}))


if __name__ == "__main__":
    main()
