"""ImageFolder data for training: decoded once into memory, augmented with Pillow and numpy.

Imagenette's train split is ~1.9 GB decoded at its native 224-pixel short side; holding it in RAM
removes JPEG decoding from every epoch, which on 2 cores costs as much as the network itself.
"""

from __future__ import annotations

import math
import queue
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from shared.preprocess import (
    IMAGE_SUFFIXES,
    center_crop,
    load_rgb,
    resize_center_crop,
    resize_short_side,
)

# A dataset folder that is a derived copy (``scripts/webp_copy.py``) says so in this file at its
# root; spic-train keeps its text in the checkpoint and the model card prints it, so a card whose
# command names some copy's path also says what that copy was.
PROVENANCE_FILE = "PROVENANCE.txt"


# Names of the ImageNet classes in Imagenette; other datasets fall back to their folder names.
WNID_NAMES = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
}


# Every command's ``--data`` is a dataset root holding ``train/<class>/`` and ``val/<class>/``;
# each command reads the split it needs. A split folder given directly is still accepted, so
# commands written before this rule (``--data imagenette/val``) keep working.
DATA_HELP = (
    "dataset root holding train/<class>/ and val/<class>/ (the {split} split is read; a split "
    "folder itself is accepted too)"
)
TRAIN_DATA_HELP = (
    "dataset root holding train/<class>/ and val/<class>/ (the train and val split is read)"
)


def split_folder(root: str | Path, split: str) -> Path:
    """``root/split`` when ``root`` is a dataset root, else ``root`` itself (a split folder)."""
    root = Path(root)
    return root / split if (root / split).is_dir() else root


def data_provenance(root: str | Path) -> str:
    """The text of ``root``'s provenance file, or "" for original data (no such file)."""
    path = Path(root) / PROVENANCE_FILE
    return path.read_text().strip() if path.is_file() else ""


def pick(paths: list[Path], n: int, seed: int) -> list[Path]:
    """At most ``n`` of ``paths``, drawn with ``seed``, sorted (all of them when there are fewer)."""
    return sorted(random.Random(seed).sample(paths, n)) if len(paths) > n else paths


def images_under(folder: Path) -> list[Path]:
    """Every image file below ``folder``, at any depth, sorted: a set of photos without labels."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def scan_image_folder(root: str | Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """``root/<class>/<image>`` -> (paths, integer labels, sorted class names)."""
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"no class folders under {root}")
    paths, labels = [], []
    for i, name in enumerate(classes):
        for p in sorted((root / name).iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(p)
                labels.append(i)
    return paths, np.asarray(labels, dtype=np.int64), classes


class InMemoryImages:
    """All images of a split, decoded, short side resized to ``short_side``."""

    def __init__(self, root: str | Path, short_side: int, threads: int = 2):
        self.paths, self.labels, self.classes = scan_image_folder(root)

        def load(p: Path) -> Image.Image:
            return resize_short_side(load_rgb(p), short_side)

        with ThreadPoolExecutor(threads) as pool:  # Pillow releases the GIL while decoding
            self.images = list(pool.map(load, self.paths))

    def __len__(self) -> int:
        return len(self.images)


def random_resized_crop(
    im: Image.Image, size: int, rng: np.random.Generator, scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3)
) -> Image.Image:
    """Inception-style crop: a random area fraction and aspect ratio, resized to ``size``²."""
    w, h = im.size
    for _ in range(10):
        area = w * h * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            return im.resize(
                (size, size),
                Image.Resampling.BILINEAR,
                box=(int(left), int(top), int(left + cw), int(top + ch)),
            )
    return center_crop(im, min(w, h)).resize((size, size), Image.Resampling.BILINEAR)


def train_batches(
    data: InMemoryImages,
    batch_size: int,
    crop: int,
    rng: np.random.Generator,
    rank: int = 0,
    world: int = 1,
    prefetch: int = 2,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of augmented batches (uint8 NHWC, labels), built in a background thread.

    With ``world`` > 1 each rank takes every world-th image of the same permutation, so the ranks
    see disjoint shards; the permutation comes from ``rng``, which all ranks seed alike.
    """
    order = rng.permutation(len(data))[rank::world]
    n_batches = (
        len(order) // batch_size
    )  # drop the ragged tail so BatchNorm never sees tiny batches
    seeds = rng.integers(0, 2**63, size=n_batches)
    q: queue.Queue = queue.Queue(maxsize=prefetch)

    def produce() -> None:
        for b in range(n_batches):
            brng = np.random.default_rng(seeds[b])
            idx = order[b * batch_size : (b + 1) * batch_size]
            batch = np.empty((len(idx), crop, crop, 3), dtype=np.uint8)
            for j, i in enumerate(idx):
                im = random_resized_crop(data.images[i], crop, brng)
                if brng.random() < 0.5:
                    im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                batch[j] = np.asarray(im)
            q.put((batch, data.labels[idx]))
        q.put(None)

    threading.Thread(target=produce, daemon=True).start()
    while (item := q.get()) is not None:
        yield item


def seeded_subset(n: int, limit: int) -> np.ndarray:
    """The sorted indices of the ``limit`` images ``--val-limit`` validates on, out of ``n``."""
    return np.sort(np.random.default_rng(0).permutation(n)[:limit])


def eval_arrays(root: str | Path, size: int = 224, limit: int | None = None):
    """Validation images as a uint8 NHWC array of ``size``² center crops, with labels and classes."""
    paths, labels, classes = scan_image_folder(root)
    if limit is not None:
        keep = seeded_subset(len(paths), limit)
        paths, labels = [paths[i] for i in keep], labels[keep]

    def load(p: Path) -> np.ndarray:
        return np.asarray(resize_center_crop(load_rgb(p), size, size))

    with ThreadPoolExecutor(2) as pool:
        images = np.stack(list(pool.map(load, paths)))
    return images, labels, classes
