"""A trained head as a head folder (``shared.heads``): head.onnx, its reject rule, head.json,
HEAD_CARD.md.

The reject rule is fitted on the head's own validation split: ``max_softmax``, ``energy`` and
``knn`` are scored there, the threshold is the one that accepts ``accept`` (95%) of those frames
(``shared.reject.threshold_for``). ``knn`` is the rule unless photos from elsewhere are given
(``--foreign``): then the rule that best tells them apart (AUROC) is chosen, and what it did on
them is recorded. knn's bank is ``familiar_features`` of up to 2000 training frames, float16.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.data import WNID_NAMES
from models.head_data import LatentSet
from models.head_train import LatentHead, TrainResult, predict
from shared.heads import HeadManifest, HeadMeasured, load_head_manifest, write_head
from shared.manifest import BundleFile, ClassInfo
from shared.onnx_session import make_session
from shared.reject import (
    SCORES,
    RejectMeasured,
    RejectRule,
    Score,
    auroc,
    familiar_features,
    score_by,
    threshold_for,
)
from shared.runtime import SpicCodec

OPSET = 17
BANK_FRAMES = 2000
ACCEPT = 0.95
K = 10


def head_name(folder: Path) -> str:
    """The folder's name made a valid head name (lower case, [a-z0-9._-])."""
    name = re.sub(r"[^a-z0-9._-]+", "-", folder.name.lower()).strip("-._")[:64]
    return name or "head"


def export_onnx(model: LatentHead, path: Path, channels: int) -> None:
    """head.onnx: ``latent`` (N, C, h, w) -> ``logits`` (N, K), ``features`` (N, D)."""
    model = model.eval()
    probe = torch.rand(2, channels, 14, 14)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (probe,),
            str(path),
            input_names=["latent"],
            output_names=["logits", "features"],
            dynamic_axes={
                "latent": {0: "batch", 2: "height", 3: "width"},
                "logits": {0: "batch"},
                "features": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )


@dataclass
class Reject:
    rule: RejectRule
    bank: np.ndarray | None
    val_scores: dict[str, np.ndarray]


def fit_reject(
    model: LatentHead,
    train_latent: np.ndarray,
    val_latent: np.ndarray,
    foreign: np.ndarray | None = None,
    foreign_name: str = "",
    command: str = "",
) -> Reject:
    """The head's reject rule from its train and val latents ((N, C, h, w) each)."""
    rng = np.random.default_rng(0)
    pick = rng.choice(len(train_latent), min(BANK_FRAMES, len(train_latent)), replace=False)
    bank_in = train_latent[np.sort(pick)]
    bank = familiar_features(bank_in, predict(model, bank_in)[1]).astype(np.float16)

    def all_scores(latent: np.ndarray) -> dict[str, np.ndarray]:
        logits, feats = predict(model, latent)
        fam = familiar_features(latent, feats)
        return {s: score_by(s, logits, fam, bank.astype(np.float32), K) for s in SCORES}

    val = all_scores(val_latent)
    chosen: Score = "knn"
    measured = None
    if foreign is not None and len(foreign):
        out = all_scores(foreign)
        areas = {s: auroc(val[s], out[s]) for s in SCORES}
        chosen = max(SCORES, key=lambda s: (areas[s], s == "knn"))
        threshold = threshold_for(val[chosen], ACCEPT)
        measured = RejectMeasured(
            auroc=areas[chosen],
            foreign_accepted=float((out[chosen] >= threshold).mean()),
            n_in=len(val_latent),
            n_foreign=len(foreign),
            foreign=foreign_name,
            command=command,
        )
    rule = RejectRule(
        score=chosen,
        threshold=threshold_for(val[chosen], ACCEPT),
        accept=ACCEPT,
        k=K,
        bank="bank" if chosen == "knn" else None,
        measured=measured,
    )
    return Reject(rule, bank if chosen == "knn" else None, val)


def class_infos(classes: list[str]) -> list[ClassInfo]:
    return [ClassInfo(index=i, id=c, name=WNID_NAMES.get(c, c)) for i, c in enumerate(classes)]


def write_head_folder(
    out: Path,
    codec: SpicCodec,
    result: TrainResult,
    train: LatentSet,
    reject: Reject,
    measured: HeadMeasured,
    name: str,
    qf: int | None,
) -> HeadManifest:
    """head.onnx, bank.npy (knn), head.json and HEAD_CARD.md in ``out``; the manifest, verified
    and with its graph run once through onnxruntime on a latent of the codec's size."""
    out.mkdir(parents=True, exist_ok=True)
    channels = codec.manifest.latent.channels
    export_onnx(result.model, out / "head.onnx", channels)
    files = {"graph": BundleFile(path="head.onnx", sha256="")}
    if reject.bank is not None:
        np.save(out / "bank.npy", reject.bank)
        files["bank"] = BundleFile(path="bank.npy", sha256="")
    elif (out / "bank.npy").exists():
        (out / "bank.npy").unlink()  # a stale bank of an earlier head in this folder
    manifest = HeadManifest(
        name=name,
        codec_id=codec.model_id,
        architecture=f"spic-head-{result.kind}",
        classes=class_infos(train.classes),
        files=files,
        reject=reject.rule,
        measured=measured,
    )
    sealed = write_head(out, manifest)
    session = make_session(out / "head.onnx", threads=1, cache_dir=False)
    probe = np.zeros((1, *codec.native_shape), dtype=np.float32)[:, :channels]
    logits = session.run(["logits"], {"latent": probe})[0]
    if logits.shape != (1, len(train.classes)):
        raise RuntimeError(f"head.onnx answers {logits.shape}, not (1, {len(train.classes)})")
    (out / "HEAD_CARD.md").write_text(card(sealed, result, train, qf, codec))
    load_head_manifest(out)
    return sealed


def card(
    m: HeadManifest, result: TrainResult, train: LatentSet, qf: int | None, codec: SpicCodec
) -> str:
    assert m.measured is not None
    me, r = m.measured, m.reject
    rows = "\n".join(f"| {q} | {100 * t:.1f}% |" for q, t in me.top1.items())
    sent = f"QF {qf}" if qf is not None else "the QFs the frames were sent at"
    rule = "none"
    if r is not None:
        rule = f"`{r.score}` (k={r.k}), threshold {r.threshold:.4f}: accepts {100 * r.accept:.0f}% of val frames"
        if r.measured is not None:
            rule += (
                f"; AUROC {r.measured.auroc:.3f} against {r.measured.foreign} "
                f"({r.measured.n_foreign} photos, {100 * r.measured.foreign_accepted:.1f}% accepted)"
            )
    extra = me.model_extra or {}
    cpu = f" ({extra['train_cpu_seconds']:.1f} CPU s)" if "train_cpu_seconds" in extra else ""
    mix = f", each frame at one of QFs {extra['mix_qfs']}" if extra.get("mix_qfs") else ""
    encode = (
        f", latents made in {extra['encode_seconds']:.1f} s" if "encode_seconds" in extra else ""
    )
    return f"""# Head `{m.name}` ({m.head_id})

Reads codec `{m.codec_id}` ({codec.manifest.name}); {m.architecture}, {len(m.classes)} classes:
{", ".join(c.name for c in m.classes)}.

Made by:

    {me.command}

Trained on {len(train)} frames of {me.dataset} at {sent}{mix} ({result.epochs} epochs, final
loss {result.losses[-1]:.3f}) in **{me.train_seconds:.1f} s**{cpu}{encode}; validation: {me.n_val} frames.

| QF | val top-1 |
|---|---|
{rows}

Reject rule: {rule}.
"""
