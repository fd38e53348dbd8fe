"""The sample photos the demo and the benchmarks use: scikit-image's, or a folder of your own."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from shared.preprocess import IMAGE_SUFFIXES, load_rgb

# scikit-image's bundled photos: real pictures of several kinds, shipped in a package, so no
# download and no dataset is needed to run the demo or a benchmark.
SAMPLE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
)


def sample_images(folder: Path | None = None) -> list[Image.Image]:
    """The images in ``folder`` (sorted by name), or scikit-image's sample photos."""
    if folder:
        return [load_rgb(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    from skimage import data

    return [Image.fromarray(getattr(data, name)()).convert("RGB") for name in SAMPLE_PHOTOS]
