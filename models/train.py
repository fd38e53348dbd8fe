"""spic-train: multi-task training of SPIC, L = w(QF)·MSE + α·rate + β·cross-entropy.

One readable loop. Runs on CPU by default; ``--device cuda`` for a GPU; under ``torchrun`` it
trains data-parallel with DDP (gloo on CPU, NCCL on CUDA). A run directory holds:

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

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.config import TrainConfig, apply_overrides
from models.data import (
    DATA_HELP,
    InMemoryImages,
    data_provenance,
    eval_arrays,
    train_batches,
)
from models.distill import FeatureTeacher, Teacher, distillation_loss, feature_distillation_loss
from models.ema import ema_of, ema_state, final_weights
from models.entropy_model import bits_per_pixel
from models.mixing import mix_batch, mixed_cross_entropy
from models.network import SPIC, SPICConfig, quantize
from models.split_resnet import init_from_reference, matched_layers
from models.zoo import create_model


def to_tensor(batch_nhwc: np.ndarray, device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(batch_nhwc).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay conv and linear weights only: decaying BatchNorm or the density would bias them."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        is_weight = p.ndim >= 2 and not name.startswith("entropy_model")
        (decay if is_weight else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def psnr_db(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [0, 1] (peak 1); MSE floored at 1e-10 (100 dB)."""
    mse = ((x_hat - x) ** 2).flatten(1).mean(1)
    return -10 * mse.clamp_min(1e-10).log10()


@torch.no_grad()
def evaluate(
    model: SPIC, images: np.ndarray, labels: np.ndarray, qfs, device, batch: int = 100
) -> dict:
    """Top-1 unquantized and per QF, the model's rate estimate, and reconstruction PSNR."""
    model.eval()
    correct = {"none": 0, **{q: 0 for q in qfs}}
    bits = {q: 0.0 for q in qfs}
    psnr_sum = {q: 0.0 for q in qfs}  # dB, summed over images
    for i in range(0, len(images), batch):
        x = to_tensor(images[i : i + batch], device)
        y_true = torch.from_numpy(labels[i : i + batch]).to(device)
        y = model.g_a(x)
        correct["none"] += (model.h_c(y).argmax(1) == y_true).sum().item()
        for q in qfs:
            y_hat = quantize(y, q, "ste")
            correct[q] += (model.h_c(y_hat).argmax(1) == y_true).sum().item()
            lik = model.entropy_model.likelihood(y_hat, q)
            bits[q] += bits_per_pixel(lik, x.shape[2] * x.shape[3]).sum().item()
            psnr_sum[q] += psnr_db(model.g_s(y_hat), x).sum().item()
    n = len(images)
    out: dict[str, object] = {"top1_unquantized": correct["none"] / n}
    for q in qfs:
        out[f"qf{q}"] = {"top1": correct[q] / n, "model_bpp": bits[q] / n, "psnr": psnr_sum[q] / n}
    model.train()
    return out


def rate_target(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The rate the dual update steers to: annealed from the start value to the final one."""
    frac = min(1.0, step / max(1.0, cfg.rate_anneal_frac * total_steps))
    return cfg.rate_target_start_bpp + frac * (cfg.rate_target_bpp - cfg.rate_target_start_bpp)


def saturation_penalty(z: torch.Tensor, margin: float) -> torch.Tensor:
    """mean(max(|z| - margin, 0)²) over the latent's logits z: zero inside ±margin."""
    return F.relu(z.abs() - margin).pow(2).mean()


def mse_weight(qf: int, cfg: TrainConfig) -> float:
    """The reconstruction term's weight at ``qf``: mse_weight·(qf / rate_target_qf)^mse_qf_exponent."""
    return float(cfg.mse_weight * (qf / cfg.rate_target_qf) ** cfg.mse_qf_exponent)


def feature_distill_weight(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The feature term's weight: feature_distill_weight at step 0, falling linearly to 0."""
    frac = step / max(1.0, cfg.feature_distill_frac * total_steps)
    return cfg.feature_distill_weight * max(0.0, 1.0 - frac)


def update_alpha(
    log_alpha: float, measured_bpp: float, target_bpp: float, cfg: TrainConfig
) -> float:
    """One dual-ascent step on log(alpha): raise the rate weight when the rate is over target,
    lower it when under; the relative error is clipped to +-0.5 so one odd batch cannot swing it,
    and alpha stays in [alpha_min, alpha_max]."""
    rel = (measured_bpp - target_bpp) / target_bpp
    log_alpha += cfg.alpha_lr * max(-0.5, min(0.5, rel))
    return min(max(log_alpha, math.log(cfg.alpha_min)), math.log(cfg.alpha_max))


def save_checkpoint(path: Path, **state) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a crash mid-save never leaves a half-written checkpoint


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="spic-train", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help=DATA_HELP.format(split="train and val"))
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
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The command as it ran, kept in the checkpoint (one line per run, --resume runs appended) so
    # the model card records what was actually typed, not a reconstruction.
    command = "spic-train " + shlex.join(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    ckpt_path = out / "checkpoint.pt"
    cfg, ckpt, commands = resolve_config(args, ckpt_path, command)
    # Wall time of the whole run (data loading and validation included), summed over --resume
    # runs and kept in the checkpoint: the model card reports what training really cost.
    run_start = time.time()
    wall_before = float(ckpt.get("wall_seconds", 0.0)) if ckpt is not None else 0.0
    start: dict | None = None
    if cfg.init_checkpoint and ckpt is None:
        if not Path(cfg.init_checkpoint).is_file():
            raise SystemExit(f"init_checkpoint: no checkpoint at {cfg.init_checkpoint}")
        start = torch.load(cfg.init_checkpoint, map_location="cpu", weights_only=False)
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
    is_main = rank == 0
    torch.manual_seed(cfg.seed)

    if is_main:
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
    ema = ema_of(model, cfg.ema_decay)  # before the hook below: the copy would carry it
    feature_teacher: FeatureTeacher | None = None
    cut: dict[str, torch.Tensor] = {}
    if cfg.feature_distill_weight > 0:
        if model.cfg.backbone != "resnet" or not (cfg.teacher or cfg.init_from):
            raise SystemExit(
                "feature_distill_weight needs a resnet model and a teacher or init_from"
            )
        feature_teacher = FeatureTeacher(model, cfg.init_from or cfg.teacher, device)
        # The cloud's features at the cut, caught on the way through h_c in the training pass.
        model.h_c.features[matched_layers(model.cfg) - 1].register_forward_hook(
            lambda _m, _i, out: cut.__setitem__("features", out)
        )
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    local_batch = cfg.batch_size // world
    steps_per_epoch = len(train) // world // local_batch
    total_steps = cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=cfg.lr,
        total_steps=total_steps,
        pct_start=cfg.warmup_frac,
    )
    step, start_epoch, log_alpha = 0, 0, math.log(cfg.alpha_init)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        step, start_epoch, log_alpha = ckpt["step"], ckpt["epoch"], math.log(ckpt["alpha"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema_state"])
        if "torch_rng" in ckpt:
            torch.set_rng_state(ckpt["torch_rng"])
        if is_main:
            print(f"resumed from {ckpt_path} at epoch {start_epoch}, step {step}", file=sys.stderr)

    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model)
    log_path = out / "log.jsonl"

    def write_log(record: dict) -> None:
        if is_main:  # appended and closed per record: no handle outlives the run or a crash
            with log_path.open("a") as log:
                log.write(json.dumps(record) + "\n")

    def checkpoint(epoch: int) -> None:
        if is_main:
            save_checkpoint(
                ckpt_path,
                config={"train": cfg.to_dict(), "arch": model.cfg.to_dict(), "model": cfg.model},
                classes=train.classes,
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict(),
                step=step,
                epoch=epoch,
                alpha=math.exp(log_alpha),
                torch_rng=torch.get_rng_state(),  # dropout draws: resume replays them exactly
                wall_seconds=wall_before + time.time() - run_start,
                machine=f"{device.type}, {torch.get_num_threads()} threads, "
                f"{os.cpu_count()} CPU cores visible, world size {world}",
                commands=commands,
                data_provenance=provenance,
                **ema_state(ema),
            )

    last_epoch = (
        cfg.epochs
        if args.epochs_this_run is None
        else min(cfg.epochs, start_epoch + args.epochs_this_run)
    )
    for epoch in range(start_epoch, last_epoch):
        crop = cfg.final_crop if epoch >= cfg.epochs - cfg.final_crop_epochs else cfg.crop
        rng = np.random.default_rng([cfg.seed, epoch])  # per-epoch seed: resume replays exactly
        qf_rng = np.random.default_rng([cfg.seed, epoch, 1])
        mix_rng = np.random.default_rng([cfg.seed, epoch, 2])
        bar = tqdm(
            train_batches(train, local_batch, crop, rng, rank, world),
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not is_main,
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=1 if sys.stderr.isatty() else 30,
        )
        t0 = time.time()
        for images, labels in bar:
            # --- forward: L = w(QF)·MSE + alpha·rate + beta·cross-entropy, at a QF drawn per batch
            qf = int(qf_rng.choice(cfg.qfs, p=cfg.qf_probabilities()))
            x = to_tensor(images, device)
            target = torch.from_numpy(labels).to(device)
            mixed = mix_batch(x, target, mix_rng, cfg.mixup_alpha, cfg.cutmix_alpha)
            x = mixed.x
            res = net(x, qf, mode=cfg.train_quantize)
            pixels = x.shape[2] * x.shape[3]
            mse = F.mse_loss(res["x_hat"], x)
            bpp = bits_per_pixel(res["likelihoods"], pixels).mean()
            ce = mixed_cross_entropy(res["logits"], mixed, cfg.label_smoothing)
            if teacher is not None:
                kd = distillation_loss(res["logits"], teacher.logits(x), cfg.distill_temperature)
                ce = (1 - cfg.distill_weight) * ce + cfg.distill_weight * kd
            alpha = math.exp(log_alpha)
            saturation = saturation_penalty(res["z"], cfg.latent_logit_margin)
            loss = mse_weight(qf, cfg) * mse + alpha * bpp + cfg.beta * ce
            loss = loss + cfg.latent_logit_l2 * saturation
            feat = torch.zeros(())
            if feature_teacher is not None:
                feat = feature_distillation_loss(cut["features"], feature_teacher.features(x))
                loss = loss + feature_distill_weight(cfg, step, total_steps) * feat

            # --- backward and step
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1

            # --- dual update of alpha on the rate at the target QF (same step on every rank)
            with torch.no_grad():
                if qf == cfg.rate_target_qf:
                    bpp_t = bpp.detach()
                else:
                    y_t = quantize(res["y"].detach(), cfg.rate_target_qf, "ste")
                    lik = model.entropy_model.likelihood(y_t, cfg.rate_target_qf)
                    bpp_t = bits_per_pixel(lik, pixels).mean()
                if world > 1:
                    torch.distributed.all_reduce(bpp_t)
                    bpp_t /= world
            target_bpp = rate_target(cfg, step, total_steps)
            log_alpha = update_alpha(log_alpha, bpp_t.item(), target_bpp, cfg)

            # --- logging

            acc = (res["logits"].argmax(1) == target).float().mean().item()
            bar.set_postfix(
                loss=f"{loss.item():.3f}",
                acc=f"{acc:.2f}",
                bpp=f"{bpp.item():.3f}",
                qf=qf,
                alpha=f"{alpha:.3g}",
            )
            if step % cfg.log_every == 0:
                write_log(
                    {
                        "step": step,
                        "epoch": epoch,
                        "qf": qf,
                        "loss": loss.item(),
                        "mse": mse.item(),
                        "latent_logit_ms": res["z"].pow(2).mean().item(),
                        "bpp": bpp.item(),
                        "bpp_target_qf": bpp_t.item(),
                        "target_bpp": target_bpp,
                        "ce": ce.item(),
                        "feature_distill": feat.item(),
                        "acc": acc,
                        "alpha": alpha,
                        "crop": crop,
                        "lr": scheduler.get_last_lr()[0],
                    }
                )
        checkpoint(epoch + 1)
        last = epoch + 1 == cfg.epochs
        if is_main and (last or (epoch + 1) % cfg.eval_every == 0):
            scored: SPIC = model if ema is None else ema.module  # type: ignore[assignment]
            metrics = evaluate(scored, val_images, val_labels, cfg.qfs, device)
            metrics.update(epoch=epoch + 1, step=step, epoch_seconds=time.time() - t0)
            write_log({"val": metrics})
            print(json.dumps({"val": metrics}), file=sys.stderr)

    if world > 1:
        # Rank 0 validates and saves while the others are done; tearing gloo down on one rank while
        # another still works aborted that rank ("terminate called without an active exception").
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


def load_checkpoint(path: str | Path) -> tuple[SPIC, dict]:
    """Rebuild the model a checkpoint describes (used by export and evaluation)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    arch = SPICConfig.from_dict(ckpt["config"]["arch"])
    model = SPIC(arch)
    model.load_state_dict(final_weights(ckpt))
    model.eval()
    return model, ckpt


if __name__ == "__main__":
    raise SystemExit(main())
