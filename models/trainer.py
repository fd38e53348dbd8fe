"""The one training loop that spic-train and spic-train-reference share.

A ``Trainer`` owns what every recipe trains with: AdamW under a one-cycle schedule, an optional
weight average (``models/ema.py``), the step count, a JSONL log, a progress bar, and a
self-describing checkpoint after every epoch that ``--resume`` continues exactly. A recipe
subclasses it and fills in the hooks: what a batch is (``batches``), the loss of one
(``loss``), what a step reports (``after_step``), what the checkpoint says of the run
(``describe``) and what validation measures (``validate``). The loop itself reads top to bottom
in ``fit``, as nanoGPT keeps its one loop.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from models.ema import ema_of, ema_state


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


def save_checkpoint(path: Path, **state: Any) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a crash mid-save never leaves a half-written checkpoint


def load_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """A checkpoint as saved: plain Python and tensors, on the CPU."""
    ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt


class CropSchedule(Protocol):
    epochs: int
    crop: int
    final_crop: int
    final_crop_epochs: int


def progressive_crop(cfg: CropSchedule, epoch: int) -> int:
    """The training crop at ``epoch``: ``crop``, and ``final_crop`` over the last
    ``final_crop_epochs`` epochs (progressive resizing; the configs say why)."""
    return cfg.final_crop if epoch >= cfg.epochs - cfg.final_crop_epochs else cfg.crop


class Trainer:
    """AdamW + one-cycle + optional EMA over ``epochs`` × ``steps_per_epoch`` steps of ``model``.

    Build it before registering forward hooks on ``model``: the average is a copy and would carry
    them. Only the main process (``is_main``) writes the log and the checkpoint."""

    # The progress bar's fields: a key of ``after_step``'s record -> its format spec.
    postfix: dict[str, str] = {"loss": ".3f", "acc": ".2f"}

    def __init__(
        self,
        model: torch.nn.Module,
        out: Path,
        *,
        lr: float,
        weight_decay: float,
        warmup_frac: float,
        ema_decay: float,
        epochs: int,
        steps_per_epoch: int,
        log_every: int,
        is_main: bool = True,
    ) -> None:
        self.model, self.out, self.is_main = model, out, is_main
        self.epochs, self.steps_per_epoch, self.log_every = epochs, steps_per_epoch, log_every
        self.ema = ema_of(model, ema_decay)
        self.optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            max_lr=lr,
            total_steps=epochs * steps_per_epoch,
            pct_start=warmup_frac,
        )
        self.step, self.epoch = 0, 0

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    @property
    def scored(self) -> torch.nn.Module:
        """What validation and export read: the average when the run keeps one."""
        return self.model if self.ema is None else self.ema.module

    # --- the recipe's hooks

    def batches(self, epoch: int) -> Iterable[Any]:
        raise NotImplementedError

    def loss(self, batch: Any, epoch: int) -> torch.Tensor:
        """The forward pass of one batch; keep what ``after_step`` reports on."""
        raise NotImplementedError

    def after_step(self, epoch: int) -> dict[str, Any]:
        """Work after the optimizer step (``self.step`` counts it); returns what the progress bar
        shows (``postfix``'s keys)."""
        raise NotImplementedError

    def log_record(self, shown: dict[str, Any]) -> dict[str, Any]:
        """The step's log line (every ``log_every`` steps only: it may cost device syncs)."""
        return shown

    def describe(self) -> dict[str, Any]:
        """The checkpoint's entries that say what the run is: config, classes, commands..."""
        raise NotImplementedError

    def validate(self, epoch: int, started: float) -> dict[str, Any] | None:
        """The validation record after ``epoch`` epochs (the epoch began at ``started``), or None."""
        return None

    # --- the loop

    def state(self) -> dict[str, Any]:
        """The checkpoint: the run's description and everything ``resume`` needs."""
        return {
            **self.describe(),
            "model": self.model.state_dict(),
            # Batches and augmentations are seeded per epoch, so these replay the run exactly.
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "torch_rng": torch.get_rng_state(),  # dropout draws: resume replays them exactly
            **ema_state(self.ema),
        }

    def resume(self, ckpt: dict[str, Any]) -> None:
        """Continue from a checkpoint ``state`` wrote, where it stopped."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.step, self.epoch = ckpt["step"], ckpt["epoch"]
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema_state"])
        if "torch_rng" in ckpt:
            torch.set_rng_state(ckpt["torch_rng"])
        if self.is_main:
            print(
                f"resumed from {self.checkpoint_path} at epoch {self.epoch}, step {self.step}",
                file=sys.stderr,
            )

    def write_log(self, record: dict[str, Any]) -> None:
        if self.is_main:  # appended and closed per record: no handle outlives the run or a crash
            with (self.out / "log.jsonl").open("a") as log:
                log.write(json.dumps(record) + "\n")

    def fit(self, epochs_this_run: int | None = None) -> int:
        """Train from ``self.epoch`` to the end, or for ``epochs_this_run`` epochs; returns the
        epoch it stopped after."""
        last_epoch = (
            self.epochs
            if epochs_this_run is None
            else min(self.epochs, self.epoch + epochs_this_run)
        )
        for epoch in range(self.epoch, last_epoch):
            t0 = time.time()
            bar = tqdm(
                self.batches(epoch),
                total=self.steps_per_epoch,
                desc=f"epoch {epoch + 1}/{self.epochs}",
                disable=not self.is_main,
                file=sys.stderr,
                dynamic_ncols=True,
                mininterval=1 if sys.stderr.isatty() else 30,
            )
            for batch in bar:
                loss = self.loss(batch, epoch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                if self.ema is not None:
                    self.ema.update_parameters(self.model)
                self.step += 1
                shown = self.after_step(epoch)
                bar.set_postfix(
                    {k: format(shown[k], spec) for k, spec in self.postfix.items()}, refresh=False
                )
                if self.step % self.log_every == 0:
                    record = self.log_record(shown)
                    lr = self.scheduler.get_last_lr()[0]
                    self.write_log({"step": self.step, "epoch": epoch, **record, "lr": lr})
            self.epoch = epoch + 1
            if self.is_main:
                save_checkpoint(self.checkpoint_path, **self.state())
            metrics = self.validate(self.epoch, t0)
            if metrics is not None:
                self.write_log({"val": metrics})
                print(json.dumps({"val": metrics}), file=sys.stderr)
            # What spic-train --recipe (models/recipe.py) refines its ETA from while a stage trains.
            self.write_log({"epoch_end": {"epoch": self.epoch, "epochs": self.epochs}})
        return last_epoch
