from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from shared.quantize import PAPER_QFS, alphabet_size, check_qf, dequantize, quantize


@pytest.mark.parametrize("qf", PAPER_QFS)
def test_rule_on_the_edges(qf):
    y = np.array([0.0, 0.5 / qf - 1e-6, 0.5 / qf + 1e-6, 1.0, -3.0, 7.0, np.nan], dtype=np.float32)
    assert quantize(y, qf).tolist() == [0, 0, 1, qf, 0, qf, 0]
    assert alphabet_size(qf) == qf + 1


@given(
    arrays(np.float32, st.integers(1, 200), elements=st.floats(0, 1, width=32)), st.integers(1, 255)
)
def test_round_trip_error_is_at_most_half_a_step(y, qf):
    s = quantize(y, qf)
    assert s.dtype == np.uint16 and s.max() <= qf
    assert np.abs(dequantize(s, qf) - y).max() <= 0.5 / qf + 1e-6
    np.testing.assert_array_equal(quantize(dequantize(s, qf), qf), s)  # symbols are fixed points


@pytest.mark.parametrize("bad", [0, 256, 1.5, True, -1])
def test_bad_qf(bad):
    with pytest.raises(ValueError):
        check_qf(bad)


def test_the_noise_mode_stays_within_one_step_and_the_unit_range():
    import torch

    from models.network import quantize

    torch.manual_seed(0)
    y = torch.rand(4, 8, 5, 5)
    for qf in (2, 16, 255):
        noisy = quantize(y, qf, "noise")
        assert float((noisy - y).abs().max()) <= 0.5 / qf + 1e-6
        assert float(noisy.min()) >= 0.0 and float(noisy.max()) <= 1.0
        assert not torch.equal(noisy, quantize(y, qf, "ste"))  # not rounding


def test_to_uint8_image_inverts_batch_input():
    from shared.preprocess import batch_input, to_uint8_image

    crops = np.random.default_rng(0).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_uint8_image(batch_input(crops)), crops)
    np.testing.assert_array_equal(to_uint8_image(batch_input(crops)[0]), crops[0])
    assert to_uint8_image(np.full((3, 1, 1), 1.7)).item(0) == 255  # clipped, not wrapped
