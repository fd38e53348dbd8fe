"""The semantic guard (shared/stream_guard.py): a guarded stream's frames get the answers of the
same frames coded alone, with fewer bytes than the lossless stream."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.bundles import DEFAULT_BUNDLE
from shared.quantize import quantize
from shared.runtime import SpicCodec
from shared.stream import StreamEncoder
from shared.stream_guard import SemanticGuard, guard_for, target

QF = 4


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    margin=st.sampled_from([0.0, 0.1, 0.3, 0.5]),
    positions=st.integers(1, 4),
)
def test_a_target_holds_or_takes_the_exact_symbol(seed, margin, positions):
    rng = np.random.default_rng(seed)
    y = rng.random((8, 5, 5)).astype(np.float32)
    held = quantize(np.clip(y + rng.normal(0, 0.15, y.shape), 0, 1), QF)
    exact = quantize(y, QF)
    out = target(y, held, QF, margin, positions)
    assert out.dtype == held.dtype and out.shape == held.shape
    assert np.all((out == held) | (out == exact))
    sent = out != held
    # a symbol is re-sent only when the value left the held cell by more than the margin
    assert np.all(np.abs(y * QF - held)[sent] > 0.5 + margin)
    # ... and only at positions where enough channels are re-sent
    counts = sent.sum(0)
    assert np.all((counts == 0) | (counts >= positions))
    if margin == 0.0 and positions == 1:
        assert np.array_equal(out, exact)


def test_the_guard_falls_back_to_the_exact_frame_when_every_target_changes_the_answer():
    # the "classifier": the parity of the sum of all symbols; only the exact frame keeps it
    rng = np.random.default_rng(1)
    y = rng.random((4, 3, 3)).astype(np.float32)
    exact = quantize(y, QF)
    held = quantize(np.clip(y + 0.2, 0, 1), QF)

    def parity(latents: np.ndarray) -> np.ndarray:
        return (np.rint(latents * QF).reshape(len(latents), -1).sum(1) % 2).astype(int)

    exact_answer = parity(exact[None] / QF)[0]

    def picky(latents: np.ndarray) -> np.ndarray:
        same = np.all(np.rint(latents * QF) == exact, axis=(1, 2, 3))
        return np.where(same, exact_answer, 1 - exact_answer)

    guard = SemanticGuard(picky, lambda s: s.astype(np.float32) / QF)
    assert np.array_equal(guard.choose(y, exact, held, QF), exact)
    assert guard.chosen == {"exact": 1} and guard.runs >= 2
    # no reference (a key frame) or nothing changed: the exact symbols, no classifier run
    runs = guard.runs
    assert guard.choose(y, exact, None, QF) is exact
    assert guard.choose(y, exact, exact.copy(), QF) is exact
    assert guard.runs == runs
    # an answer that never changes: the cheapest target, after two runs
    calm = SemanticGuard(lambda lat: np.zeros(len(lat), int), lambda s: s / QF)
    first = target(y, held, QF, *calm.targets[0])
    assert np.array_equal(calm.choose(y, exact, held, QF), first) and calm.runs == 2
    # the cloud now holds that target: a next target that keeps it all (a skip) is answered
    # from the run just made, so only the exact frame is run
    again = calm.choose(y, exact, first, QF)
    assert np.array_equal(again, target(y, first, QF, *calm.targets[0]))
    assert np.array_equal(again, first) and calm.runs == 3


def test_a_guarded_stream_answers_as_the_frames_coded_alone_with_fewer_bytes():
    from tests.test_stream_cloud import scene

    codec = SpicCodec(DEFAULT_BUNDLE)
    m = codec.manifest
    guard = guard_for(codec, QF)
    assert guard is not None
    ys = [
        codec.analyse(np.asarray(im.resize((224, 224)), np.float32).transpose(2, 0, 1) / 255, False)
        for im in scene(10, seed=3)
    ]
    exact = [m.quantize_latent(y, QF) for y in ys]
    lossless, guarded = StreamEncoder(codec.codebook, QF), StreamEncoder(codec.codebook, QF)
    plain = [lossless.encode(s, (224, 224)) for s in exact]
    sent, held = [], None
    for y, s in zip(ys, exact, strict=True):
        frame = guarded.encode(guard.choose(y, s, held, QF), (224, 224))
        held = frame.symbols
        sent.append(frame)
    answers = guard.answers(codec.latents(exact, [QF] * len(exact)))
    got = guard.answers(codec.latents([f.symbols for f in sent], [QF] * len(sent)))
    assert np.array_equal(got, answers)
    assert sum(len(f.data) for f in sent) < sum(len(f.data) for f in plain)
    assert any(not np.array_equal(f.symbols, s) for f, s in zip(sent, exact, strict=True))
    assert guard_for(codec, max(m.qfs)) is None or m.channels_at(max(m.qfs)) == m.latent.channels


def test_a_guarded_stream_through_a_real_cloud_gets_the_answers_coded_alone(tmp_path):
    from cloud_service.harness import running_cloud
    from edge_client.client import CloudClient
    from edge_client.encoder import EdgeEncoder
    from edge_client.frame_queue import FrameQueue
    from edge_client.stream import StreamSender
    from tests.test_stream_cloud import scene

    images = scene(8, seed=4)
    encoder = EdgeEncoder(DEFAULT_BUNDLE, qf=QF)
    with running_cloud([DEFAULT_BUNDLE]) as url:

        def client(device: str) -> CloudClient:
            return CloudClient(url, device_id=device, max_retries=1, timeout=30)

        runs = {}
        for guard in (False, True):
            queue = FrameQueue(tmp_path / f"q{guard}")
            sender = StreamSender(
                encoder, client(f"cam-{guard}"), queue, f"cam-{guard}", guard=guard
            )
            for im in images:
                sender.capture(im)
            assert sender.drain()
            runs[guard] = sender
        alone = client("cam-alone")
        answers = [alone.classify(encoder.encode(im), f"alone-{i}") for i, im in enumerate(images)]
    guarded, lossless = runs[True], runs[False]
    assert [(r["label"], r["unknown"]) for r in guarded.results] == [
        (a["label"], a["unknown"]) for a in answers
    ]
    assert guarded.summary()["bytes_sent"] < lossless.summary()["bytes_sent"]
    assert (
        guarded.summary()["guard_runs"] >= len(images) - 1 > 0 == lossless.summary()["guard_runs"]
    )
