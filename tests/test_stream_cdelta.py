"""shared.delta_coding: the cdelta payload (frame type 3) is lossless, reads the change both sides
hold, keeps type 1 readable, and a forged or mismatched payload raises BitstreamError only."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import bitstream
from shared.bundles import DEFAULT_BUNDLE
from shared.codebook import Codebook
from shared.context_delta import ContextDeltaCoder, check_byte
from shared.delta_coding import change_between
from shared.errors import BitstreamError
from shared.manifest import load_manifest
from shared.stream import StreamDecoder, StreamEncoder, StreamState, change_after

QF = 4


@pytest.fixture(scope="module")
def codebook() -> Codebook:
    return Codebook(load_manifest(DEFAULT_BUNDLE))


@pytest.fixture(scope="module")
def coder(codebook) -> ContextDeltaCoder:
    return ContextDeltaCoder(codebook, QF)


def flicker(codebook: Codebook, n: int, seed: int = 0) -> list[np.ndarray]:
    """Symbols near a quantization boundary: a few step by one and most of those step back the
    next frame (what ent.py measured on the clips), plus a moving block of larger changes."""
    rng = np.random.default_rng(seed)
    c = codebook.manifest.latent.channels
    s = rng.integers(0, QF + 1, size=(c, 14, 14)).astype(np.int64)
    out, last = [s.astype(np.uint16)], np.zeros_like(s)
    for t in range(n - 1):
        step = (rng.random(s.shape) < 0.01) * rng.choice([-1, 1], s.shape)
        back = (last != 0) & (rng.random(s.shape) < 0.8)
        nxt = np.where(back, s - last, s + step)
        nxt[:, 2 + t % 10, 3] = rng.integers(0, QF + 1, c)
        nxt = np.clip(nxt, 0, QF)
        last, s = nxt - s, nxt
        out.append(s.astype(np.uint16))
    return out


def test_cdelta_stream_is_lossless_and_smaller_than_type_1(codebook):
    frames = flicker(codebook, 40)
    sizes = {}
    for contexts in (True, False):
        enc, dec = StreamEncoder(codebook, QF, contexts=contexts), StreamDecoder(codebook)
        state, total = None, 0
        for s in frames:
            made = enc.encode(s, (640, 360))
            parsed, got = dec.decode(bitstream.unpack(made.data), state)
            np.testing.assert_array_equal(got, s)  # exactly the frame coded alone
            state = StreamState.after(parsed, got, state)
            total += len(made.data) if made.kind != "key" else 0
        assert made.kind == ("cdelta" if contexts else "delta")
        sizes[contexts] = total
    assert sizes[True] < 0.9 * sizes[False], sizes  # the flicker's return is cheap to code


symbols = st.integers(0, 2**32 - 1).map(lambda seed: np.random.default_rng(seed))


@settings(max_examples=150, deadline=None)
@given(symbols, st.floats(0.0, 0.3), st.floats(0.0, 0.5), st.booleans())
def test_any_pair_and_any_held_change_round_trip(codebook, coder, rng, rate, moved, known):
    """Random prev/cur pairs (QF ceiling respected) with random previous-change masks: both
    payload types decode to ``cur`` exactly."""
    c = codebook.manifest.latent.channels
    prev = rng.integers(0, QF + 1, size=(c, 14, 14)).astype(np.uint16)
    cur = np.where(rng.random(prev.shape) < rate, rng.integers(0, QF + 1, prev.shape), prev)
    cur = cur.astype(np.uint16)
    change = None
    if known:
        before = np.where(rng.random(prev.shape) < moved, rng.integers(0, QF + 1, prev.shape), prev)
        change = change_between(before.astype(np.uint16), prev)
    payload = coder.encode_ctx(prev, cur, change)
    assert payload[0] == check_byte(change)
    np.testing.assert_array_equal(coder.decode_ctx(payload, prev, change), cur)
    if (prev != cur).any():
        np.testing.assert_array_equal(coder.decode(coder.encode(prev, cur), prev), cur)


def test_a_cdelta_coded_with_no_change_decodes_whatever_is_held(codebook, coder):
    a, b, c = flicker(codebook, 3, seed=4)
    payload = coder.encode_ctx(b, c, None)
    for held in (None, change_between(a, b), np.zeros(b.shape, np.int8)):
        np.testing.assert_array_equal(coder.decode_ctx(payload, b, held), c)


def test_a_cdelta_against_another_change_needs_a_key_frame(codebook, coder):
    """The reference reached the cloud as a key frame (no change held) or the held change is not
    the one the edge coded with: refused as needs_reference, never decoded wrong."""
    a, b, c = flicker(codebook, 3, seed=5)
    change = change_between(a, b)
    payload = coder.encode_ctx(b, c, change)
    other = change.copy()
    other.flat[np.flatnonzero(other == 0)[0]] = 1  # one more symbol changed: another count
    for held in (None, other):
        with pytest.raises(BitstreamError) as err:
            coder.decode_ctx(payload, b, held)
        assert err.value.reason == "needs_reference"


def test_the_state_carries_the_change_as_the_encoder_keeps_it(codebook):
    frames = flicker(codebook, 4, seed=6)
    frames.insert(2, frames[1])  # a skip: the change held becomes all zero
    enc, dec, state = StreamEncoder(codebook, QF), StreamDecoder(codebook), None
    for s in frames:
        made = enc.encode(s, (1, 1))
        before = state
        state = StreamState.after(*dec.decode(bitstream.unpack(made.data), state), before)
        want = change_after(made.kind, None if before is None else before.symbols, s)
        assert (state.change is None) == (want is None) == (made.kind == "key")
        if want is not None:
            np.testing.assert_array_equal(state.change, want)
            assert (made.kind == "skip") == (not state.change.any())


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=0, max_size=300), st.booleans())
def test_fuzz_hostile_cdelta_payloads_raise_bitstream_errors_only(codebook, coder, tail, known):
    """Garbage after a valid-looking head (its check byte matching the change held, so the
    stack is read): BitstreamError, or symbols the QF allows once checked."""
    a, b = flicker(codebook, 2, seed=7)
    change = change_between(a, b) if known else None
    payload = bytes([check_byte(change)]) + tail
    dec = StreamDecoder(codebook)
    with contextlib.suppress(BitstreamError):
        assert coder.decode_ctx(payload, b, change).shape == b.shape
    frame = bitstream.Frame(2, QF, codebook.model_id, b.shape, (1, 1), b"", 16, 2, "key", 0, 1, 1)
    state = StreamState(1, frame, b, change)
    forged = bitstream.Frame(
        2, 0, b"", (0, 0, 0), (0, 0), payload or b"\x00", 1, 2, "cdelta", 0, 2, 1
    )
    with contextlib.suppress(BitstreamError):
        _, got = dec.decode(forged, state)
        assert int(got.max()) <= QF  # StreamDecoder checks the QF itself


def test_truncated_cdeltas_raise_bitstream_errors_only(codebook, coder):
    """A cut inside the head or a word is refused; a cut at a word boundary is another ANS
    stack, refused or decoded to other symbols (the frame's CRC is what catches truncation)."""
    a, b, c = flicker(codebook, 3, seed=8)
    change = change_between(a, b)
    payload = coder.encode_ctx(b, c, change)
    for cut in range(len(payload)):
        if cut < 8 or (cut - 8) % 4:
            with pytest.raises(BitstreamError):
                coder.decode_ctx(payload[:cut], b, change)
        else:
            with contextlib.suppress(BitstreamError):
                assert (coder.decode_ctx(payload[:cut], b, change) != c).any()


@pytest.mark.parametrize("qf", [1, 8, 16, 128, 255])
def test_every_qf_round_trips_small_and_large_tables(codebook, qf):
    """Up to QF 8 the value probabilities come from cached tables, above from a per-symbol
    product; above QF 127 the change is clipped to ±127: every path decodes exactly."""
    m = codebook.manifest
    c = m.table(qf).shape[0]
    ceiling = np.full((c, 1, 1), qf)
    ceiling[: m.latent.channels] = m.base_qf_at(qf)
    rng = np.random.default_rng(qf)

    def frame(base: np.ndarray, rate: float) -> np.ndarray:
        moved = rng.random(base.shape) < rate
        jump = np.where(rng.random(base.shape) < 0.5, 1, rng.integers(0, qf + 1, base.shape))
        return np.where(moved, (base + jump) % (ceiling + 1), base).astype(np.uint16)

    a = (rng.random((c, 14, 14)) * (ceiling + 1)).astype(np.uint16)
    b, coder = frame(a, 0.05), ContextDeltaCoder(codebook, qf)
    cur = frame(b, 0.05)
    change = change_between(a, b, qf)
    np.testing.assert_array_equal(change, np.clip(b.astype(int) - a, -127, 127))
    np.testing.assert_array_equal(
        coder.decode_ctx(coder.encode_ctx(b, cur, change), b, change), cur
    )
    m.check_symbols(cur, qf)
