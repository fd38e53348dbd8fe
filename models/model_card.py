"""The model card spic-export writes next to a bundle: what the network is, how it was trained
(every command, the wall time, the data's provenance) and what export did to it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from shared.manifest import Manifest


def data_line(ckpt: dict) -> str:
    """What the training data was, when the run's ``--data`` was a derived copy."""
    text = ckpt.get("data_provenance")
    if not text:
        return ""
    return f"\nThe training's `--data` was not the original dataset. Its `PROVENANCE.txt`: {text}\n"


def wall_time(ckpt: dict) -> str:
    """The training wall time the checkpoint recorded (summed over --resume runs)."""
    if "wall_seconds" not in ckpt:
        return "Training wall time: not recorded (this checkpoint predates the record)."
    return (
        f"Training wall time: **{ckpt['wall_seconds'] / 60:.0f} min** "
        f"({ckpt.get('machine', 'machine not recorded')}), data loading and validation included."
    )


def pinned_line(pinned: list[int] | None) -> str:
    if pinned is None:
        return "Latent channels pinned at export: none (`--pin-idle` was not given)."
    if not pinned:
        return "Latent channels pinned at export (`--pin-idle`): none; every channel varies."
    return (
        f"Latent channels pinned to a constant at export (`--pin-idle`): {len(pinned)} "
        f"{pinned}. They code as one free symbol at every QF."
    )


def enhancement_line(manifest: Manifest) -> str:
    e = manifest.enhancement
    if e is None:
        return "Enhancement layer: none; every latent channel is the classifier's."
    return (
        f"Enhancement layer (`models/enhancement.py`): {e.channels} channels after the "
        f"{manifest.latent.channels} of the base latent, the principal components of "
        f"{manifest.latent.stride}×{manifest.latent.stride} pixel blocks, made by "
        f"`{manifest.files[e.encoder].path}` and sent from QF {e.from_qf} up, where "
        f"`{manifest.files[e.decoder].path}` reconstructs from them; the classifier reads the "
        "base latent at every QF"
        + ("." if e.base_qf is None else f", quantized at no finer than QF {e.base_qf}.")
    )


def layout(train: dict) -> str:
    """What the three networks are, as the card says it."""
    if train.get("init_from") or train.get("init_checkpoint"):
        reference = (
            f"the reference classifier `{train['init_from']}`"
            if train.get("init_from")
            else "a reference classifier trained here from scratch"
        )
        start = (
            "Both halves started from that bundle's weights."
            if train.get("init_from")
            else f"This run fine-tuned the weights of the checkpoint `{train['init_checkpoint']}`, "
            "which the training commands before the last one made."
        )
        return (
            "The SPIC scheme of Patwa et al. (ICIP 2020) on a classifier cut in two "
            f"(`models/split_resnet.py`): the encoder `g_a` is the first stages of {reference} "
            "ending in a sigmoid latent, which is quantized at "
            "a quantization factor QF and entropy coded; the classifier `h_c` is the reference's "
            "remaining stages and reads the quantized latent directly; a decoder `g_s` makes "
            f"reconstructions on demand. {start}"
        )
    return (
        "The SPIC network of Patwa et al. (ICIP 2020): a convolutional encoder `g_a` (leaky "
        "ReLU, sigmoid latent) whose latent is quantized at a quantization factor QF and entropy "
        "coded; a classifier `h_c` that reads the quantized latent directly; a decoder `g_s` for "
        "reconstructions on demand."
    )


def what_it_is(train: dict) -> str:
    """The card's "What it is" paragraph, wrapped to the width of the rest of the card."""
    loss = (
        "Trained with L = MSE + α·rate + β·cross-entropy, true rounding forward and identity "
        f"backward, with QF drawn per batch from {train['qfs']}"
        + (f" with weights {train['qf_weights']}." if train.get("qf_weights") else ".")
    )
    text = f"{layout(train)} {loss}{distilled(train)}"
    return textwrap.fill(text, 100, break_on_hyphens=False, break_long_words=False)


def distilled(train: dict) -> str:
    """What the card says of the teachers: logits (``teacher``) and features at the cut."""
    text = ""
    if train.get("teacher"):
        text += (
            f" The classification term is distilled from `{train['teacher']}` (weight "
            f"{train['distill_weight']}, temperature {train['distill_temperature']}), a reference "
            "classifier trained here from scratch."
        )
    if train.get("feature_distill_weight", 0) > 0:
        source = train.get("teacher") or train.get("init_from")
        text += (
            f" The cloud's features where its first stage ends are pulled toward `{source}`'s at "
            f"the same point (relative squared error, weight {train['feature_distill_weight']} "
            f"falling to 0 over the first {train['feature_distill_frac']:.0%} of the steps)."
        )
    return text


def write_card(
    out: Path,
    manifest: Manifest,
    ckpt: dict,
    macs: int,
    command: str,
    train_command: str,
    pinned: list[int] | None = None,
) -> None:
    train = ckpt["config"]["train"]
    card = f"""# Model card: {manifest.name}

Codec id `{manifest.model_id}` · architecture `{manifest.architecture}` · {len(manifest.classes)} classes ·
latent {manifest.latent.channels} channels at stride {manifest.latent.stride} · QFs {manifest.qfs}
(default {manifest.default_qf}).

## What it is

{what_it_is(train)}

- Encoder cost: {macs / 1e6:.0f} M multiply-accumulates = **{2 * macs / 1e9:.3f} GFLOP** per 224² frame
  (the camera's graphs at its costliest QF, counted by `models.network.count_conv_macs`).
- Trained for {train["epochs"]} epochs ({ckpt["step"]} steps), seed {train["seed"]}; full config in
  `manifest.json` (architecture) and below (training).
- {wall_time(ckpt)}
- {pinned_line(pinned)}
- {enhancement_line(manifest)}

## How it was made

```bash
{train_command}
{command}
```
{data_line(ckpt)}
Training config:

```json
{json.dumps(train, indent=1)}
```

## Results

Not evaluated yet. Run `spic-card` (see the README) to fill this section.
"""
    (out / "MODEL_CARD.md").write_text(card)
