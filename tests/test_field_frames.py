"""Devices in the field keep working: frames that cameras made with a shipped bundle are classified
by a cloud started with its default settings, whichever bundle is the default now.

tests/golden/field/ holds real frames, named ``<bundle>-<model id>-<photo>-qf<QF>.spic``. They are
committed bytes, never regenerated. When a new default bundle ships, the old one stays under
models/bundles/ and keeps its frames classified here. A frame from QF 128 of a bundle with an
enhancement layer carries the layer's channels after the base's.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np

from cloud_service.harness import running_cloud
from cloud_service.runtime import BundleRuntime
from shared import bitstream
from shared.bundles import shipped_bundles
from shared.manifest import load_manifest

FIELD = Path(__file__).parent / "golden" / "field"
FRAMES = sorted(FIELD.glob("*.spic"))


def test_every_field_frame_has_its_bundle_shipped():
    assert FRAMES
    shipped = {load_manifest(b).model_id: b for b in shipped_bundles()}
    for path in FRAMES:
        model_id = bitstream.unpack(path.read_bytes()).model_id.hex()
        assert model_id in path.name and model_id in shipped, f"{path.name}: bundle not shipped"


def test_the_default_cloud_classifies_every_field_frame_as_its_bundle_does():
    shipped = {load_manifest(b).model_id: b for b in shipped_bundles()}
    with running_cloud(None) as url:  # no SPIC_CLOUD_BUNDLES: the default
        served = {m["model_id"] for m in httpx.get(url + "/v1/models").json()["models"]}
        assert served == set(shipped)
        for path in FRAMES:
            data = path.read_bytes()
            got = httpx.post(
                url + "/v1/classify",
                content=data,
                headers={"Content-Type": "application/octet-stream"},
                timeout=30,
            )
            assert got.status_code == 200, got.text
            frame = bitstream.unpack(data)
            runtime = BundleRuntime(shipped[frame.model_id.hex()])
            # The manifest's rule: a layered frame's base may be quantized coarser than its QF.
            latent = runtime.latents([runtime.codebook.decode(data)[1]], [frame.qf])
            probs = runtime.classify_latents(latent)[0]
            answer = got.json()
            assert answer["model_id"] == frame.model_id.hex() and answer["qf"] == frame.qf
            assert answer["class_id"] == int(np.argmax(probs))
