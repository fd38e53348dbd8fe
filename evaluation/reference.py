"""Reference classifiers for ``spic-eval``: a reference bundle (``models/reference_bundle.py``)
run with onnxruntime only, so evaluation never imports torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.reference_bundle import ReferenceModel
from shared.preprocess import batch_input


class ReferenceClassifier(ReferenceModel):
    """Top-1 predictions of a reference bundle for uint8 (H, W, 3) crops."""

    def __init__(self, bundle: str | Path, threads: int = 2, batch: int = 50):
        super().__init__(bundle, threads)
        self.batch = batch

    def predict(self, crops: list[np.ndarray]) -> np.ndarray:
        preds = [
            self.logits(batch_input(crops[i : i + self.batch])).argmax(1)
            for i in range(0, len(crops), self.batch)
        ]
        return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
