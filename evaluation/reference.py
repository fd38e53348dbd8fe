"""Reference classifiers for ``spic-eval``: a reference bundle (``models/reference_bundle.py``)
run with onnxruntime only, so evaluation never imports torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.reference_bundle import load_reference_manifest
from shared.preprocess import batch_input


class ReferenceClassifier:
    """Top-1 predictions of a reference bundle for uint8 (H, W, 3) crops."""

    def __init__(self, bundle: str | Path, threads: int = 2, batch: int = 50):
        self.bundle = Path(bundle)
        self.manifest = load_reference_manifest(self.bundle)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(self.bundle / self.manifest.files["classifier"].path),
            opts,
            providers=["CPUExecutionProvider"],
        )
        self.batch = batch

    @property
    def label(self) -> str:
        return self.manifest.label

    def check_classes(self, class_ids: list[str]) -> None:
        ours = [c.id for c in self.manifest.classes]
        if ours != class_ids:
            raise ValueError(
                f"reference bundle {self.manifest.model_id} ({self.label}) has classes {ours}, "
                f"the evaluation has {class_ids}"
            )

    def predict(self, crops: list[np.ndarray]) -> np.ndarray:
        preds = []
        for i in range(0, len(crops), self.batch):
            x = batch_input(crops[i : i + self.batch])
            preds.append(self.session.run(None, {"image": x})[0].argmax(1))
        return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
