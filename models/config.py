"""Training hyper-parameters. Every value says why it has that value."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path


class JsonConfig:
    """to_dict/from_dict for the config dataclasses: tuples travel as JSON lists and come back as
    tuples; an unknown key is refused (a typo in --set must not be silently ignored)."""

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @classmethod
    def from_json(cls, path: str | Path):
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass
class Schedule(JsonConfig):
    """The optimisation both recipes share (spic-train's ``TrainConfig`` and spic-train-reference's
    ``ReferenceConfig``): one loop (models/trainer.py) reads these fields for either."""

    model: str = ""  # a name registered in models/zoo.py; each recipe sets its own
    epochs: int = 30  # ~2.6 min/epoch at crop 128 on 2 cores: a run fits in ~90 minutes
    batch_size: int = 64  # stable BatchNorm statistics, small enough for 2 cores (~0.4 s a step)
    lr: float = 3e-3  # one-cycle peak for AdamW; small conv nets tolerate it and it converges fast
    weight_decay: float = 0.05  # decoupled decay on conv/linear weights; 9.5k images overfit fast
    warmup_frac: float = 0.15  # one-cycle warm-up share: protects the sigmoid latent early on
    label_smoothing: float = 0.1  # standard for ImageNet-style training, +0.5-1 point top-1
    # Mixup and CutMix (models/mixing.py): their Beta(α, α) parameters; 0 turns one off, both
    # 0 (every shipped recipe) trains on plain crops. Both regularize long schedules (Zhang et al.
    # report +1.2 points on ImageNet at 90 epochs with α = 0.2, Yun et al. use α = 1 over 300) and
    # may cost a short one; kept off until a run here measures them.
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    # Decay of an exponential moving average of the weights (models/ema.py), which validation,
    # export and fine-tunes then use; 0 keeps none. 0.999 averages over about 1000 steps, the last
    # 7 of 48 epochs: the shipped teacher (reference-imagenette-ema) was trained with it.
    ema_decay: float = 0.0
    # Train on random crops smaller than the 224 evaluation crop: 3x fewer pixels per step, and
    # random areas make objects appear at the evaluation scale on average (FixRes, Touvron 2019).
    crop: int = 128
    # The last epochs train at a larger crop to shrink the train/test resolution gap that the
    # calibration runs on this project's 2-core machine found costly; progressive resizing as in
    # fast.ai's Imagenette runs.
    final_crop: int = 192
    final_crop_epochs: int = 4
    eval_size: int = 224  # the evaluation protocol: 224² center crops, as the README's figures
    seed: int = 0
    eval_every: int = 5  # epochs between validation passes (~15-40 s each on 2 cores)
    log_every: int = 20  # steps between JSONL log lines
    threads: int = 0  # torch intra-op threads; 0 = all cores


@dataclass
class TrainConfig(Schedule):
    model: str = "spic-s16"  # the registered default: stride 16 keeps 0.1 bpp reachable
    crop_scale_min: float = 0.25  # random areas 25-100% of the image: the FixRes scale argument
    qfs: tuple[int, ...] = (16, 48, 128)  # the paper's QFs; one is drawn per batch
    # How often each QF is drawn, relative weights in qfs' order; () draws them uniformly. Run
    # 11's QF 1-2 ended 12 points under its QF 16 with an eighth of the draws each. Drawing them
    # 4x as often, in a fine-tune and from the start (runs 11-ft and 12 in
    # docs/research/training-log.md), moved them by a point at most: kept for such experiments, the
    # default stays uniform.
    qf_weights: tuple[float, ...] = ()
    # Loss = mse + alpha * bpp + beta * cross-entropy (mse on [0,1] pixels, bpp in bits/pixel).
    # beta puts the classifier's gradient a few times above the reconstruction's: the task first.
    beta: float = 0.1
    # The reconstruction term's weight at QF q is w·(q / rate_target_qf)^e, w = mse_weight and
    # e = mse_qf_exponent. w = 1 is v1's recipe: beside the 0.1-weighted cross-entropy, MSE on [0,1]
    # pixels (~0.01) weighs little. 10 was no better after 3 short epochs (probe 9 in
    # docs/research/training-log.md); what squeezed the latent was the saturation penalty (below).
    mse_weight: float = 1.0
    # At e = 0 (v1's recipe) every QF weighs the same, and nothing rewards detail a coarse QF cannot
    # carry: v1's latent went nearly binary and QF 16/48/128 gave the same rate and quality (issue
    # 11). A positive exponent makes fine QFs pay for that detail. On its own (1.0, QFs 2..255) it
    # did not keep the sigmoid latent from saturating in a 2-epoch probe: a ladder needs more.
    mse_qf_exponent: float = 0.0
    # Weight of mean(z²), z the latent before its sigmoid. The sigmoid's flat ends made a saturated,
    # {0, 1} latent free under rate pressure at every QF; this pulls z back into the sigmoid's slope,
    # so values stay spread and each QF doubling costs about one more bit per symbol. 0 is v1's
    # recipe. The probes behind 0.01 are in docs/research/training-log.md.
    latent_logit_l2: float = 0.0
    # The penalty reads max(|z| - margin, 0)² instead of z². At 0 (run 7) it pulls every z to 0:
    # the classifier, behind a BatchNorm, is blind to the latent's scale, so the rate term and
    # this pull shrank run 7's latent: its active channels' median standard deviation is 0.024,
    # less than one QF 16 step ("What caps reconstruction" in docs/research/training-log.md). A margin
    # leaves the sigmoid's slope free and still stops saturation: |z| = 3 is y = 0.047 or 0.953.
    latent_logit_margin: float = 0.0
    # How the rate term and the decoder see the latent in training: "ste" (v1: rounded, identity
    # gradient) or "noise" (one step of uniform noise). The classifier always reads it rounded.
    train_quantize: str = "ste"
    # Knowledge distillation: the classification term becomes (1 - w)·CE + w·T²·KL(teacher ‖
    # student) at temperature T, the teacher a reference bundle trained here from scratch
    # (models/distill.py). "" (v1's recipe) trains on the labels alone. 0.5 and 4 are Hinton et
    # al.'s usual middle: half the signal from the labels, a temperature that shows the teacher's
    # second and third choices.
    teacher: str = ""
    distill_weight: float = 0.5
    distill_temperature: float = 4.0
    # Feature distillation for "resnet" models (models/distill.py): the cloud's features where its
    # first stage ends are pulled toward a reference's at that point (init_from, else teacher:
    # the cloud's next stage starts from init_from's weights and expects its features, and a
    # wider logit teacher has features of other widths), relative squared error, with a weight falling linearly from feature_distill_weight to 0 over
    # the first feature_distill_frac of the steps. Run 9's bottleneck started random: its training
    # accuracy averaged 11% over the first epoch (scripts/epoch_means.py) and it ended 7 points
    # under its teacher. The features tell the bottleneck what to pass on from the first step. 1
    # puts the term (1 at a zero output) several times above β·CE (about 0.1-0.3) at the start.
    # Fading it over the first half is the two stages of head-network distillation in one run:
    # mimic the teacher, then train on the task, where the rate term may drop what the classifier
    # does not need. 0: off (run 9).
    feature_distill_weight: float = 0.0
    feature_distill_frac: float = 0.5
    # A reference bundle whose weights start a "resnet"-backbone model's camera and cloud stages
    # (models/split_resnet.py); "" starts from random weights, the only start for "conv" models.
    # Usually the teacher itself: the student then begins where the teacher is.
    init_from: str = ""
    # A spic-train checkpoint whose weights start the model (a fine-tune): the optimizer, schedule
    # and alpha start afresh, and the checkpoint's commands and wall time carry into this run's,
    # so the card counts every command and minute that made the weights. "" starts as above.
    init_checkpoint: str = ""
    # alpha is not fixed: a dual update steers the estimated rate at QF 16 to rate_target_bpp, so the
    # lowest rate point lands under 0.10 bpp (real bytes, header included) by design.
    rate_target_qf: int = 16
    rate_target_bpp: float = 0.075  # 0.10 minus ~0.005 of header and ~0.02 of table mismatch
    # The target starts near the untrained model's rate and falls linearly to rate_target_bpp over
    # the first rate_anneal_frac of the steps. A fixed target from step 0 made alpha overshoot to
    # ~3.5 within two epochs while the rate lagged, and the latent collapsed (accuracy fell to 28%).
    rate_target_start_bpp: float = 0.45
    rate_anneal_frac: float = 0.4
    alpha_init: float = 0.02
    alpha_lr: float = 0.005  # per-step log-alpha gain, relative error clipped to +-0.5
    alpha_min: float = 1e-4
    alpha_max: float = 10.0

    def __post_init__(self) -> None:
        if self.qf_weights and (
            len(self.qf_weights) != len(self.qfs)
            or min(self.qf_weights) < 0
            or sum(self.qf_weights) <= 0
        ):
            raise ValueError(
                f"qf_weights {list(self.qf_weights)} must give one weight >= 0 per QF of "
                f"{list(self.qfs)}, not all 0"
            )
        if self.init_checkpoint and self.init_from:
            raise ValueError("init_checkpoint and init_from both start the weights: give one")

    def qf_probabilities(self) -> list[float] | None:
        """The draw's probability per QF, or None for a uniform draw."""
        if not self.qf_weights:
            return None
        total = sum(self.qf_weights)
        return [w / total for w in self.qf_weights]


def apply_overrides(config: dict, items: list[str]) -> dict:
    """``--set KEY=VALUE`` items applied to a config dict; values are JSON, else plain strings."""
    config = dict(config)
    for item in items:
        key, _, value = item.partition("=")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return config
