"""Knowledge distillation from a reference classifier trained here from scratch (Hinton et al.,
2015, "Distilling the knowledge in a neural network").

The teacher is a reference bundle (``spic-train-reference``; never ImageNet-pretrained weights,
whose training set holds Imagenette's validation images). It runs with ONNX Runtime on the same
augmented batch as the student, without gradients, so no teacher code or checkpoint enters
training.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from models.reference_bundle import ReferenceModel


class Teacher:
    """A reference bundle's classifier as a source of soft targets."""

    def __init__(self, bundle: str | Path, class_ids: list[str], threads: int = 0):
        self.model = ReferenceModel(bundle, threads)
        self.model.check_classes(class_ids, "the training data")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) [0, 1] RGB, the student's own input -> (N, classes) logits."""
        return torch.from_numpy(self.model.logits(x.detach().cpu().numpy())).to(x.device)


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
