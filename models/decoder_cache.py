"""The frozen codec's latents, computed once per image, for training and measuring decoders.

A decoder is trained on what the cloud receives: the base latent ŷ of a frame at a QF. The
encoder is frozen, so its continuous output y (C, h, w) is computed once per image (~7 ms on CPU)
and every QF's ŷ is ``dequantize(quantize(y, qf))``, done per batch at training time. The cache
is two .npy files per split, opened memory-mapped:

    <split>.y.npy       float32 (N, C, h, w)  the encoder's base output (pre-quantization)
    <split>.img.npy     uint8   (N, S, S, 3)  the centre crop the encoder saw
    <split>.bytes.npy   int32   (N, len(qfs)) each QF's rANS frame size (``--frame-bytes``)

Caches live outside the repository (1.9 GB for Imagenette); ``spic-decoder cache`` builds one,
``spic-decoder train`` builds its own when its ``--cache`` is empty.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from models.data import scan_image_folder, seeded_subset, split_folder
from shared.preprocess import load_rgb, prepare
from shared.runtime import SpicCodec


def build_split(
    codec: SpicCodec,
    root: Path,
    out: Path,
    split: str,
    limit: int | None = None,
    frame_qfs: list[int] | None = None,
) -> int:
    """Encode every image of ``root`` (or a seeded subset of ``limit``) into ``out/split.*``."""
    paths, _, _ = scan_image_folder(root)
    if limit is not None and limit < len(paths):
        paths = [paths[i] for i in seeded_subset(len(paths), limit)]
    m = codec.manifest
    spec = m.preprocessing.model_dump()
    size, c = spec["size"], m.latent.channels
    h = size // m.latent.stride
    ys = np.lib.format.open_memmap(out / f"{split}.y.npy", "w+", np.float32, (len(paths), c, h, h))
    imgs = np.lib.format.open_memmap(
        out / f"{split}.img.npy", "w+", np.uint8, (len(paths), size, size, 3)
    )
    sizes = np.zeros((len(paths), len(frame_qfs or [])), np.int32)

    def load(p: Path) -> np.ndarray:
        return prepare(load_rgb(p), spec, m.latent.stride)

    t0 = time.time()
    with ThreadPoolExecutor(1) as pool:  # decode the next JPEG while the encoder runs
        for i, x in enumerate(pool.map(load, paths)):
            y = codec.analyse(x, enhancement=False)
            ys[i] = y[:c]
            imgs[i] = (x.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
            for j, qf in enumerate(frame_qfs or []):
                sizes[i, j] = len(codec.compress(y[:c], qf, "rans", (size, size))[1])
            if i % 500 == 0:
                print(f"{split}: {i}/{len(paths)} {time.time() - t0:.0f}s", flush=True)
    ys.flush()
    imgs.flush()
    if frame_qfs:
        np.save(out / f"{split}.bytes.npy", sizes)
    meta = {"codec_id": codec.model_id, "root": str(root), "n": len(paths), "limit": limit}
    meta["frame_qfs"] = frame_qfs or []
    meta["paths"] = [str(p) for p in paths]
    (out / f"{split}.json").write_text(json.dumps(meta))
    return len(paths)


class LatentCache:
    """One split of a cache, memory-mapped."""

    def __init__(self, folder: str | Path, split: str):
        folder = Path(folder)
        self.meta = json.loads((folder / f"{split}.json").read_text())
        self.y = np.load(folder / f"{split}.y.npy", mmap_mode="r")
        self.images = np.load(folder / f"{split}.img.npy", mmap_mode="r")
        b = folder / f"{split}.bytes.npy"
        self.frame_bytes = np.load(b) if b.is_file() else None

    @property
    def codec_id(self) -> str:
        return str(self.meta["codec_id"])

    def __len__(self) -> int:
        return len(self.y)


def open_cache(codec: SpicCodec, data: str | Path, folder: Path, split: str) -> LatentCache:
    """``folder``'s cache of ``split``, built from ``data`` first when absent; SystemExit when it
    holds another codec's latents."""
    if not (folder / f"{split}.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        build_split(codec, split_folder(data, split), folder, split)
    cache = LatentCache(folder, split)
    if cache.codec_id != codec.model_id:
        raise SystemExit(
            f"cache {folder} holds codec {cache.codec_id}'s latents, not {codec.model_id}'s"
        )
    return cache
