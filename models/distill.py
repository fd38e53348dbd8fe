"""Knowledge distillation from a reference classifier trained here from scratch (Hinton et al.,
2015, "Distilling the knowledge in a neural network").

Two teachers, both a reference bundle (``spic-train-reference``; never ImageNet-pretrained weights,
whose training set holds Imagenette's validation images). ``Teacher`` gives its logits, run
with ONNX Runtime (in torch on a GPU) on the student's own augmented batch. ``FeatureTeacher``
gives its features at the split model's cut (head-network distillation, Matsubara et al., WACV
2022), so a bottleneck that starts from random weights is first taught to pass on what the
reference's next stage expects, instead of learning it through the labels alone. Neither gets
gradients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from models.reference_bundle import ReferenceModel, check_classes, load_reference_manifest
from models.split_resnet import reference_network, reference_trunk


class Teacher:
    """A reference bundle's classifier as a source of soft targets.

    On CPU it runs in ONNX Runtime, twice as fast there as the same network in torch (0.11 s
    against 0.22 s for 64 crops of 128² on 2 cores), which is what the recipes' CPU wall times
    were measured with. On a GPU it runs as ``FoldedReference`` on the device, so a batch never
    leaves it; the two agree to within 1e-4 (``tests/test_split_resnet.py``).
    """

    def __init__(
        self,
        bundle: str | Path,
        class_ids: list[str],
        threads: int = 0,
        device: torch.device | None = None,
    ):
        self.model: ReferenceModel | None = None
        self.net: torch.nn.Module | None = None
        if device is not None and device.type != "cpu":
            check_classes(load_reference_manifest(bundle), class_ids, "the training data")
            self.net = reference_network(bundle).to(device)
        else:
            self.model = ReferenceModel(bundle, threads)
            self.model.check_classes(class_ids, "the training data")

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) [0, 1] RGB, the student's own input -> (N, classes) logits."""
        if self.net is not None:
            return self.net(x)  # type: ignore[no-any-return]
        assert self.model is not None
        return torch.from_numpy(self.model.logits(x.detach().cpu().numpy())).to(x.device)


class FeatureTeacher:
    """The reference's stem and stages up to the cut (``split_resnet.reference_trunk``), frozen."""

    def __init__(self, model: Any, bundle: str | Path, device: torch.device):
        self.trunk = reference_trunk(model.cfg, bundle).to(device)
        self.mean, self.std = model.g_a.mean, model.g_a.std  # the camera's own normalisation

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) [0, 1] RGB -> the reference's features where h_c's first stage ends."""
        return self.trunk((x - self.mean) / self.std)  # type: ignore[no-any-return]


def feature_distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """‖student − teacher‖² relative to ‖teacher‖²: 1 for a student that outputs zeros, whatever
    the features' scale, so one weight suits any cut."""
    return (student - teacher).pow(2).mean() / teacher.pow(2).mean().clamp_min(1e-12)


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T²·KL(softmax(teacher/T) ‖ softmax(student/T)), batch mean; T² keeps the gradient's scale
    independent of T (Hinton et al.)."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student / t, dim=1),
        F.log_softmax(teacher / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
