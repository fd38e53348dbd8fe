"""What ``spic-head`` trains on: the latents cameras send, each image encoded once and kept.

Two sources, one ``LatentSet``:

* a labelled folder (``train/<class>/``, ``val/<class>/``): every image prepared as the bundle's
  preprocessing says and run through the codec's own encoder graph once (and once mirrored, a
  free augmentation: the mirror of a frame is a frame a camera could send). The encoder output
  y is kept, so the latent ŷ at any QF is one quantize/dequantize away: training reads the
  chosen QF's, the card measures several from the same pass;
* the cloud (``models.head_cloud``): frames already stored, decoded by ``SpicCodec.parse`` /
  ``decompress`` into the ŷ each frame carries, at the QF it was sent at.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.data import scan_image_folder
from shared.preprocess import load_rgb, prepare
from shared.quantize import dequantize, quantize
from shared.runtime import SpicCodec

BATCH = 32


@dataclass
class LatentSet:
    """Frames of one split. ``latent`` is (N, V, C, h, w) float32 for V views (the image, its
    mirror): encoder outputs y when ``qfs`` is None, else each frame's dequantized ŷ as sent at
    ``qfs[i]``."""

    latent: np.ndarray
    labels: np.ndarray
    classes: list[str]
    qfs: np.ndarray | None = None
    names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def at(self, codec: SpicCodec, qf: int | None) -> np.ndarray:
        """The base latents ŷ (N, V, C, h, w) a cloud decodes from frames made at ``qf`` (frames
        from the cloud: the ŷ they carry, whatever ``qf``)."""
        if self.qfs is not None:
            return self.latent
        assert qf is not None
        base_qf = codec.manifest.base_qf_at(qf)
        out: np.ndarray = dequantize(quantize(self.latent, base_qf), base_qf)
        return out.astype(np.float32)

    def subset(self, index: np.ndarray) -> LatentSet:
        return LatentSet(
            self.latent[index],
            self.labels[index],
            self.classes,
            None if self.qfs is None else self.qfs[index],
            None if self.names is None else [self.names[i] for i in index],
        )

    def sent_qfs(self) -> list[int]:
        return [] if self.qfs is None else sorted({int(q) for q in self.qfs})


def share_index(labels: np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    """Which of the frames labelled ``labels`` make ``share`` of them, the same share of every
    class (at least one frame each): the data-size axis of the measurements."""
    if share >= 1:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep += list(rng.choice(idx, max(1, round(share * len(idx))), replace=False))
    return np.sort(np.asarray(keep))


def fraction(train: LatentSet, share: float, seed: int = 0) -> LatentSet:
    """``share`` of ``train`` (``share_index``)."""
    return train if share >= 1 else train.subset(share_index(train.labels, share, seed))


def prepared_images(codec: SpicCodec, paths: list[Path], threads: int = 2) -> Iterator[np.ndarray]:
    """(B, 3, H, W) batches of crops prepared as the codec's cameras prepare them."""
    spec, stride = codec.manifest.preprocessing.model_dump(), codec.manifest.latent.stride

    def load(p: Path) -> np.ndarray:
        return prepare(load_rgb(p), spec, stride)

    # Pillow releases the GIL while it decodes and resizes.
    with ThreadPoolExecutor(threads) as pool:
        for i in range(0, len(paths), BATCH):
            yield np.stack(list(pool.map(load, paths[i : i + BATCH])))


def encode_folder(
    codec: SpicCodec,
    root: Path,
    classes: list[str] | None = None,
    mirror: bool = True,
    progress: bool = True,
    threads: int = 2,
) -> LatentSet:
    """Every image of ``root/<class>/`` through the codec's encoder (and its mirror, when
    ``mirror``): the encoder outputs, base channels only (heads read those)."""
    paths, labels, found = scan_image_folder(root)
    if classes is not None and found != classes:
        # Validation images of a class the head was not trained on cannot be scored.
        index = {c: i for i, c in enumerate(classes)}
        missing = sorted(set(found) - set(classes))
        if missing:
            raise ValueError(f"{root} has classes {missing} that the train split lacks")
        labels = np.asarray([index[found[j]] for j in labels], dtype=np.int64)
    latent = encode_paths(codec, paths, mirror, progress, threads, f"encode {root.name}")
    return LatentSet(latent, labels, classes or found, names=[str(p) for p in paths])


def encode_paths(
    codec: SpicCodec,
    paths: list[Path],
    mirror: bool = False,
    progress: bool = True,
    threads: int = 2,
    what: str = "encode",
) -> np.ndarray:
    """(N, V, C, h, w) encoder outputs, base channels, of ``paths`` (V = 2 with the mirror)."""
    from tqdm import tqdm

    session, c = codec.session("encoder"), codec.manifest.latent.channels
    views: list[np.ndarray] = []
    bar = tqdm(total=len(paths), desc=what, unit="img", disable=not progress)
    for x in prepared_images(codec, paths, threads):
        batch = [x, x[:, :, :, ::-1]] if mirror else [x]
        ys = [session.run(None, {"image": np.ascontiguousarray(v)})[0][:, :c] for v in batch]
        views.append(np.stack(ys, axis=1))
        bar.update(len(x))
    bar.close()
    return np.concatenate(views)


def load_folder_sets(
    codec: SpicCodec, data: Path, mirror: bool = True, progress: bool = True, threads: int = 2
) -> tuple[LatentSet, LatentSet]:
    """(train, val) of a dataset root; val is encoded without its mirror (it is only scored)."""
    for split in ("train", "val"):
        if not (data / split).is_dir():
            raise FileNotFoundError(f"{data} has no {split}/ folder of <class>/ images")
    train = encode_folder(codec, data / "train", None, mirror, progress, threads)
    val = encode_folder(codec, data / "val", train.classes, False, progress, threads)
    return train, val
