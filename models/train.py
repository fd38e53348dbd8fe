"""spic-train: multi-task training of SPIC, L = w(QF)·MSE + α·rate + β·cross-entropy.

``spic-train --recipe full`` runs the whole recipe instead: teacher, this, export, INT8 and the
model card, resumable, with an ETA (models/recipe.py).

The loop is models/trainer.py's, which spic-train-reference shares; this module is the recipe:
the loss, the batches, the dual update of alpha and what a checkpoint records. Runs on CPU by
default; ``--device cuda`` for a GPU; under ``torchrun`` it trains data-parallel with DDP (gloo on
CPU, NCCL on CUDA). A run directory holds:

    config.json        the full training config (also inside every checkpoint)
    log.jsonl          one JSON object per logged step and per validation pass
    checkpoint.pt      the latest state: config, weights, optimizer, scheduler, step, alpha
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.config import TrainConfig, apply_overrides
from models.data import TRAIN_DATA_HELP, InMemoryImages, data_provenance, eval_arrays, train_batches
from models.distill import FeatureTeacher, Teacher, distillation_loss, feature_distillation_loss
from models.ema import final_weights
from models.entropy_model import bits_per_pixel
from models.mixing import mix_batch, mixed_cross_entropy
from models.network import SPIC, quantize
from models.objective import (
    evaluate,
    feature_distill_weight,
    mse_weight,
    rate_target,
    saturation_penalty,
    update_alpha,
)
from models.recipe import add_arguments as add_recipe_arguments
from models.recipe import run_recipe
from models.split_resnet import init_from_reference, matched_layers
from models.trainer import Trainer, load_checkpoint_file, progressive_crop, to_tensor
from models.zoo import create_model


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="spic-train", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help=TRAIN_DATA_HELP)
    p.add_argument("--out", required=True, help="run directory (created)")
    p.add_argument("--config", help="JSON file of TrainConfig fields (defaults otherwise)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config field, e.g. --set epochs=2 (JSON values)",
    )
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--val-limit", type=int, help="evaluate on a seeded subset of val images")
    p.add_argument(
        "--epochs-this-run",
        type=int,
        help="stop after this many epochs (checkpointed); continue later with --resume",
    )
    add_recipe_arguments(p)
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> TrainConfig:
    d = TrainConfig.from_json(args.config).to_dict() if args.config else TrainConfig().to_dict()
    return TrainConfig.from_dict(apply_overrides(d, args.set))


def resolve_config(
    args: argparse.Namespace, ckpt_path: Path, command: str
) -> tuple[TrainConfig, dict | None, list[str]]:
    """The run's config (a resumed run keeps its checkpoint's), the checkpoint to resume from,
    and the commands that made the run so far."""
    if not args.resume:
        return build_config(args), None, [command]
    if args.config or args.set:
        raise SystemExit("--resume continues the checkpoint's own config; drop --config/--set")
    if not ckpt_path.exists():
        raise SystemExit(f"--resume: no checkpoint at {ckpt_path}")
    ckpt = load_checkpoint_file(ckpt_path)
    cfg = TrainConfig.from_dict(ckpt["config"]["train"])
    return cfg, ckpt, [*ckpt.get("commands", []), command]


def setup_device(args: argparse.Namespace) -> tuple[int, int, torch.device]:
    """World size, rank and device; joins the process group under torchrun (gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        backend = "nccl" if args.device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend)
    device = torch.device(args.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return world, rank, device


class SPICTrainer(Trainer):
    """spic-train's recipe on the shared loop: L = w(QF)·MSE + alpha·rate + beta·cross-entropy at a
    QF drawn per batch, alpha steered by a dual update to the rate target."""

    postfix = {"loss": ".3f", "acc": ".2f", "bpp": ".3f", "qf": "", "alpha": ".3g"}

    def __init__(self, model: SPIC, out: Path, cfg: TrainConfig, train: InMemoryImages, **run: Any):
        self.cfg, self.train, self.spic = cfg, train, model
        self.world, self.rank, self.device = run["world"], run["rank"], run["device"]
        self.local_batch = cfg.batch_size // self.world
        super().__init__(
            model,
            out,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            warmup_frac=cfg.warmup_frac,
            ema_decay=cfg.ema_decay,
            epochs=cfg.epochs,
            steps_per_epoch=len(train) // self.world // self.local_batch,
            log_every=cfg.log_every,
            is_main=self.rank == 0,
        )
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.net: torch.nn.Module = model  # DDP-wrapped under torchrun
        self.teacher: Teacher | None = run["teacher"]
        self.feature_teacher: FeatureTeacher | None = None
        self.cut: dict[str, torch.Tensor] = {}  # the cloud's features at the cut, caught by a hook
        self.val: tuple[np.ndarray, np.ndarray] = run["val"]
        self.commands, self.provenance = run["commands"], run["provenance"]
        self.wall_before, self.run_start = run["wall_before"], run["run_start"]
        self.log_alpha = math.log(cfg.alpha_init)
        self.crop = cfg.crop
        self.s: dict[str, Any] = {}  # the current step's tensors, from loss() to after_step()

    def resume(self, ckpt: dict[str, Any]) -> None:
        super().resume(ckpt)
        self.log_alpha = math.log(ckpt["alpha"])

    def batches(self, epoch: int):
        cfg = self.cfg
        self.crop = progressive_crop(cfg, epoch)
        rng = np.random.default_rng([cfg.seed, epoch])  # per-epoch seed: resume replays exactly
        self.qf_rng = np.random.default_rng([cfg.seed, epoch, 1])
        self.mix_rng = np.random.default_rng([cfg.seed, epoch, 2])
        return train_batches(self.train, self.local_batch, self.crop, rng, self.rank, self.world)

    def loss(self, batch: tuple[np.ndarray, np.ndarray], epoch: int) -> torch.Tensor:
        # L = w(QF)·MSE + alpha·rate + beta·cross-entropy, at a QF drawn per batch
        cfg, (images, labels) = self.cfg, batch
        qf = int(self.qf_rng.choice(cfg.qfs, p=cfg.qf_probabilities()))
        x = to_tensor(images, self.device)
        target = torch.from_numpy(labels).to(self.device)
        mixed = mix_batch(x, target, self.mix_rng, cfg.mixup_alpha, cfg.cutmix_alpha)
        x = mixed.x
        res = self.net(x, qf, mode=cfg.train_quantize)
        pixels = x.shape[2] * x.shape[3]
        mse = F.mse_loss(res["x_hat"], x)
        bpp = bits_per_pixel(res["likelihoods"], pixels).mean()
        ce = mixed_cross_entropy(res["logits"], mixed, cfg.label_smoothing)
        if self.teacher is not None:
            kd = distillation_loss(res["logits"], self.teacher.logits(x), cfg.distill_temperature)
            ce = (1 - cfg.distill_weight) * ce + cfg.distill_weight * kd
        alpha = math.exp(self.log_alpha)
        saturation = saturation_penalty(res["z"], cfg.latent_logit_margin)
        loss = mse_weight(qf, cfg) * mse + alpha * bpp + cfg.beta * ce
        loss = loss + cfg.latent_logit_l2 * saturation
        feat = torch.zeros(())
        if self.feature_teacher is not None:
            feat = feature_distillation_loss(self.cut["features"], self.feature_teacher.features(x))
            loss = loss + feature_distill_weight(cfg, self.step, self.total_steps) * feat
        self.s = dict(qf=qf, res=res, pixels=pixels, mse=mse, bpp=bpp, ce=ce, feat=feat)
        self.s.update(alpha=alpha, loss=loss, target=target)
        return loss

    @torch.no_grad()
    def after_step(self, epoch: int) -> dict[str, Any]:
        cfg, s = self.cfg, self.s
        # The dual update of alpha on the rate at the target QF (the same step on every rank).
        if s["qf"] == cfg.rate_target_qf:
            bpp_t = s["bpp"].detach()
        else:
            y_t = quantize(s["res"]["y"].detach(), cfg.rate_target_qf, "ste")
            lik = self.spic.entropy_model.likelihood(y_t, cfg.rate_target_qf)
            bpp_t = bits_per_pixel(lik, s["pixels"]).mean()
        if self.world > 1:
            torch.distributed.all_reduce(bpp_t)
            bpp_t /= self.world
        target_bpp = rate_target(cfg, self.step, self.total_steps)
        self.log_alpha = update_alpha(self.log_alpha, bpp_t.item(), target_bpp, cfg)
        s.update(bpp_t=bpp_t, target_bpp=target_bpp)
        return {
            "loss": s["loss"].item(),
            "acc": (s["res"]["logits"].argmax(1) == s["target"]).float().mean().item(),
            "bpp": s["bpp"].item(),
            "qf": s["qf"],
            "alpha": s["alpha"],
        }

    @torch.no_grad()
    def log_record(self, shown: dict[str, Any]) -> dict[str, Any]:
        s = self.s
        return {
            "qf": s["qf"],
            "loss": shown["loss"],
            "mse": s["mse"].item(),
            "latent_logit_ms": s["res"]["z"].pow(2).mean().item(),
            "bpp": shown["bpp"],
            "bpp_target_qf": s["bpp_t"].item(),
            "target_bpp": s["target_bpp"],
            "ce": s["ce"].item(),
            "feature_distill": s["feat"].item(),
            "acc": shown["acc"],
            "alpha": s["alpha"],
            "crop": self.crop,
        }

    def describe(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "config": {"train": cfg.to_dict(), "arch": self.spic.cfg.to_dict(), "model": cfg.model},
            "classes": self.train.classes,
            "alpha": math.exp(self.log_alpha),
            # Wall time of the whole run (data loading and validation included), summed over
            # --resume runs: the model card reports what training really cost.
            "wall_seconds": self.wall_before + time.time() - self.run_start,
            "machine": f"{self.device.type}, {torch.get_num_threads()} threads, "
            f"{os.cpu_count()} CPU cores visible, world size {self.world}",
            "commands": self.commands,
            "data_provenance": self.provenance,
        }

    def validate(self, epoch: int, started: float) -> dict[str, Any] | None:
        if not self.is_main or not (epoch == self.cfg.epochs or epoch % self.cfg.eval_every == 0):
            return None
        scored: SPIC = self.scored  # type: ignore[assignment]
        metrics = evaluate(scored, *self.val, self.cfg.qfs, self.device)
        metrics.update(epoch=epoch, step=self.step, epoch_seconds=time.time() - started)
        return metrics


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.recipe:  # the whole recipe, this command among its stages (models/recipe.py)
        return run_recipe(args)
    # The command as it ran, kept in the checkpoint (one line per run, --resume runs appended) so
    # the model card records what was actually typed, not a reconstruction.
    command = "spic-train " + shlex.join(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    cfg, ckpt, commands = resolve_config(args, out / "checkpoint.pt", command)
    run_start = time.time()
    wall_before = float(ckpt.get("wall_seconds", 0.0)) if ckpt is not None else 0.0
    start: dict | None = None
    if cfg.init_checkpoint and ckpt is None:
        if not Path(cfg.init_checkpoint).is_file():
            raise SystemExit(f"init_checkpoint: no checkpoint at {cfg.init_checkpoint}")
        start = load_checkpoint_file(cfg.init_checkpoint)
        if start["config"]["model"] != cfg.model:
            raise SystemExit(
                f"init_checkpoint {cfg.init_checkpoint} holds a {start['config']['model']}, "
                f"the config asks for {cfg.model}"
            )
        # A fine-tune's weights were made by the start's commands and this one, in that order.
        commands = [*start.get("commands", []), command]
        wall_before = float(start.get("wall_seconds", 0.0))
    world, rank, device = setup_device(args)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    train = InMemoryImages(Path(args.data) / "train", short_side=cfg.eval_size)
    provenance = data_provenance(args.data)  # what a derived copy says it is; "" for originals
    val_images, val_labels, val_classes = eval_arrays(
        Path(args.data) / "val", cfg.eval_size, args.val_limit
    )
    if val_classes != train.classes:
        raise SystemExit(f"train and val classes differ: {train.classes} vs {val_classes}")

    model: SPIC = create_model(cfg.model, kind="spic", num_classes=len(train.classes)).to(device)
    teacher = Teacher(cfg.teacher, train.classes, cfg.threads, device) if cfg.teacher else None
    if cfg.init_from and ckpt is None:
        init_from_reference(model, cfg.init_from, train.classes)
    if start is not None:
        if start["classes"] != train.classes:
            raise SystemExit(
                f"init_checkpoint {cfg.init_checkpoint} was trained on classes {start['classes']}, "
                f"the data has {train.classes}"
            )
        model.load_state_dict(final_weights(start))
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # the stubs lack memory_format
    run = dict(world=world, rank=rank, device=device, teacher=teacher, val=(val_images, val_labels))
    run.update(commands=commands, provenance=provenance)
    run.update(wall_before=wall_before, run_start=run_start)
    trainer = SPICTrainer(model, out, cfg, train, **run)  # before the hook below: the EMA copies
    if cfg.feature_distill_weight > 0:
        if model.cfg.backbone != "resnet" or not (cfg.teacher or cfg.init_from):
            raise SystemExit(
                "feature_distill_weight needs a resnet model and a teacher or init_from"
            )
        trainer.feature_teacher = FeatureTeacher(model, cfg.init_from or cfg.teacher, device)
        # The cloud's features at the cut, caught on the way through h_c in the training pass.
        model.h_c.features[matched_layers(model.cfg) - 1].register_forward_hook(
            lambda _m, _i, out: trainer.cut.__setitem__("features", out)
        )
    if ckpt is not None:
        trainer.resume(ckpt)
    if world > 1:
        trainer.net = torch.nn.parallel.DistributedDataParallel(model)
    trainer.fit(args.epochs_this_run)

    if world > 1:
        # Rank 0 validates and saves while the others are done; tearing gloo down on one rank while
        # another still works aborted that rank ("terminate called without an active exception").
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
