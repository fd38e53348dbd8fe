"""Labels for training heads from stored frames, on a real uvicorn: labeller keys label, read keys
page through the labelled frames and fetch their bytes."""

from __future__ import annotations

import httpx
import pytest

from cloud_service.harness import running_cloud
from cloud_service.keys import open_keys
from tests.conftest import on_engine
from tests.test_cloud import is_problem

UPLOAD, READ, ADMIN = "up-key", "read-key", "admin-key"
OCTET = {"Content-Type": "application/octet-stream"}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request, tmp_path) -> dict[str, object]:
    keys = dict(api_keys=UPLOAD, read_keys=READ, admin_keys=ADMIN, data_dir=tmp_path / "d")
    return on_engine(request, keys)


def test_labelled_frames_are_listed_for_training(tiny_bundle, settings, noise_frames):
    keys = open_keys(str(settings.get("database_url", "")), settings["data_dir"], cache_s=0)
    _, labeller = keys.add("labeller")
    keys.close()
    frames = noise_frames(3, seed=11)
    with running_cloud([tiny_bundle], **settings) as url:
        ids = []
        for f in frames:
            r = httpx.post(url + "/v1/classify", content=f, headers={**OCTET, **auth(UPLOAD)})
            ids.append(r.json()["frame_id"])

        def label(frame_id: int, text: str, key: str = labeller) -> httpx.Response:
            return httpx.put(
                url + f"/v1/frames/{frame_id}/label", json={"label": text}, headers=auth(key)
            )

        first = label(ids[0], "tench")
        assert first.status_code == 200, first.text
        assert first.json() == {
            "frame_id": ids[0],
            "label": "tench",
            "model_id": r.json()["model_id"],
            "bitstream": f"/v1/frames/{ids[0]}/bitstream",
        }
        assert label(ids[0], "church").status_code == 200  # labelled again: the latest kept
        assert label(ids[2], "parachute", ADMIN).status_code == 200  # admins may label too
        is_problem(label(ids[1], "x", READ), 403)
        is_problem(label(ids[1], "x", UPLOAD), 403)
        is_problem(label(999_999, "x"), 404)
        is_problem(label(ids[1], ""), 422)
        is_problem(httpx.get(url + "/v1/frames", headers=auth(labeller)), 403)  # labels only

        def page(**params: object) -> dict:
            r = httpx.get(url + "/v1/labels", params=params, headers=auth(READ))
            assert r.status_code == 200, r.text
            return dict(r.json())

        one = page(limit=1)
        assert [(x["frame_id"], x["label"]) for x in one["labels"]] == [(ids[0], "church")]
        two = page(limit=1, cursor=one["next_cursor"])
        assert [(x["frame_id"], x["label"]) for x in two["labels"]] == [(ids[2], "parachute")]
        assert two["next_cursor"] is None
        raw = httpx.get(url + one["labels"][0]["bitstream"], headers=auth(READ))
        assert raw.content == frames[0]
        is_problem(httpx.get(url + "/v1/labels", params={"cursor": "x"}, headers=auth(READ)), 422)
        # A frame no longer stored leaves the list with its label.
        assert httpx.delete(url + f"/v1/frames/{ids[0]}", headers=auth(ADMIN)).status_code == 204
        assert [x["frame_id"] for x in page()["labels"]] == [ids[2]]
