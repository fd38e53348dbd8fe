"""SPIC-Q on real bytes: every image is encoded to a frame by the edge path, decoded by the cloud
path, and classified on the latent. Reports mean bpp from the real frame sizes, top-1, and the
PSNR/SSIM of the decoder's reconstructions against the encoder's input crop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from skimage.metrics import structural_similarity
from tqdm import tqdm

from edge_client.encoder import EdgeEncoder
from evaluation.pairs import hits_string
from shared.preprocess import IMAGE_SUFFIXES, load_rgb, prepare, to_uint8_image
from shared.runtime import SpicCodec

# How rows name a pixel classifier reading SPIC's decoded images (the report and plots match it).
ON_RECONSTRUCTION = " on reconstruction"


@dataclass
class Row:
    codec: str
    setting: str
    classifier: str
    bpp: float | None
    top1: float | None
    psnr: float | None
    ssim: float | None
    n_images: int
    # Per-image outcomes, "1" right and "0" wrong in image order (evaluation.paired compares two
    # rows of the same images image by image); None without labels or per-image data.
    hits: str | None = None


def labelled_images(
    root: str | Path, limit: int | None = None, seed: int = 0
) -> tuple[list[Path], np.ndarray, list[str]]:
    """An ImageFolder split; ``limit`` takes a seeded, class-balanced subset."""
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    for i, c in enumerate(classes):
        files = sorted(p for p in (root / c).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if limit is not None:
            per_class = limit // len(classes) + (1 if i < limit % len(classes) else 0)
            files = [files[j] for j in sorted(rng.permutation(len(files))[:per_class])]
        paths += files
        labels += [i] * len(files)
    return paths, np.asarray(labels), classes


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(float(mse), 1e-10)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


def evaluate_spic(
    bundle: str | Path,
    paths: list[Path],
    labels: np.ndarray | None,
    qfs=None,
    codecs=("rans", "huffman"),
    batch: int = 50,
    progress: bool = True,
    int8: bool = False,
    pixel_classifiers: dict[str, Callable[[list[np.ndarray]], np.ndarray]] | None = None,
) -> list[Row]:
    """With ``int8`` the frames come from the bundle's INT8 encoder (rows marked as such).

    ``pixel_classifiers`` (name -> uint8 crops -> predicted classes) also classify the decoder's
    reconstructions: the "decode to pixels, then classify" route SPIC-Q makes unnecessary.
    """
    pixel_classifiers = pixel_classifiers or {}
    runtime = SpicCodec(bundle, threads=2)
    qfs = list(qfs or runtime.manifest.qfs)
    # One encoder: its network pass per image feeds every QF and codec (encode_latent).
    encoder = EdgeEncoder(bundle, qf=qfs[0], codec=codecs[0], threads=2, int8=int8)
    variant = " (INT8 encoder)" if int8 else ""
    n = len(paths)
    bits = {(q, c): 0 for q in qfs for c in codecs}
    hits: dict[int | None, list[bool]] = {q: [] for q in [None, *qfs]}  # None: unquantized
    correct_px = {(q, name): 0 for q in qfs for name in pixel_classifiers}
    quality = {q: [0.0, 0.0] for q in qfs}
    bar = tqdm(total=n, desc="SPIC", disable=not progress, dynamic_ncols=True)
    for start in range(0, n, batch):
        chunk = paths[start : start + batch]
        images = [load_rgb(p) for p in chunk]
        crops = [prepare(im, encoder.spec, encoder.stride) for im in images]
        # One pass per image, as the camera runs it (a batched pass may round differently).
        y = np.stack([encoder.latent(c) for c in crops])
        truth = None if labels is None else labels[start : start + batch]
        if truth is not None:
            hits[None] += list(runtime.classify_latents(y).argmax(1) == truth)
        # The frames are built from this one network pass per image (EdgeEncoder.encode_latent
        # gives encode()'s bytes; tests/test_edge.py checks that), not one pass per QF and codec.
        for q in qfs:
            symbols = None
            for c in codecs:
                frames = [
                    encoder.encode_latent(y_i, im.size, q, c)
                    for y_i, im in zip(y, images, strict=True)
                ]
                bits[(q, c)] += sum(8 * len(f) for f in frames)
                decoded = [runtime.codebook.decode(f)[1] for f in frames]
                if symbols is not None and not all(
                    np.array_equal(a, b) for a, b in zip(symbols, decoded, strict=True)
                ):
                    raise AssertionError("codecs decoded different symbols from the same images")
                symbols = decoded
            assert symbols is not None  # at least one codec ran
            y_hat = runtime.latents(symbols, [q] * len(symbols))
            if truth is not None:
                hits[q] += list(runtime.classify_latents(y_hat).argmax(1) == truth)
            recon = runtime.reconstruct(y_hat, q)
            if truth is not None:
                for name, classify in pixel_classifiers.items():
                    correct_px[(q, name)] += int((classify(list(recon)) == truth).sum())
            for crop, rec in zip(crops, recon, strict=True):
                ref = to_uint8_image(crop)
                quality[q][0] += psnr(ref, rec)
                quality[q][1] += ssim(ref, rec)
        bar.update(len(chunk))
    bar.close()
    h, w = encoder.spec["size"], encoder.spec["size"]
    rows = [
        Row(
            "spic",
            "unquantized",
            "SPIC-U(latent)" + variant,
            None,
            None if labels is None else sum(hits[None]) / n,
            None,
            None,
            n,
            None if labels is None else hits_string(hits[None]),
        )
    ]
    for q in qfs:
        for c in codecs:
            rows.append(
                Row(
                    f"spic-{c}",
                    f"QF{q}",
                    "SPIC-Q" + variant,
                    bits[(q, c)] / n / (h * w),
                    None if labels is None else sum(hits[q]) / n,
                    quality[q][0] / n,
                    quality[q][1] / n,
                    n,
                    None if labels is None else hits_string(hits[q]),
                )
            )
        for name in pixel_classifiers:
            rows.append(
                Row(
                    f"spic-{codecs[0]}",
                    f"QF{q}",
                    f"{name}{ON_RECONSTRUCTION}",
                    bits[(q, codecs[0])] / n / (h * w),
                    None if labels is None else correct_px[(q, name)] / n,
                    quality[q][0] / n,
                    quality[q][1] / n,
                    n,
                )
            )
    return rows


def rows_to_dicts(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]
