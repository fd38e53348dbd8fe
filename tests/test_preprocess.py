"""The camera's one-pass resize-and-crop against the two-step definition it replaces."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from shared.preprocess import center_crop, resize_center_crop, resize_short_side


def photo(w: int, h: int, seed: int) -> Image.Image:
    """Smooth content with edges (like a photo), so resampling differences would show."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    im = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
    arr = np.asarray(im).copy()
    arr[h // 3 : h // 2, :, 0] = 255  # a hard edge
    return Image.fromarray(arr)


@pytest.mark.parametrize(
    ("w", "h"), [(512, 512), (451, 300), (640, 427), (1000, 872), (300, 700), (225, 224)]
)
def test_one_pass_matches_resize_then_crop(w, h):
    im = photo(w, h, seed=w * h)
    two_step = np.asarray(center_crop(resize_short_side(im, 224), 224)).astype(int)
    one_pass = np.asarray(resize_center_crop(im, 224, 224)).astype(int)
    assert one_pass.shape == (224, 224, 3)
    diff = np.abs(one_pass - two_step)
    assert diff.max() <= 1  # float rounding of the filter weights, nothing more
    assert (diff > 0).mean() < 1e-2


def test_a_short_side_at_size_is_cropped_not_resampled():
    im = photo(300, 224, seed=1)
    assert np.array_equal(np.asarray(resize_center_crop(im, 224, 224)), np.asarray(im)[:, 38:262])


def test_too_small_for_the_crop_is_a_value_error():
    with pytest.raises(ValueError, match="smaller than"):
        resize_center_crop(photo(300, 200, seed=2), 200, 224)
