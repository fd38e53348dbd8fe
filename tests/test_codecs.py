"""Exact round trips of both entropy codecs over random shapes, alphabets and distributions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.codecs import CODECS, make_codec
from shared.codecs.huffman import MAX_CODE_LENGTH, limited_lengths, optimal_lengths
from shared.errors import BitstreamError

DISTRIBUTIONS = ("uniform", "skewed", "single", "empty", "laplace")


@st.composite
def coding_cases(draw):
    c = draw(st.integers(1, 64))
    h = draw(st.integers(1, 64))
    w = draw(st.integers(1, 64))
    k = draw(st.integers(2, 257))
    seed = draw(st.integers(0, 2**32 - 1))
    kinds = draw(st.lists(st.sampled_from(DISTRIBUTIONS), min_size=c, max_size=c))
    rng = np.random.default_rng(seed)
    symbols = np.empty((c, h * w), dtype=np.uint16)
    tables = np.zeros((c, k), dtype=np.int64)
    for ch, kind in enumerate(kinds):
        if kind == "uniform":
            symbols[ch] = rng.integers(0, k, h * w)
        elif kind == "skewed":
            p = rng.dirichlet(np.full(k, 0.05))
            symbols[ch] = rng.choice(k, h * w, p=p)
        elif kind == "laplace":
            symbols[ch] = np.clip(
                np.round(rng.laplace(k // 2, rng.uniform(0.05, 3), h * w)), 0, k - 1
            )
        elif kind in ("single", "empty"):
            symbols[ch] = rng.integers(0, k)
        counts = np.bincount(symbols[ch], minlength=k)
        if kind == "empty":
            counts[:] = 0  # a channel the tables never saw: every symbol escapes
        elif rng.random() < 0.3:
            counts[rng.integers(0, k)] = 0  # a symbol the tables never saw
        tables[ch] = counts
    # Now and then a symbol beyond the table's alphabet, as an out-of-distribution image makes.
    if rng.random() < 0.3:
        symbols[rng.integers(0, c), rng.integers(0, h * w)] = rng.integers(k, 65536)
    return tables, symbols.reshape(c, h, w)


@pytest.mark.parametrize("name", sorted(CODECS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=coding_cases())
def test_round_trip_is_exact(name, case):
    tables, symbols = case
    codec = make_codec(name, tables)
    payload = codec.encode(symbols)
    decoded = make_codec(name, tables).decode(
        payload, symbols.shape
    )  # a fresh decoder, as the cloud
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, symbols)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_rate_follows_the_entropy(name):
    rng = np.random.default_rng(1)
    symbols = np.clip(np.round(rng.laplace(8, 0.4, (8, 32, 32))), 0, 16).astype(np.uint16)
    tables = np.stack([np.bincount(s.ravel(), minlength=17) for s in symbols])
    p = tables / tables.sum(1, keepdims=True)
    entropy_bits = -(tables * np.log2(np.where(p > 0, p, 1))).sum()
    codec = make_codec(name, tables)
    bits = 8 * len(codec.encode(symbols))
    assert bits >= entropy_bits
    if name == "rans":
        assert bits < 1.01 * entropy_bits + 96  # a few words of ANS state, nothing more
    else:
        # the codewords' own optimum, plus 1 escape-count byte, 8 two-byte channel sizes, padding
        assert bits <= codec.code_bits(symbols) + 8 * (1 + 2 * 8 + 1)


def test_huffman_skips_dead_channels():
    tables = np.zeros((3, 5), dtype=np.int64)
    tables[:, 2] = 100
    tables[0, 1] = 1
    symbols = np.full((3, 16, 16), 2, dtype=np.uint16)
    codec = make_codec("huffman", tables)
    # escape count + 3 channel sizes, all zero: every symbol equals its channel's mode
    assert len(codec.encode(symbols)) == 4


@pytest.mark.parametrize("name", sorted(CODECS))
def test_random_payloads_raise_only_bitstream_error(name):
    rng = np.random.default_rng(7)
    tables = rng.integers(0, 30, size=(4, 17))
    codec = make_codec(name, tables)
    for n in range(300):
        payload = rng.integers(0, 256, size=int(rng.integers(0, 80)), dtype=np.uint8).tobytes()
        try:
            out = codec.decode(payload, (4, 5, 6))
        except BitstreamError:
            continue
        assert out.shape == (4, 5, 6), n  # decoding garbage may succeed, but never in another shape


def test_shape_must_fit_the_tables():
    codec = make_codec("rans", np.ones((4, 3), dtype=np.int64))
    with pytest.raises(BitstreamError) as err:
        codec.decode(b"\x00", (5, 2, 2))
    assert err.value.reason == "table_mismatch"


@given(st.lists(st.integers(0, 2**40), min_size=2, max_size=300))
@settings(max_examples=200, deadline=None)
def test_length_limited_code_is_valid_and_close_to_optimal(weights):
    w = np.asarray(weights, dtype=np.int64)
    lengths = limited_lengths(w)
    coded = lengths > 0
    assert np.array_equal(coded, w > 0)
    assert lengths.max(initial=0) <= MAX_CODE_LENGTH
    if coded.sum() >= 2:
        assert np.sum(2.0 ** -lengths[coded]) <= 1.0  # Kraft: a prefix code exists
        optimal = optimal_lengths(w)
        if optimal.max() <= MAX_CODE_LENGTH:
            assert np.array_equal(lengths, optimal)
        else:
            assert (lengths * w).sum() <= 1.05 * (optimal * w).sum()
