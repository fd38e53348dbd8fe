"""Refinement on demand (issue 35), piece by piece: the refinement store on SQLite and
PostgreSQL, the edge's frame index (frame id -> original in the ring), the rules, the flag.
The whole path, through uvicorn and spic-edge watch, is tests/test_refine.py."""

from __future__ import annotations

import pytest


def test_the_frame_index_survives_a_restart_and_is_bounded_with_the_ring(tmp_path):
    from edge_client.frame_index import FrameIndex

    ring = tmp_path / "done"
    ring.mkdir()
    for i in range(3):
        (ring / f"p{i}.jpg").write_bytes(b"x")
    index = FrameIndex(tmp_path / "index.jsonl", ring)
    for i in range(3):
        index.captured(f"k{i}", f"p{i}.jpg")
    index.uploaded("k0", 10)
    index.uploaded("k1", 11)
    index.uploaded("unknown-key", 12)  # no original kept for it: not indexed
    again = FrameIndex(tmp_path / "index.jsonl", ring)
    assert again.original(10) == ring / "p0.jpg" and again.original(11) == ring / "p1.jpg"
    assert again.original(12) is None
    again.forget(["p0.jpg"])
    (ring / "p0.jpg").unlink()
    assert again.original(10) is None
    # Many frames through a ring of three: the file stays a few times the live entries.
    for i in range(3, 500):
        (ring / f"p{i}.jpg").write_bytes(b"x")
        again.captured(f"k{i}", f"p{i}.jpg")
        again.uploaded(f"k{i}", 100 + i)
        (ring / f"p{i - 3}.jpg").unlink(missing_ok=True)
        again.forget([f"p{i - 3}.jpg"])
    lines = (tmp_path / "index.jsonl").read_text().splitlines()
    assert len(again) == 3 and len(lines) <= 2 * 6 + 64 + 2
    assert FrameIndex(tmp_path / "index.jsonl", ring).original(599) == ring / "p499.jpg"


def test_watch_serves_refinements_unless_told_not_to():
    from edge_client.cli import build_parser, load_settings

    parse = build_parser().parse_args
    assert load_settings(parse(["watch", "cam"])).refine is True
    assert load_settings(parse(["watch", "cam", "--no-refine"])).refine is False


def test_refine_rules_parse_and_match():
    from cloud_service.refine_settings import parse_rules

    rules = parse_rules("label=garbage truck,min_confidence=0.8; unknown")
    assert rules[0].matches({"label": "Garbage truck", "confidence": 0.9})
    assert not rules[0].matches({"label": "garbage truck", "confidence": 0.5})
    assert not rules[0].matches({"label": "church", "confidence": 0.99})
    assert rules[1].matches({"label": None}) and not rules[1].matches({"label": "church"})
    with pytest.raises(ValueError):
        parse_rules("colour=red")


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_the_store_on_both_engines(engine, tmp_path, request):
    from cloud_service.refinements import TooManyPending, open_refinements

    url = request.getfixturevalue("postgres_server")() if engine == "postgresql" else ""
    store = open_refinements(url, tmp_path)
    try:
        t, ttl = 1_000_000, 10_000_000
        a, new = store.create(7, "cam", "layer", 128, "spic", t, ttl, 2)
        again, new_again = store.create(7, "cam", "layer", 128, "spic", t + 1, ttl, 2)
        assert new and not new_again and again.id == a.id  # the same picture asked once
        b, _ = store.create(7, "cam", "original", 90, "jpeg", t, ttl, 2)
        with pytest.raises(TooManyPending):
            store.create(8, "cam", "whole", 128, "spic", t, ttl, 2)
        assert [q.id for q in store.take("cam", t + 5, 3_000_000, 4)] == [a.id, b.id]
        assert store.take("cam", t + 6, 3_000_000, 4) == []  # delivered, not yet due again
        assert len(store.take("cam", t + 4_000_000, 3_000_000, 4)) == 2  # redelivered
        assert store.take("other", t + 5, 3_000_000, 4) == []
        assert store.finish(a.id, "done", t + 7, None, "application/octet-stream", b"small")
        assert not store.finish(a.id, "gone", t + 8)  # closed: the first answer stands
        assert store.finish(b.id, "done", t + 9, None, "image/jpeg", b"a larger picture")
        best = store.best(7)
        assert best is not None and best[0].id == b.id and best[1] == b"a larger picture"
        c, _ = store.create(9, "cam", "layer", 128, "spic", t, ttl, 2)
        assert store.expire_batch(t + ttl + 1, 10) == 1
        assert store.get(c.id).status == "expired"  # type: ignore[union-attr]
        assert store.totals() == (
            {"done": 2, "expired": 1},
            len(b"small") + len(b"a larger picture"),
        )
        assert store.drop_frame(7) == 2 and store.best(7) is None
        assert store.prune_batch(t + 1, 10) == 1 and store.get(c.id) is None
    finally:
        store.close()


def test_the_edge_renders_each_kind(tmp_path):
    """What ``spic-edge watch`` sends for each kind, from one original: a crop frame at the QF
    asked (its enhancement layer included), a whole-image frame, a JPEG and an AVIF."""
    import io

    import numpy as np
    from PIL import Image
    from skimage import data

    from edge_client.encoder import EdgeEncoder
    from edge_client.refine import RenderError, render
    from shared import bitstream
    from shared.bundles import DEFAULT_BUNDLE

    path = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()[:300, :400]).save(path)  # 400x300: not a multiple of 16
    encoder = EdgeEncoder(DEFAULT_BUNDLE, cache_dir=False)
    layer, media = render(encoder, path, "layer", 128, "spic")
    frame = bitstream.unpack(layer)
    assert media == "application/octet-stream" and frame.qf == 128
    assert frame.input_size == (224, 224) and frame.image_size == (400, 300)
    assert frame.latent_shape[0] == encoder.manifest.channels_at(128)  # the layer's channels too
    whole = bitstream.unpack(render(encoder, path, "whole", 128, "spic")[0])
    assert whole.input_size == (400, 304) and whole.image_size == (400, 300)
    for fmt in ("jpeg", "avif"):
        picture, media = render(encoder, path, "original", 90, fmt)
        assert media == f"image/{fmt}"
        back = np.asarray(Image.open(io.BytesIO(picture)).convert("RGB"))
        assert back.shape == (300, 400, 3)
    with pytest.raises(RenderError):
        render(encoder, path, "layer", 7, "spic")  # not a QF of the bundle
