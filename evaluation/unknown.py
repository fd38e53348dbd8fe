"""Choose and measure a bundle's reject rule: when its own head answers "unknown".

Frames of the head's own validation split (in distribution) against photos from elsewhere
(foreign): every rule of ``shared.reject`` is scored, the threshold of each set to accept
``--accept`` of the validation frames, and the rule with the highest AUROC is kept. ``--write``
stores it in the bundle (its ``knn`` bank as ``reject_bank.npy``); the codec id does not change.

    python -m evaluation.unknown --bundle models/bundles/spic-imagenette \
        --data ../shared/data/imagenette --foreign DATA/kodak --foreign ... --skimage --write

The knn bank is ``--prototypes`` centroids of ``--bank`` training frames, picked evenly over
classes with a fixed seed, so the rule never sees a validation frame. With ``--outliers DIR``
(repeat) the ``oe`` detector is trained too (``evaluation.outlier_exposure``): ``--oe-in`` other
training frames a class against those photos, over ``--oe-qfs``; it is measured like the rest.
Prints a JSON summary last.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from edge_client.encoder import EdgeEncoder
from evaluation.outlier_exposure import inputs_at, train_detector
from evaluation.reject_card import unknown_markdown
from models.data import DATA_HELP, images_under, pick, split_folder
from shared.manifest import BundleFile, load_manifest, write_manifest
from shared.reject import (
    SCORES,
    EmbeddedHead,
    RejectMeasured,
    RejectRule,
    auroc,
    familiar_features,
    prototypes,
    score_by,
    threshold_for,
)
from shared.reject_oe import OEDetector, oe_score, save_detector
from shared.runtime import SpicCodec

BANK_FILE = "reject_bank.npy"
BANK_ROLE = "reject_bank"
DETECTOR_FILE = "reject_oe.json"
DETECTOR_ROLE = "reject_detector"


def skimage_samples(into: Path) -> list[Path]:
    """scikit-image's bundled colour photographs, written as PNG files."""
    import skimage.data as sd

    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "cat"):
        a = getattr(sd, name)()
        if a.ndim == 3 and a.shape[2] in (3, 4):
            path = into / f"skimage-{name}.png"
            Image.fromarray(a[..., :3]).save(path)
            out.append(path)
    return out


class Scorer:
    """Encodes photos at a QF and runs the bundle's head: logits and knn features per photo."""

    def __init__(self, bundle: Path, qf: int | None, progress: bool):
        self.bundle = bundle
        self.encoder = EdgeEncoder(bundle, qf=qf, cache_dir=False, threads=2)
        self.encoders = {self.encoder.qf: self.encoder}
        self.codec = SpicCodec(bundle, threads=2)
        self.head = self.codec.head()
        if not self.head.has_features:
            raise SystemExit(f"{bundle}: the head has no features output (models/head_graph.py)")
        self.progress = progress

    def run(
        self, paths: list[Path], what: str, qf: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Logits, ``familiar_features`` and the graph's raw ``features`` of each photo."""
        qf = self.encoder.qf if qf is None else qf
        if qf not in self.encoders:
            self.encoders[qf] = EdgeEncoder(self.bundle, qf=qf, cache_dir=False, threads=2)
        channels = self.codec.manifest.latent.channels
        logits, feats, raw = [], [], []
        for i in tqdm(range(0, len(paths), 32), desc=what, disable=not self.progress):
            batch = []
            for p in paths[i : i + 32]:
                f = self.encoders[qf].encode_timed(p)
                batch.append(self.codec.manifest.dequantize_latent(f.symbols, f.qf)[:channels])
            x = np.stack(batch).astype(np.float32)
            out = self.head.session.run(["logits", "features"], {"latent": x})
            logits.append(out[0])
            feats.append(familiar_features(x, out[1]))
            raw.append(out[1])
        return np.concatenate(logits), np.concatenate(feats), np.concatenate(raw)


def source_name(folder: Path) -> str:
    """A foreign folder's name in the report: ``clothing_small/val`` is ``clothing_small``."""
    generic = {"val", "train", "test", "images"}
    return folder.parent.name if folder.name in generic else folder.name


def bank_paths(train: Path, n: int, seed: int) -> list[Path]:
    classes = sorted(d for d in train.iterdir() if d.is_dir())
    per = max(1, n // len(classes))
    return [p for d in classes for p in pick(images_under(d), per, seed)]


def oe_detector(
    args: argparse.Namespace, scorer: Scorer, bank: np.ndarray, train: Path
) -> OEDetector:
    """The ``oe`` detector: training frames apart from the bank's against ``--outliers``."""
    banked = set(bank_paths(train, args.bank, args.seed))
    classes = sorted(d for d in train.iterdir() if d.is_dir())
    rest = [[p for p in images_under(d) if p not in banked] for d in classes]
    in_paths = [p for r in rest for p in pick(r, args.oe_in, args.seed + 1)]
    out_paths = [
        p for d in args.outliers for p in pick(images_under(d), args.oe_per_source, args.seed)
    ]
    qfs = [int(q) for q in args.oe_qfs.split(",")]

    def run(paths: list[Path], qf: int, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return scorer.run(paths, what, qf)

    x_in = inputs_at(run, in_paths, qfs, bank, args.k, args.seed)
    x_out = inputs_at(run, out_paths, qfs, bank, args.k, args.seed)
    sources = ", ".join(f"{source_name(d)}" for d in args.outliers)
    return train_detector(x_in, x_out, trained={"outliers": sources, "qfs": args.oe_qfs})


def measure(args: argparse.Namespace) -> dict:
    scorer = Scorer(args.bundle, args.qf, not args.no_progress)
    train, val = split_folder(args.data, "train"), split_folder(args.data, "val")
    t0 = time.perf_counter()
    _, bank, _ = scorer.run(bank_paths(train, args.bank, args.seed), "bank")
    val_frames = scorer.run(images_under(val), "val")
    tmp = Path(tempfile.mkdtemp(prefix="spic-foreign-"))
    sources = {
        source_name(d): pick(images_under(d), args.per_source, args.seed) for d in args.foreign
    }
    if args.skimage:
        sources["skimage"] = skimage_samples(tmp)
    foreign = {name: scorer.run(paths, name) for name, paths in sources.items() if paths}
    if args.prototypes:
        bank = prototypes(bank, args.prototypes, args.seed)
    bank16 = bank.astype(np.float16).astype(np.float32)
    detector = oe_detector(args, scorer, bank16, train) if args.outliers else None

    def score(kind: str, frames: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        logits, feats, raw = frames
        if kind == "oe":
            assert detector is not None
            return oe_score(feats, raw, logits, bank16, args.k, detector)
        return score_by(kind, logits, feats, bank16, args.k)  # type: ignore[arg-type]

    rules: dict[str, dict[str, Any]] = {}
    for kind in (*SCORES, "oe") if detector else SCORES:
        s_in = score(kind, val_frames)
        th = threshold_for(s_in, args.accept)
        per = {n: score(kind, frames) for n, frames in foreign.items()}
        rules[kind] = {"threshold": th, "per_source": {}}
        if not per:  # nothing foreign to measure against: the threshold alone
            continue
        pooled = np.concatenate(list(per.values()))
        rules[kind] |= {
            "auroc": auroc(s_in, pooled),
            "foreign_accepted": float((pooled >= th).mean()),
            "per_source": {
                n: {"n": len(s), "auroc": auroc(s_in, s), "accepted": float((s >= th).mean())}
                for n, s in per.items()
            },
        }
    # Without foreign photos, knn: the rule measured best on the shipped head.
    best = max(rules, key=lambda k: float(rules[k]["auroc"])) if foreign else "knn"
    return {
        "bundle": str(args.bundle),
        "qf": scorer.encoder.qf,
        "n_val": len(val_frames[0]),
        "n_bank": len(bank),
        "accept": args.accept,
        "k": args.k,
        "rules": rules,
        "chosen": best,
        "seconds": time.perf_counter() - t0,
        "_bank": bank.astype(np.float16),
        "_detector": detector,
        "oe": None if detector is None else detector.model_dump(),
        "sources": {source_name(d): str(d) for d in args.foreign}
        | ({"skimage": "skimage.data samples"} if args.skimage else {}),
    }


def write_rule(bundle: Path, result: dict, command: str) -> None:
    """Store the chosen rule (and its bank) in the bundle; its codec id must not move."""
    manifest = load_manifest(bundle)
    kind, r = result["chosen"], result["rules"][result["chosen"]]
    files = dict(manifest.files)
    bank_role = detector_role = None
    if kind in ("knn", "oe"):
        np.save(bundle / BANK_FILE, result["_bank"])
        files[BANK_ROLE] = BundleFile(path=BANK_FILE, sha256="")
        bank_role = BANK_ROLE
    if kind == "oe":
        save_detector(result["_detector"], bundle / DETECTOR_FILE)
        files[DETECTOR_ROLE] = BundleFile(path=DETECTOR_FILE, sha256="")
        detector_role = DETECTOR_ROLE
    else:  # a detector the new rule does not read is not left behind
        files.pop(DETECTOR_ROLE, None)
        (bundle / DETECTOR_FILE).unlink(missing_ok=True)
    rule = RejectRule(
        score=kind,
        threshold=r["threshold"],
        accept=result["accept"],
        k=result["k"],
        bank=bank_role,
        detector=detector_role,
        measured=None
        if not r["per_source"]
        else RejectMeasured(
            auroc=r["auroc"],
            foreign_accepted=r["foreign_accepted"],
            n_in=result["n_val"],
            n_foreign=sum(s["n"] for s in r["per_source"].values()),
            foreign=", ".join(f"{n} ({s['n']})" for n, s in r["per_source"].items()),
            command=command,
        ),
    )
    slug = re.sub(r"[^a-z0-9._-]+", "-", manifest.name.lower()).strip("-._")[:64] or "bundle"
    name = manifest.head.name if manifest.head else slug
    head = EmbeddedHead(name=name, reject=rule)
    new = write_manifest(bundle, manifest.model_copy(update={"files": files, "head": head}))
    if new.model_id != manifest.model_id:
        raise SystemExit(f"codec id moved {manifest.model_id} -> {new.model_id}: not written")
    card_path = bundle / "MODEL_CARD.md"
    if card_path.is_file():
        card = re.sub(r"\n## Unknown\n.*", "", card_path.read_text(), flags=re.S)
        card_path.write_text(card.rstrip("\n") + "\n" + unknown_markdown(new))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help=DATA_HELP)
    p.add_argument("--foreign", type=Path, action="append", default=[], help="photos (repeat)")
    p.add_argument("--skimage", action="store_true", help="add scikit-image's sample photos")
    # 200 a source: no one source (851 hand signs) outweighs the others in the pooled figures.
    p.add_argument("--per-source", type=int, default=200)
    # Frames the prototypes are drawn from; 4000 gained 0.01 AUROC over 2000.
    p.add_argument("--bank", type=int, default=2000)
    # 100 centroids (64 kB of float16) of the bank separate as well as the 2000 frames (1.3 MB).
    p.add_argument("--prototypes", type=int, default=100, help="0: keep the frames themselves")
    p.add_argument("--k", type=int, default=1, help="knn: which neighbour (1 among prototypes)")
    p.add_argument("--accept", type=float, default=0.95, help="share of val frames accepted")
    p.add_argument("--qf", type=int, help="default: the bundle's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--outliers", type=Path, action="append", default=[], help="oe: photos (repeat)")
    p.add_argument("--oe-in", type=int, default=300, help="oe: training frames a class")
    p.add_argument("--oe-per-source", type=int, default=500, help="oe: at most, per --outliers")
    p.add_argument("--oe-qfs", default="2,4,8", help="oe: the QFs its frames are encoded at")
    p.add_argument("--write", action="store_true", help="store the chosen rule in the bundle")
    p.add_argument("--json", type=Path, help="also write the summary here")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    result = measure(args)
    command = "python -m evaluation.unknown " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.write:
        write_rule(args.bundle, result, command)
    summary = {k: v for k, v in result.items() if not k.startswith("_")}
    summary["command"] = command
    text = json.dumps(summary, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
