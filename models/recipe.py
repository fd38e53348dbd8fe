"""spic-train --recipe full: the shipped recipe on one dataset, in one command.

    spic-train --data DATA --out runs/mine --recipe full --bundle-out models/bundles/my-model

runs, each in its own folder of ``--out``, what README's five commands did by hand:

    teacher/  spic-train-reference, the shipped teacher's settings (50 epochs, EMA 0.999)
    student/  spic-train with models/configs/spic-split-s16-base-qfs.json, teacher and init_from
              the teacher's bundle
    export/   spic-export with the shipped bundle's options (default QF 4, idle channels pinned,
              a 64-channel enhancement layer from QF 48 on a QF-16 base)
    int8/     spic-int8: the export plus an INT8 encoder
    card/     spic-card --int8: the INT8 bundle measured on val, MODEL_CARD.md and eval.json

and copies card/ to ``--bundle-out`` (default OUT/bundle), named after that folder. A stage that
finished writes ``recipe.json`` in its folder and is skipped by the next run, so the same command
continues after a crash or Ctrl-C; a training stage cut short continues from its last epoch.

Progress: one line per stage start and end, and one per training epoch, with the time elapsed
and an ETA for the whole recipe, on stderr beside each tool's own progress bars. The ETA starts
from prior costs per image (measured on 2 CPU cores, ``PRIOR_SECONDS``) and is rescaled by how
long the work done so far really took, from the teacher's first epoch on.

Each stage takes ``--set-STAGE KEY=VALUE`` (repeatable) on top of its shipped settings: the
teacher's and the student's are config fields (``--set-teacher epochs=20``; the student's is
spic-train's own ``--set``), the others' become the tool's flags (``--set-export size=160`` is
``--size 160``, ``--set-card limit=200`` is ``--limit 200``, ``=true`` a bare flag).
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from models.config import Schedule, TrainConfig, apply_overrides
from models.data import scan_image_folder
from models.trainer import CropSchedule, progressive_crop
from shared.manifest import load_manifest

STAGES = ("teacher", "student", "export", "int8", "unknown", "card")
STUDENT_CONFIG = Path(__file__).resolve().parent / "configs" / "spic-split-s16-base-qfs.json"
# README's "Your own classes": the settings the shipped teacher and bundle were made with.
TEACHER_SETTINGS = ["epochs=50", "ema_decay=0.999"]
EXPORT_OPTIONS = ["--default-qf", "4", "--pin-idle", "0.01", "--enhance-channels", "64"]
EXPORT_OPTIONS += ["--enhance-from-qf", "48", "--enhance-base-qf", "16"]
# The first guess of each stage's time on 2 CPU cores, before any is measured: seconds per image
# (224² for export, INT8 and the card; per epoch at a 128² crop for training, scaled by crop² for
# larger crops) plus a fixed start (loading, validation, export). Training rates: the shipped
# teacher's 56 min and student's 92.1 min on Imagenette (docs/models.md); the others and the starts
# from the CPU seconds of the hymenoptera run in README's "Your own classes". Measured time then
# rescales the guess (Recipe.eta).
PRIOR_SECONDS = {
    "teacher": 0.0065,
    "student": 0.016,
    "export": 0.12,
    "int8": 0.02,
    "unknown": 0.02,
    "card": 0.3,
}
STARTUP_SECONDS = {"teacher": 60, "student": 60, "export": 15, "int8": 5, "unknown": 5, "card": 10}
# A module of each extra the stages need: checked before hours of training, not after.
NEEDED = {"torch": "train", "onnx": "train", "skimage": "eval", "httpx": "edge", "fastapi": "cloud"}
ROOT = Path(__file__).resolve().parent.parent


def add_arguments(p: argparse.ArgumentParser) -> None:
    """spic-train's recipe flags; without ``--recipe`` spic-train trains one model as always."""
    p.add_argument(
        "--recipe",
        choices=["full"],
        help="run the whole recipe on --data: teacher, student (--config and --set apply to it), "
        "export, INT8, card (models/recipe.py); resumable, with progress and an ETA",
    )
    p.add_argument("--bundle-out", help="with --recipe: where the bundle goes (default OUT/bundle)")
    examples = {
        "teacher": "a spic-train-reference config field, e.g. epochs=20",
        "export": "a spic-export flag, e.g. size=160 for --size 160",
        "int8": "a spic-int8 flag, e.g. images=128",
        "card": "a spic-card flag, e.g. limit=500 (true: a bare flag)",
    }
    for stage, example in examples.items():
        p.add_argument(
            f"--set-{stage}",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"with --recipe, repeatable: {example}",
        )


def duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def as_flags(items: list[str]) -> list[str]:
    """``KEY=VALUE`` items as command-line flags: ``--KEY VALUE``, or ``--KEY`` for ``true``."""
    flags: list[str] = []
    for item in items:
        key, _, value = item.partition("=")
        flags += [f"--{key}"] if value.lower() == "true" else [f"--{key}", value]
    return flags


def crop_weights(cfg: CropSchedule) -> list[float]:
    """Each epoch's cost relative to one at a 128² crop (progressive resizing: models/trainer.py)."""
    return [(progressive_crop(cfg, e) / 128) ** 2 for e in range(cfg.epochs)]


def prior(stage: str, images: float) -> float:
    """What ``stage`` is expected to take on 2 CPU cores before any of it is measured."""
    return STARTUP_SECONDS[stage] + PRIOR_SECONDS[stage] * images


def cpu_seconds() -> float:
    """CPU time of the stages run so far, all cores (on a shared machine, what they cost)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Stage:
    name: str
    folder: Path
    argv: list[str]
    # What runs it, as python -m MODULE ARGV: each tool is a program of its own, which no other
    # module imports (tests/test_layering.py).
    module: str
    prior: float  # seconds this stage is expected to take before any is measured
    epoch_weights: list[float] | None = None  # a training stage: each epoch's share of its work
    resume_argv: list[str] | None = None  # a training stage cut short continues with these

    @property
    def marker(self) -> Path:
        return self.folder / "recipe.json"

    def done(self) -> dict | None:
        return json.loads(self.marker.read_text()) if self.marker.is_file() else None


class Recipe:
    """The five stages and the progress lines: an ETA from the priors, rescaled by measured time."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.out, data = args, Path(args.out), Path(args.data)
        self.bundle_out = Path(args.bundle_out) if args.bundle_out else self.out / "bundle"
        n_train = len(scan_image_folder(data / "train")[0])
        n_val = len(scan_image_folder(data / "val")[0])
        device = ["--device", args.device]
        val_limit = ["--val-limit", str(args.val_limit)] if args.val_limit else []
        folder = {s: self.out / s for s in STAGES}
        teacher_bundle = folder["teacher"] / "bundle"

        sets = [a for item in [*TEACHER_SETTINGS, *args.set_teacher] for a in ("--set", item)]
        argv = ["--data", str(data), "--out", str(folder["teacher"]), *device, *val_limit]
        # The teacher's epochs and crops, for its ETA: fields of the schedule both recipes share.
        known = set(Schedule().to_dict())
        items = [i for i in [*TEACHER_SETTINGS, *args.set_teacher] if i.split("=")[0] in known]
        teacher_w = crop_weights(Schedule.from_dict(apply_overrides(Schedule().to_dict(), items)))
        stages = [
            Stage(
                "teacher",
                folder["teacher"],
                [*argv, *sets],
                "models.train_reference",
                prior("teacher", n_train * sum(teacher_w)),
                teacher_w,
                [*argv, "--resume"],
            )
        ]
        config = args.config or str(STUDENT_CONFIG)
        start = [f"teacher={teacher_bundle}", f"init_from={teacher_bundle}"]
        sets = [a for item in [*start, *args.set] for a in ("--set", item)]
        argv = ["--data", str(data), "--out", str(folder["student"]), *device, *val_limit]
        student_cfg = TrainConfig.from_dict(
            apply_overrides(TrainConfig.from_json(config).to_dict(), [*start, *args.set])
        )
        student_w = crop_weights(student_cfg)
        stages.append(
            Stage(
                "student",
                folder["student"],
                [*argv, "--config", config, *sets],
                "models.train",
                prior("student", n_train * sum(student_w)),
                student_w,
                [*argv, "--resume"],
            )
        )
        checkpoint = str(folder["student"] / "checkpoint.pt")
        argv = [checkpoint, "--out", str(folder["export"]), "--data", str(data)]
        argv += ["--name", self.bundle_out.name, *EXPORT_OPTIONS, *as_flags(args.set_export)]
        size = int(dict(zip(argv, argv[1:], strict=False)).get("--size", 224))  # last one wins
        pixels = (size / 224) ** 2
        stages.append(
            Stage(
                "export",
                folder["export"],
                argv,
                "models.export",
                prior("export", n_train * pixels),
            )
        )
        int8_images = min(n_train, 256)
        argv = [str(folder["int8"]), "--data", str(data), *as_flags(args.set_int8)]
        stages.append(
            Stage("int8", folder["int8"], argv, "models.int8", prior("int8", int8_images))
        )
        # The head's reject rule: its threshold accepts 95% of val frames (evaluation.unknown;
        # with no foreign photos to measure against, the knn rule, measured best on the shipped).
        argv = ["--bundle", str(folder["unknown"]), "--data", str(data), "--write", "--no-progress"]
        unknown_images = min(n_train, 2000) + n_val
        stages.append(
            Stage(
                "unknown",
                folder["unknown"],
                argv,
                "evaluation.unknown",
                prior("unknown", unknown_images * pixels),
            )
        )
        argv = ["--bundle", str(folder["card"]), "--data", str(data), "--int8"]
        argv += as_flags(args.set_card)
        card_cost = prior("card", n_val * pixels)
        stages.append(Stage("card", folder["card"], argv, "evaluation.card", card_cost))
        self.stages = stages
        self.started = time.time()
        self.measured = 0.0  # seconds of work run in this process, and the priors they stand for
        self.measured_prior = 0.0

    # --- progress

    def say(self, stage: Stage, text: str) -> None:
        i = self.stages.index(stage) + 1
        # On a terminal, over the stage's progress bar (it redraws below), not glued to it.
        clear = "\r\x1b[K" if sys.stderr.isatty() else ""
        line = f"{clear}[recipe] {i}/{len(self.stages)} {stage.name}: {text}"
        print(line, file=sys.stderr, flush=True)

    def eta(self, stage: Stage, done_here: float, elapsed: float, left: float) -> str:
        """The recipe's time left: ``done_here`` of ``stage``'s prior was run in ``elapsed``
        seconds by this process and ``left`` of it remains; the later stages' priors follow."""
        measured = self.measured + elapsed
        prior = self.measured_prior + done_here * stage.prior
        scale = measured / prior if prior > 0 and measured > 0 else 1.0
        later = self.stages[self.stages.index(stage) + 1 :]
        rest = left * stage.prior + sum(s.prior for s in later if s.done() is None)
        total = time.time() - self.started
        return f"{duration(total)} elapsed, ETA {duration(scale * rest)} for the recipe"

    # --- the stages

    def prepare(self, stage: Stage) -> list[str]:
        """The argv to run ``stage`` with, its folder made ready: a training stage cut short
        resumes; the bundle stages start from a copy of the previous stage's bundle."""
        if stage.resume_argv and (stage.folder / "checkpoint.pt").is_file():
            self.say(stage, "continuing from its last checkpoint")
            return stage.resume_argv
        if stage.name in ("int8", "unknown", "card"):
            previous = self.stages[self.stages.index(stage) - 1].folder
            shutil.rmtree(stage.folder, ignore_errors=True)
            shutil.copytree(previous, stage.folder, ignore=shutil.ignore_patterns("recipe.json"))
        return stage.argv

    def run_stage(self, stage: Stage) -> int:
        record = stage.done()
        if record is not None:
            note = (
                ""
                if record["argv"] == stage.argv
                else " (made with other settings: remove it to redo it)"
            )
            self.say(stage, f"complete in {stage.folder}, skipped{note}")
            return 0
        self.say(stage, f"start, {self.eta(stage, 0.0, 0.0, 1.0)}")
        t0 = time.time()
        argv = self.prepare(stage)

        # Each stage is its own program; PYTHONPATH lets a checkout that is not installed run it.
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        log = stage.folder / "log.jsonl"
        seen = log.stat().st_size if log.is_file() else 0
        first: list[float] = []  # the share of the stage done before this run of it
        cpu0 = cpu_seconds()
        proc = subprocess.Popen([sys.executable, "-m", stage.module, *argv], env=env)
        rc = None
        try:
            while rc is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    rc = proc.wait(timeout=1)
                # A training stage logs each epoch's end (models/trainer.py): refine the ETA.
                seen = self.epochs_logged(stage, log, seen, first, t0)
        except BaseException:  # Ctrl-C (the stage got it too) or worse: no stage outlives us
            proc.terminate()
            proc.wait()
            raise
        seconds = time.time() - t0
        if rc != 0:
            self.say(stage, f"failed (exit status {rc}) after {duration(seconds)}")
            return rc
        cpu = cpu_seconds() - cpu0
        self.measured += seconds
        self.measured_prior += (1 - (first[0] if first else 0.0)) * stage.prior
        record = {"argv": stage.argv, "seconds": seconds, "cpu_seconds": cpu}
        stage.marker.write_text(json.dumps(record) + "\n")
        done = f"done in {duration(seconds)} ({duration(cpu)} of CPU)"
        self.say(stage, f"{done}, {self.eta(stage, 0.0, 0.0, 0.0)}")
        return 0

    def epochs_logged(
        self, stage: Stage, log: Path, seen: int, first: list[float], t0: float
    ) -> int:
        """A progress line per epoch ``log`` gained past byte ``seen``; returns the new size."""
        if stage.epoch_weights is None or not log.is_file():
            return seen
        with log.open("rb") as f:
            f.seek(seen)
            text = f.read()
        complete = text[: text.rfind(b"\n") + 1]  # a line still being written waits
        for line in complete.decode().splitlines():
            end = json.loads(line).get("epoch_end")
            if end is None:
                continue
            weights = stage.epoch_weights
            if len(weights) != end["epochs"]:
                weights = [1.0] * end["epochs"]
            if not first:  # a resumed stage measured only the epochs it ran here
                first.append(sum(weights[: end["epoch"] - 1]) / sum(weights))
            fraction = sum(weights[: end["epoch"]]) / sum(weights)
            eta = self.eta(stage, fraction - first[0], time.time() - t0, 1 - fraction)
            self.say(stage, f"epoch {end['epoch']}/{end['epochs']}, {eta}")
        return seen + len(complete)

    def install(self) -> None:
        """card/ (the measured bundle) to --bundle-out, replacing an older bundle there."""
        made = self.stages[-1].folder
        manifest = load_manifest(made)
        target = self.bundle_out
        files = [p.name for p in made.iterdir() if p.is_file() and p.name != "recipe.json"]
        if (target / "manifest.json").is_file():
            same = filecmp.cmpfiles(made, target, files, shallow=False)[0]
            if len(same) == len(files):
                print(f"[recipe] {target} is already this bundle", file=sys.stderr)
                return
            shutil.rmtree(target)
        elif target.exists() and any(target.iterdir()):
            raise SystemExit(
                f"--bundle-out {target} is a folder that holds no bundle: not replaced"
            )
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            shutil.copy2(made / name, target / name)
        classes = ", ".join(c.id for c in manifest.classes)
        print(
            f"[recipe] bundle {target}: model {manifest.model_id}, classes {classes}; "
            f"serve it with: spic-cloud serve --bundle {target}",
            file=sys.stderr,
        )


def run_recipe(args: argparse.Namespace) -> int:
    """spic-train --recipe full (parsed by models/train.py)."""
    if args.resume or args.epochs_this_run:
        raise SystemExit("--recipe resumes by itself: drop --resume and --epochs-this-run")
    missing = sorted({x for m, x in NEEDED.items() if importlib.util.find_spec(m) is None})
    if missing:
        extras = ",".join(missing)
        raise SystemExit(
            f"spic-train --recipe needs the '{extras}' extras: pip install 'spic[{extras}]'"
        )
    recipe = Recipe(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for i, stage in enumerate(recipe.stages):
        if stage.done() is None:  # what follows was made from this stage's older output: redo it
            for later in recipe.stages[i + 1 :]:
                later.marker.unlink(missing_ok=True)
        rc = recipe.run_stage(stage)
        if rc != 0:
            return rc
    recipe.install()
    return 0
