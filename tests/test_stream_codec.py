"""shared.stream: key, delta and skip frames decode to exactly the symbols coded alone; a delta
without its reference, or a hostile one, raises BitstreamError and nothing else."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import bitstream
from shared.bundles import DEFAULT_BUNDLE
from shared.codebook import Codebook
from shared.errors import BitstreamError
from shared.manifest import load_manifest
from shared.stream import StreamDecoder, StreamEncoder, StreamState

QF = 4


@pytest.fixture(scope="module")
def codebook() -> Codebook:
    return Codebook(load_manifest(DEFAULT_BUNDLE))


def clip(codebook: Codebook, n: int, rate: float, seed: int = 0) -> list[np.ndarray]:
    """A fixed camera in symbols: a start frame, then a few symbols moved by ±1 each frame."""
    rng = np.random.default_rng(seed)
    c = codebook.manifest.latent.channels
    s = rng.integers(0, QF + 1, size=(c, 14, 14)).astype(np.uint16)
    out = [s]
    for _ in range(n - 1):
        s = s.astype(np.int64) + (rng.random(s.shape) < rate) * rng.choice([-1, 1], s.shape)
        s = np.clip(s, 0, QF).astype(np.uint16)
        out.append(s)
    return out


def run(codebook, frames, **kw):
    enc, dec = StreamEncoder(codebook, QF, **kw), StreamDecoder(codebook)
    state, made = None, []
    for s in frames:
        f = enc.encode(s, (640, 360))
        parsed, got = dec.decode(bitstream.unpack(f.data), state)
        state = StreamState.after(parsed, got)
        made.append((f, got))
    return made


def test_a_stream_decodes_to_the_frames_coded_alone_in_fewer_bytes(codebook):
    frames = clip(codebook, 30, 0.01)
    made = run(codebook, frames, key_interval=10)
    assert [f.kind for f, _ in made[:11]] == ["key"] + ["delta"] * 9 + ["key"]
    for s, (_, got) in zip(frames, made, strict=True):
        np.testing.assert_array_equal(got, s)
    alone = np.mean([len(codebook.encode(s, QF, "rans", (640, 360))) for s in frames])
    deltas = np.mean([len(f.data) for f, _ in made if f.kind == "delta"])
    assert deltas < 0.5 * alone
    assert [f.seq for f, _ in made] == list(range(30))


def test_identical_symbols_make_a_header_only_skip(codebook):
    frames = clip(codebook, 3, 0.0)
    made = run(codebook, frames)
    assert [f.kind for f, _ in made] == ["key", "skip", "skip"]
    assert len(made[1][0].data) == bitstream.DELTA_OVERHEAD == 22


def test_flicker_below_the_position_threshold_is_not_sent(codebook):
    frames = clip(codebook, 6, 0.002, seed=3)
    made = run(codebook, frames, position_changes=8)
    assert {f.kind for f, _ in made[1:]} == {"skip"}
    for _, got in made:  # every frame decodes to the key frame's symbols, on both sides
        np.testing.assert_array_equal(got, frames[0])
    moved = frames[-1].copy()
    moved[:, 3, 4] = (moved[:, 3, 4] + 1) % (QF + 1)  # an object: every channel at one place
    last = run(codebook, [frames[0], moved], position_changes=8)[-1]
    assert last[0].kind == "delta"
    np.testing.assert_array_equal(last[1][:, 3, 4], moved[:, 3, 4])
    assert (last[1] != moved).sum(0).max() < 8


def test_a_requested_key_frame_comes_next(codebook):
    enc = StreamEncoder(codebook, QF)
    frames = clip(codebook, 3, 0.01)
    assert enc.encode(frames[0], (1, 1)).kind == "key"
    enc.request_key()
    assert enc.encode(frames[1], (1, 1)).kind == "key"
    assert enc.encode(frames[2], (1, 1)).kind == "delta"


def test_a_delta_without_its_reference_needs_a_key_frame(codebook):
    frames = clip(codebook, 3, 0.02)
    enc, dec = StreamEncoder(codebook, QF), StreamDecoder(codebook)
    key = bitstream.unpack(enc.encode(frames[0], (1, 1)).data)
    enc.encode(frames[1], (1, 1))  # lost on the way
    delta = bitstream.unpack(enc.encode(frames[2], (1, 1)).data)
    held = StreamState.after(*dec.decode(key, None))
    for state in (None, held):
        with pytest.raises(BitstreamError) as err:
            dec.decode(delta, state)
        assert err.value.reason == "needs_reference"
    with pytest.raises(BitstreamError) as err:  # and the frame-alone path refuses it too
        codebook.decode_frame(delta)
    assert err.value.reason == "needs_reference"


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=0, max_size=400))
def test_fuzz_hostile_delta_payloads_raise_bitstream_errors_only(codebook, payload):
    dec = StreamDecoder(codebook)
    prev = clip(codebook, 1, 0.0)[0]
    with contextlib.suppress(BitstreamError):
        got = dec.coder(QF).decode(payload, prev)
        assert got.shape == prev.shape
        codebook.manifest.check_symbols(got, QF)


def test_the_delta_payload_spec_is_in_the_bitstream_page():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = (root / "shared" / "stream.py").read_text().split('"""')[1].strip("\n")
    assert spec in (root / "docs" / "bitstream.md").read_text()


def test_withheld_skips_make_the_next_frame_refer_further_back(codebook, monkeypatch):
    base = clip(codebook, 2, 0.02, seed=5)
    frames = [base[0], base[0], base[0], base[1], base[1]]
    enc, dec = StreamEncoder(codebook, QF), StreamDecoder(codebook)
    key = enc.encode(frames[0], (640, 360))
    assert not enc.withhold()  # a key frame is always sent
    state = StreamState.after(*dec.decode(bitstream.unpack(key.data), None))
    for s in frames[1:3]:  # two skips, withheld: nothing reaches the cloud
        assert enc.encode(s, (640, 360)).kind == "skip" and enc.withhold()
        assert not enc.withhold()  # once only
    delta = enc.encode(frames[3], (640, 360))
    assert delta.kind == "delta" and not enc.withhold()  # only a skip may be withheld
    parsed, got = dec.decode(bitstream.unpack(delta.data), state)
    assert (parsed.seq, parsed.ref_seq) == (3, 0)
    np.testing.assert_array_equal(got, frames[3])
    state = StreamState.after(parsed, got)
    skip = enc.encode(frames[4], (640, 360))  # sent: refers to the delta just before it
    assert dec.decode(bitstream.unpack(skip.data), state)[0].ref_seq == 3
    # a gap the format cannot carry is never made: the skip goes after all
    monkeypatch.setattr(bitstream, "MAX_REF_GAP", 2)
    enc.encode(frames[4], (640, 360))
    assert enc.withhold()
    enc.encode(frames[4], (640, 360))
    assert not enc.withhold()
