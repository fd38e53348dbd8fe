"""The id a frame carries names the codec; heads, decoders and measurements are apart from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from shared.bundles import DEFAULT_BUNDLE
from shared.heads import Head
from shared.manifest import (
    MANIFEST_NAME,
    Manifest,
    content_hash,
    load_manifest,
    write_manifest,
)
from shared.reject import (
    EmbeddedHead,
    RejectRule,
    auroc,
    familiar_features,
    knn_score,
    load_bank,
    prototypes,
    threshold_for,
)
from shared.runtime import SpicCodec

FIELD = Path(__file__).parent / "golden" / "field"


def copy_bundle(tmp_path: Path, name: str = "copy") -> Path:
    out = tmp_path / name
    shutil.copytree(DEFAULT_BUNDLE, out)
    return out


def test_renaming_replacing_the_head_or_a_decoder_keeps_the_codec_id(tmp_path):
    bundle = copy_bundle(tmp_path, "renamed-folder")
    before = load_manifest(bundle)
    plain = before.model_copy(update={"head": EmbeddedHead(name="imagenette")})
    head_before = Head.embedded(bundle, write_manifest(bundle, plain))
    # Another name, another default QF, other decoder bytes and another classifier.
    (bundle / "decoder.onnx").write_bytes((bundle / "decoder.onnx").read_bytes() + b"\0")
    other = DEFAULT_BUNDLE.parent / "spic-imagenette-v4" / "classifier.onnx"
    shutil.copy(other, bundle / "classifier.onnx")
    m = plain.model_copy(update={"name": "someone-elses", "default_qf": 8})
    write_manifest(bundle, m)
    after = load_manifest(bundle)
    assert after.model_id == before.model_id and after.aliases == before.aliases
    assert after.files["decoder"].sha256 != before.files["decoder"].sha256
    assert Head.embedded(bundle, after).head_id != head_before.head_id  # the head changed


def test_a_new_encoder_or_new_tables_is_a_new_codec(tmp_path):
    bundle = copy_bundle(tmp_path)
    m = load_manifest(bundle)
    tables = {k: [list(r) for r in v] for k, v in m.tables.items()}
    tables["4"][0][0] += 1
    assert write_manifest(bundle, m.model_copy(update={"tables": tables})).model_id != m.model_id
    bundle2 = copy_bundle(tmp_path, "enc")
    (bundle2 / "encoder.onnx").write_bytes((bundle2 / "encoder.onnx").read_bytes() + b"\0")
    assert write_manifest(bundle2, load_manifest(bundle2, check=False)).model_id != m.model_id


def test_a_format_1_manifest_loads_with_its_id_as_an_alias(tmp_path):
    """A bundle sealed before codec ids: checked by its own rule, served under both ids."""
    bundle = copy_bundle(tmp_path)
    m = load_manifest(bundle)
    old = m.model_copy(update={"format_version": 1, "aliases": [], "head": None})
    old = old.model_copy(update={"model_id": content_hash(old)})
    (bundle / MANIFEST_NAME).write_text(old.model_dump_json(exclude={"aliases", "head"}))
    read = load_manifest(bundle)
    assert read.format_version == 2 and read.model_id == m.model_id
    assert read.aliases == [old.model_id] and read.ids == [m.model_id, old.model_id]
    # Tampering with a format-1 manifest is still caught by its own rule.
    body = json.loads((bundle / MANIFEST_NAME).read_text())
    body["name"] = "tampered"
    (bundle / MANIFEST_NAME).write_text(json.dumps(body))
    with pytest.raises(ValueError, match="does not match its content"):
        load_manifest(bundle)


def test_every_field_frame_decodes_under_its_codec_alias():
    """Frames made before codec ids carry the old ids: the codec decodes them, and its own
    frames carry the codec id."""
    from shared import bitstream

    codec = SpicCodec(DEFAULT_BUNDLE)
    frames = sorted(FIELD.glob("spic-imagenette-v5-*.spic"))
    assert frames
    for path in frames:
        frame = codec.parse(path.read_bytes())
        assert frame.model_id_hex in codec.manifest.aliases
        assert codec.decompress(frame).shape[0] == codec.manifest.channels_at(frame.qf)
    from PIL import Image

    from edge_client.encoder import EdgeEncoder

    data = EdgeEncoder(DEFAULT_BUNDLE, cache_dir=False).encode(Image.new("RGB", (224, 224)))
    assert bitstream.unpack(data).model_id_hex == codec.model_id


def test_the_shipped_head_has_a_measured_reject_rule():
    m: Manifest = load_manifest(DEFAULT_BUNDLE)
    assert m.head is not None and m.head.reject is not None
    rule = m.head.reject
    assert rule.measured is not None and rule.measured.auroc >= 0.9
    assert rule.accept == 0.95 and rule.bank in m.files
    head = SpicCodec(DEFAULT_BUNDLE).head()
    assert head.has_features and head.bank is not None


def test_a_head_for_another_codec_is_refused():
    codec = SpicCodec(DEFAULT_BUNDLE)
    head = codec.head()
    head.codec_id = "0" * 16
    with pytest.raises(ValueError, match="reads codec"):
        codec.add_head(head)


def test_knn_threshold_and_auroc():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(50, 8))
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    near = bank[:10] + 0.01
    far = -bank[:10]
    s_near, s_far = knn_score(near, bank, 1), knn_score(far, bank, 1)
    assert auroc(s_near, s_far) == 1.0 and auroc(s_far, s_near) == 0.0
    assert auroc(np.ones(3), np.ones(4)) == 0.5
    th = threshold_for(np.arange(100.0), 0.95)
    assert (np.arange(100.0) >= th).mean() == 0.95
    assert prototypes(bank, 5).shape == (5, 8)
    latent = rng.random((3, 4, 2, 2)).astype(np.float32)
    f = familiar_features(latent, rng.random((3, 6)))
    assert f.shape == (3, 14) and np.allclose(np.linalg.norm(f[:, :6], axis=1), 1, atol=1e-5)


def test_a_bank_is_refused_from_its_header_before_it_is_read(tmp_path):
    path = tmp_path / "bank.npy"
    np.save(path, np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="float16"):
        load_bank(path)
    # A header claiming a vast bank: refused without reading (or allocating) its data.
    header = {"descr": "<f2", "fortran_order": False, "shape": (10**9, 512)}
    with path.open("wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
    with pytest.raises(ValueError, match="a bank is"):
        load_bank(path)


def test_a_rule_needs_its_bank(tmp_path):
    m = load_manifest(DEFAULT_BUNDLE)
    rule = RejectRule(score="knn", threshold=0.0)
    with pytest.raises(ValueError, match="needs its bank"):
        Head("x", "0" * 16, m.model_id, m.classes, DEFAULT_BUNDLE / "classifier.onnx", rule, None)


def test_the_shipped_card_gives_the_reject_rule_and_what_it_did():
    m = load_manifest(DEFAULT_BUNDLE)
    card = (DEFAULT_BUNDLE / "MODEL_CARD.md").read_text()
    rule = m.head.reject if m.head else None
    assert rule is not None and rule.measured is not None
    section = card.split("## Unknown", 1)[1]
    assert f"**{rule.threshold:.4f}**" in section and f"**{rule.measured.auroc:.3f}**" in section
    assert (
        f"**{rule.measured.foreign_accepted:.1%}**" in section and "evaluation.unknown" in section
    )
    assert f"Codec id `{m.model_id}`" in card
