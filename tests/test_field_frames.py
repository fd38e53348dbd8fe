"""Devices in the field keep working: frames that cameras made with a shipped bundle are classified
by a cloud started with its default settings, whichever bundle is the default now.

tests/golden/field/ holds real frames, named ``<bundle>-<model id>-<photo>-qf<QF>.spic``. They are
committed bytes, never regenerated. The tree ships the last three codecs (the support window);
an older one is listed in models/bundles/retired.json, and its frames are checked only where its
bundle was written back (``make old-codecs``, into models/bundles, SPIC_RETIRED_CODECS=dir or
SPIC_CLOUD_MODEL_DIR=dir): the cloud serves it from its model folder. A frame from QF 128 of a
bundle with an enhancement layer carries the layer's channels after the base's.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import numpy as np
import pytest

from cloud_service.harness import running_cloud
from scripts.old_codecs import retired
from shared import bitstream
from shared.bundles import DEFAULT_BUNDLE, bundles_in, shipped_bundles
from shared.manifest import load_manifest
from shared.runtime import SpicCodec

FIELD = Path(__file__).parent / "golden" / "field"
FRAMES = sorted(FIELD.glob("*.spic"))
SUPPORTED = 3  # the codecs the tree ships: the default and the two before it
MODEL_DIR = os.environ.get("SPIC_RETIRED_CODECS") or os.environ.get("SPIC_CLOUD_MODEL_DIR")


def frame_model_id(path: Path) -> str:
    return bitstream.unpack(path.read_bytes()).model_id.hex()


def test_every_field_frame_has_its_bundle_shipped_or_listed_as_retired():
    assert FRAMES
    # A frame carries the id its codec had when it was made: since codec ids, a bundle sealed
    # before answers to its old id as an alias (shared.manifest).
    shipped = {i for b in shipped_bundles() for i in load_manifest(b).ids}
    listed = set(retired()[1].values())
    assert len(shipped - listed) >= SUPPORTED
    for path in FRAMES:
        model_id = frame_model_id(path)
        assert model_id in path.name, path.name
        assert model_id in shipped or model_id in listed, f"{path.name}: bundle not shipped"


@pytest.fixture(scope="module")
def cloud() -> tuple[str, dict[str, Path]]:
    """A cloud with its default bundles, and the model folder of retired codecs where given."""
    served = shipped_bundles() + (bundles_in(Path(MODEL_DIR)) if MODEL_DIR else [])
    by_id = {i: b for b in served for i in load_manifest(b).ids}
    settings = {"model_dir": MODEL_DIR} if MODEL_DIR else {}
    with running_cloud(None, **settings) as url:  # no SPIC_CLOUD_BUNDLES: the default
        models = httpx.get(url + "/v1/models").json()["models"]
        assert {m["model_id"] for m in models} == {load_manifest(b).model_id for b in served}
        yield url, by_id


def classifies_as_its_bundle(url: str, data: bytes, bundle: Path) -> None:
    got = httpx.post(
        url + "/v1/classify",
        content=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert got.status_code == 200, got.text
    frame = bitstream.unpack(data)
    runtime = SpicCodec(bundle)
    # The manifest's rule: a layered frame's base may be quantized coarser than its QF.
    latent = runtime.latents([runtime.codebook.decode(data)[1]], [frame.qf])
    probs = runtime.classify_latents(latent)[0]
    answer = got.json()
    # The answer names the codec by its id now, whichever of its ids the frame carries.
    assert answer["model_id"] == runtime.model_id and answer["qf"] == frame.qf
    assert frame.model_id.hex() in runtime.ids
    assert answer["class_id"] == int(np.argmax(probs))


@pytest.mark.parametrize("path", FRAMES, ids=lambda p: p.stem)
def test_the_default_cloud_classifies_the_field_frame_as_its_bundle_does(cloud, path):
    url, by_id = cloud
    model_id = frame_model_id(path)
    if model_id not in by_id:
        pytest.skip("a retired codec's frame: make old-codecs DEST=dir, SPIC_RETIRED_CODECS=dir")
    classifies_as_its_bundle(url, path.read_bytes(), by_id[model_id])


def test_a_retired_codec_is_served_from_the_model_folder(retired_bundle):
    """SPIC_CLOUD_MODEL_DIR: every SPIC bundle in it is served beside the configured ones."""
    v2 = retired_bundle("spic-imagenette-v2")
    frame = next(p for p in FRAMES if p.name.startswith("spic-imagenette-v2-"))
    with running_cloud([DEFAULT_BUNDLE], model_dir=v2.parent) as url:
        served = {m["model_id"] for m in httpx.get(url + "/v1/models").json()["models"]}
        assert load_manifest(v2).model_id in served
        assert load_manifest(DEFAULT_BUNDLE).model_id in served
        classifies_as_its_bundle(url, frame.read_bytes(), v2)


def test_a_missing_model_folder_stops_the_service_at_start(tmp_path):
    from pydantic import ValidationError

    from cloud_service.settings import Settings

    with pytest.raises(ValidationError, match="MODEL_DIR"):
        Settings(model_dir=tmp_path / "absent")
