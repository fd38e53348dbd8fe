"""spic-train-reference: the pixel-domain reference CNN that spic-eval compares SPIC against.

Two runs, each ending with an exported reference bundle (``models/reference_bundle.py``)::

    # 1. from scratch, on clean train images
    spic-train-reference --data DATA --out runs/reference
    # 2. fine-tuned on train images decoded by JPEG, WebP and AVIF at the quality whose rate
    #    matches SPIC's (measured on train images with the SPIC bundle's default QF)
    spic-train-reference --data DATA --out runs/reference-ft \
        --finetune-from runs/reference/checkpoint.pt --spic-bundle models/bundles/spic-imagenette

DATA holds ``train/<class>/*`` and ``val/<class>/*``. The run directory gets ``config.json``,
``log.jsonl``, a self-describing ``checkpoint.pt`` and ``bundle/`` (``--bundle-out`` to put the
bundle elsewhere).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from models.config import Schedule, apply_overrides
from models.data import TRAIN_DATA_HELP, InMemoryImages, eval_arrays, train_batches
from models.mixing import mix_batch, mixed_cross_entropy
from models.reference import ResNet
from models.reference_bundle import FineTune
from models.reference_decoded import decode_all, match_to_spic, top1
from models.reference_export import export_bundle, reference_card
from models.trainer import (
    Trainer,
    load_checkpoint_file,
    progressive_crop,
    save_checkpoint,
    to_tensor,
)
from models.zoo import create_model, display_name, load_reference


@dataclass
class ReferenceConfig(Schedule):
    model: str = "resnet18-half"  # a quarter of ResNet-18's FLOPs: 30 epochs fit ~45 min on 2 cores
    lr: float = 2e-3  # one-cycle peak for AdamW: the value the shipped references were trained at
    # Fine-tuning on decoded images: short and gentle, at the evaluation's 224² crops, because the
    # codecs' artefacts sit on their 8x8/4x4 block grids, which random resized crops would blur.
    finetune_epochs: int = 2  # ~3 min/epoch at 224² on 2 cores; gains flatten after the first
    finetune_lr: float = 3e-4
    finetune_codecs: tuple[str, ...] = ("jpeg", "webp", "avif")
    calibration_images: int = (
        200  # seeded train subset on which SPIC's rate and the match are measured
    )


class ReferenceTrainer(Trainer):
    """spic-train-reference's recipe on the shared loop: label-smoothed cross-entropy, with
    Mixup/CutMix when the config asks, on the batches the run passes in (clean crops from scratch,
    codec-decoded images in a fine-tune)."""

    def __init__(
        self,
        model: ResNet,
        out: Path,
        cfg: ReferenceConfig,
        batches: Callable[[int], Iterable[tuple[np.ndarray, np.ndarray]]],
        **run: Any,
    ):
        self.cfg, self.resnet, self.epoch_batches = cfg, model, batches
        self.device, self.classes = run["device"], run["classes"]
        self.val: tuple[np.ndarray, np.ndarray] = run["val"]
        self.finetune: FineTune | None = run["finetune"]
        self.command: str = run["command"]
        super().__init__(
            model,
            out,
            lr=run["lr"],
            weight_decay=cfg.weight_decay,
            warmup_frac=cfg.warmup_frac,
            ema_decay=cfg.ema_decay,
            epochs=run["epochs"],
            steps_per_epoch=run["n_train"] // cfg.batch_size,
            log_every=cfg.log_every,
        )

    def batches(self, epoch: int) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        self.mix_rng = np.random.default_rng([self.cfg.seed, epoch, 2])
        return self.epoch_batches(epoch)

    def loss(self, batch: tuple[np.ndarray, np.ndarray], epoch: int) -> torch.Tensor:
        x = to_tensor(batch[0], self.device)
        self.y = torch.from_numpy(batch[1]).to(self.device)
        mixed = mix_batch(x, self.y, self.mix_rng, self.cfg.mixup_alpha, self.cfg.cutmix_alpha)
        self.logits = self.model(mixed.x)
        self.last_loss = mixed_cross_entropy(self.logits, mixed, self.cfg.label_smoothing)
        return self.last_loss

    def after_step(self, epoch: int) -> dict[str, Any]:
        acc = (self.logits.argmax(1) == self.y).float().mean().item()
        return {"loss": self.last_loss.item(), "acc": acc}

    def describe(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "arch": self.resnet.cfg.to_dict(),
            "model_name": self.cfg.model,
            "classes": self.classes,
            "finetune": self.finetune.model_dump() if self.finetune else None,
            "command": self.command,
        }

    def validate(self, epoch: int, started: float) -> dict[str, Any] | None:
        # The last epoch is validated once, by finish(), together with the decoded-image scores.
        if epoch == self.epochs or epoch % self.cfg.eval_every:
            return None
        images, labels = self.val
        return {
            "epoch": epoch,
            "step": self.step,
            "epoch_seconds": time.time() - started,
            "val_top1_clean": top1(self.scored, images, labels, self.device),  # type: ignore[arg-type]
        }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="spic-train-reference", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help=TRAIN_DATA_HELP)
    p.add_argument("--out", required=True, help="run directory (created)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one ReferenceConfig field, e.g. --set epochs=2 (JSON values)",
    )
    p.add_argument("--finetune-from", help="checkpoint of a from-scratch run to fine-tune")
    p.add_argument("--spic-bundle", help="SPIC bundle whose rate the codec qualities match")
    p.add_argument("--bundle-out", help="where to write the reference bundle (default OUT/bundle)")
    p.add_argument("--name", help="bundle name (default: the bundle folder's name)")
    p.add_argument(
        "--export-only", action="store_true", help="only (re-)export OUT/checkpoint.pt's bundle"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue a from-scratch run from OUT/checkpoint.pt"
    )
    p.add_argument(
        "--epochs-this-run",
        type=int,
        help="stop after this many epochs (checkpointed); continue later with --resume",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--val-limit", type=int, help="validate on a seeded subset of val images")
    p.add_argument("--train-limit", type=int, help="train on a seeded subset (smoke tests)")
    args = p.parse_args(argv)
    if args.export_only and args.finetune_from:
        p.error("--export-only takes the run in --out; drop --finetune-from")
    if bool(args.finetune_from) != bool(args.spic_bundle):
        p.error("--finetune-from and --spic-bundle go together")
    if args.resume and (args.set or args.finetune_from or args.export_only):
        p.error("--resume continues the checkpoint's own config; drop --set/--finetune-from")
    return args


def resume_checkpoint(out: Path) -> dict:
    """The checkpoint a --resume run continues: a from-scratch run's, with its optimizer state."""
    path = out / "checkpoint.pt"
    if not path.is_file():
        raise SystemExit(f"--resume: no checkpoint at {path}")
    ckpt = load_checkpoint_file(path)
    if ckpt.get("finetune") or "optimizer" not in ckpt:
        # A fine-tune is two short epochs (rerun it); older checkpoints kept no optimizer state.
        raise SystemExit(f"--resume: {path} is not a resumable from-scratch run")
    return ckpt


def build_config(args: argparse.Namespace, base: dict | None) -> ReferenceConfig:
    return ReferenceConfig.from_dict(apply_overrides(base or ReferenceConfig().to_dict(), args.set))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "spic-train-reference " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.export_only:
        return export_only(args, command)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base_ckpt, resumed = None, None
    if args.finetune_from:
        base_ckpt = load_checkpoint_file(args.finetune_from)
    if args.resume:
        resumed = resume_checkpoint(out)
        # One line per run, as spic-train keeps them: the card shows every command that ran.
        command = f"{resumed['command']}\n{command}"
    cfg = (
        ReferenceConfig.from_dict(resumed["config"])
        if resumed
        else build_config(args, base_ckpt["config"] if base_ckpt else None)
    )
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device(args.device)
    data = Path(args.data)

    val_images, val_labels, val_classes = eval_arrays(data / "val", cfg.eval_size, args.val_limit)
    if base_ckpt:
        model = load_reference(base_ckpt)
        classes = base_ckpt["classes"]
    else:
        classes = val_classes
        model = create_model(cfg.model, kind="reference", num_classes=len(classes))
    if val_classes != classes:
        raise SystemExit(f"val classes {val_classes} differ from the model's {classes}")
    model = model.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # the stubs lack memory_format
    finetune = None

    if base_ckpt is None:
        train = InMemoryImages(data / "train", short_side=cfg.eval_size)
        if args.train_limit:
            keep = np.random.default_rng(0).permutation(len(train))[: args.train_limit]
            train.images = [train.images[i] for i in keep]
            train.labels = train.labels[keep]
        if train.classes != classes:
            raise SystemExit(f"train classes {train.classes} differ from val {classes}")
        epochs, lr = cfg.epochs, cfg.lr
        n_train = len(train)

        def batches(epoch: int) -> Iterable[tuple[np.ndarray, np.ndarray]]:
            rng = np.random.default_rng([cfg.seed, epoch])  # per-epoch seed: reruns replay exactly
            return train_batches(train, cfg.batch_size, progressive_crop(cfg, epoch), rng)
    else:
        # Decoded train images: each epoch every image comes through one codec, drawn at random.
        crops, labels, _ = eval_arrays(data / "train", cfg.eval_size, args.train_limit)
        calib = crops[
            np.sort(np.random.default_rng(1).permutation(len(crops))[: cfg.calibration_images])
        ]
        target, qualities, source = match_to_spic(
            Path(args.spic_bundle), calib, cfg.finetune_codecs
        )
        print(json.dumps({"target_bpp": target, "qualities": qualities}), file=sys.stderr)
        finetune = FineTune(
            base_model_id=base_ckpt.get("bundle_id", "unexported"),
            qualities=qualities,
            target_bpp=target,
            target_from=source,
        )
        decoded = np.stack(
            [decode_all(c, q, crops) for c, q in tqdm(qualities.items(), desc="decoding train")]
        )
        del crops
        epochs, lr, n_train = cfg.finetune_epochs, cfg.finetune_lr, len(labels)

        def batches(epoch: int) -> Iterable[tuple[np.ndarray, np.ndarray]]:
            rng = np.random.default_rng([cfg.seed, epoch, 7])
            order = rng.permutation(n_train)
            variant = rng.integers(0, len(decoded), size=n_train)
            flip = rng.random(n_train) < 0.5
            for b in range(n_train // cfg.batch_size):
                idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                x = decoded[variant[idx], idx]
                x[flip[idx]] = x[flip[idx], :, ::-1]
                yield x, labels[idx]

    run = dict(device=device, classes=classes, val=(val_images, val_labels), finetune=finetune)
    run.update(command=command, lr=lr, epochs=epochs, n_train=n_train)
    trainer = ReferenceTrainer(model, out, cfg, batches, **run)
    if resumed:
        trainer.resume(resumed)
    last_epoch = trainer.fit(args.epochs_this_run)
    if last_epoch < epochs:
        print(
            f"stopped after epoch {last_epoch} of {epochs}; continue with --resume", file=sys.stderr
        )
        return 0
    val = (val_images, val_labels)
    return finish(trainer.scored, cfg, classes, finetune, trainer.state(), out, args, val, device)


def export_only(args: argparse.Namespace, command: str) -> int:
    """Re-export the bundle of a finished run (e.g. one trained on another machine)."""
    out = Path(args.out)
    ckpt = load_checkpoint_file(out / "checkpoint.pt")
    ckpt.pop("bundle_id", None)
    cfg = ReferenceConfig.from_dict(ckpt["config"])
    model = load_reference(ckpt)
    finetune = FineTune(**ckpt["finetune"]) if ckpt.get("finetune") else None
    val = eval_arrays(Path(args.data) / "val", cfg.eval_size, args.val_limit)[:2]
    ckpt.setdefault("command", f"spic-train-reference --data {args.data} --out {out}")
    return finish(
        model,
        cfg,
        ckpt["classes"],
        finetune,
        ckpt,
        out,
        args,
        val,
        torch.device("cpu"),
        export_command=command,
    )


def finish(
    model, cfg, classes, finetune, state, out, args, val, device, export_command=None
) -> int:
    """Validate (clean, and decoded at the fine-tuning qualities), export, record the bundle id."""
    val_images, val_labels = val
    val_clean = top1(model, val_images, val_labels, device)
    summary: dict = {"val_top1_clean": val_clean}
    if finetune:
        for c, q in finetune.qualities.items():
            summary[f"val_top1_{c}_q{q}"] = top1(
                model, decode_all(c, q, val_images), val_labels, device
            )
    bundle = Path(args.bundle_out) if args.bundle_out else out / "bundle"
    commands = "\n".join(c for c in (state["command"], export_command) if c)
    # Reports name classifiers by label, so two references of one architecture must differ here.
    label = (
        display_name(cfg.model) + (" EMA" if cfg.ema_decay else "") + (" FT" if finetune else "")
    )
    with (out / "log.jsonl").open("a") as log:
        log.write(
            json.dumps({"val": {"epoch": state["epoch"], "step": state["step"], **summary}}) + "\n"
        )
    card = reference_card(cfg, finetune, summary, commands, state["step"], len(val_labels))
    manifest = export_bundle(
        model,
        bundle,
        args.name or bundle.name,
        cfg.model,
        label,
        classes,
        cfg.eval_size,
        finetune,
        val_clean,
        card,
    )
    # The bundle id goes back into the checkpoint, so a fine-tune records which base it started from.
    save_checkpoint(out / "checkpoint.pt", **state, bundle_id=manifest.model_id)
    print(json.dumps({"bundle": str(bundle), "model_id": manifest.model_id, **summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
