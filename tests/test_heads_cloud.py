"""Many heads per codec, on a real uvicorn: heads added at run time (PUT /v1/heads, SIGHUP),
?heads= answers, unknown frames stored and counted, and which codecs `spic-cloud serve` serves."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from cloud_service.harness import cloud_process, running_cloud
from edge_client.encoder import EdgeEncoder
from shared.bundles import DEFAULT_BUNDLE, shipped_bundles
from shared.manifest import load_manifest
from shared.runtime import MAX_HEADS
from tests.head_maker import head_zip, make_head
from tests.test_cloud import is_problem

OCTET = {"Content-Type": "application/octet-stream"}
ZIP = {"Content-Type": "application/zip"}
ADMIN, READ, UPLOAD = "admin-key", "read-key", "up-key"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def frames(noise_frames) -> list[bytes]:
    return noise_frames(3, seed=7)


def classify(url: str, frame: bytes, heads: str | None = None, device: str = "cam-1") -> dict:
    params = {} if heads is None else {"heads": heads}
    r = httpx.post(
        url + "/v1/classify",
        content=frame,
        params=params,
        headers={**OCTET, **auth(UPLOAD), "X-Device-Id": device},
    )
    assert r.status_code == 200, r.text
    return r.json()


def models(url: str) -> dict:
    body = httpx.get(url + "/v1/models", headers=auth(READ)).json()
    return {m["model_id"]: m for m in body["models"]}


def test_a_head_put_at_run_time_answers_the_next_frame(tiny_bundle, tmp_path, frames):
    codec = load_manifest(tiny_bundle).model_id
    make_head(tmp_path / "birds", tiny_bundle, "birds", labels=("sparrow", "crow"))
    body = head_zip(tmp_path / "birds")
    keys = dict(api_keys=UPLOAD, read_keys=READ, admin_keys=ADMIN, data_dir=tmp_path / "d")
    with running_cloud([tiny_bundle], **keys) as url:
        before = classify(url, frames[0])
        assert before["heads"] is None and before["unknown"] is False and before["label"]
        # Not served yet: 422 naming the heads served.
        r = httpx.post(
            url + "/v1/classify",
            content=frames[0],
            params={"heads": "birds"},
            headers={**OCTET, **auth(UPLOAD)},
        )
        problem = is_problem(r, 422)
        assert problem["served_heads"] == [models(url)[codec]["default_head"]]
        typo = httpx.post(
            url + "/v1/classify",
            content=frames[0],
            params={"head": "birds"},
            headers={**OCTET, **auth(UPLOAD)},
        )
        assert is_problem(typo, 422)["unknown"] == ["head"]  # a query it does not take
        # Only an admin key adds a head.
        put = url + "/v1/heads/birds"
        is_problem(httpx.put(put, content=body, headers={**ZIP, **auth(READ)}), 403)
        added = httpx.put(put, content=body, headers={**ZIP, **auth(ADMIN)})
        assert added.status_code == 201, added.text
        assert added.json()["codec_id"] == codec and added.json()["name"] == "birds"
        assert httpx.put(put, content=body, headers={**ZIP, **auth(ADMIN)}).status_code == 200
        # The codec id is unchanged: the same frame, the same model id, one more head.
        served = models(url)
        assert list(served) == [codec]
        assert [h["name"] for h in served[codec]["heads"]][-1] == "birds"
        assert served[codec]["decoders"] and served[codec]["default_head"]
        after = classify(url, frames[0], heads="birds")
        assert after["model_id"] == before["model_id"] == codec
        assert after["label"] == before["label"]  # the top level stays the default head's
        birds = after["heads"]["birds"]
        assert birds["label"] in ("sparrow", "crow") and birds["unknown"] is False
        assert len(birds["top_k"]) == 2 and birds["head_id"] == added.json()["head_id"]
        every = classify(url, frames[1], heads="all")["heads"]
        assert set(every) == {served[codec]["default_head"], "birds"}
        # The store keeps every head's prediction, asked for or not.
        plain = classify(url, frames[2])
        stored = httpx.get(url + f"/v1/frames/{plain['frame_id']}", headers=auth(READ)).json()
        assert set(stored["heads"]) == set(every) and plain["heads"] is None
    assert (tmp_path / "d" / "heads" / codec / "birds" / "head.json").is_file()
    # A restart serves the uploaded head again.
    with running_cloud([tiny_bundle], **keys) as url:
        assert "birds" in classify(url, frames[0], heads="birds")["heads"]


def test_bad_uploads_are_refused_and_leave_nothing(tiny_bundle, tmp_path):
    make_head(tmp_path / "good", tiny_bundle, "good")
    make_head(tmp_path / "alien", tiny_bundle, "alien", codec_id="0123456789abcdef")
    data = tmp_path / "d"
    with running_cloud([tiny_bundle], data_dir=data) as url:
        put = url + "/v1/heads/"
        is_problem(httpx.put(put + "other", content=head_zip(tmp_path / "good"), headers=ZIP), 422)
        alien = is_problem(
            httpx.put(put + "alien", content=head_zip(tmp_path / "alien"), headers=ZIP), 409
        )
        assert alien["head_codec_id"] == "0123456789abcdef"
        assert alien["served_model_ids"] == [load_manifest(tiny_bundle).model_id]
        is_problem(httpx.put(put + "good", content=b"not a zip", headers=ZIP), 422)
        text = {"Content-Type": "text/plain"}
        is_problem(httpx.put(put + "good", content=head_zip(tmp_path / "good"), headers=text), 415)
        stray = head_zip(tmp_path / "good", {"../evil.txt": b"x"})
        is_problem(httpx.put(put + "good", content=stray, headers=ZIP), 422)
        extra = head_zip(tmp_path / "good", {"notes.txt": b"x"})
        is_problem(httpx.put(put + "good", content=extra, headers=ZIP), 422)
        # A graph that does not match its hash in head.json.
        (tmp_path / "good" / "head.onnx").write_bytes(b"\x08\x07garbage")
        is_problem(httpx.put(put + "good", content=head_zip(tmp_path / "good"), headers=ZIP), 422)
        assert _declared_too_large(url).startswith("HTTP/1.1 413")
        # A codec serves at most MAX_HEADS heads; a replacement is always taken.
        for i in range(MAX_HEADS - 1):
            make_head(tmp_path / f"h{i}", tiny_bundle, f"h{i}")
            ok = httpx.put(put + f"h{i}", content=head_zip(tmp_path / f"h{i}"), headers=ZIP)
            assert ok.status_code == 201, ok.text
        make_head(tmp_path / "last", tiny_bundle, "last")
        full = httpx.put(put + "last", content=head_zip(tmp_path / "last"), headers=ZIP)
        assert is_problem(full, 409)["type"].endswith("too-many-heads")
        again = httpx.put(put + "h0", content=head_zip(tmp_path / "h0"), headers=ZIP)
        assert again.status_code == 200
    kept = {p.parent.name for p in (data / "heads").rglob("head.json")}
    assert kept == {f"h{i}" for i in range(MAX_HEADS - 1)}  # nothing of the refused uploads


def _declared_too_large(url: str) -> str:
    """The status line for a PUT declaring more than 64 MiB: answered before the body is read."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"PUT /v1/heads/good HTTP/1.1\r\nHost: x\r\nContent-Type: application/zip\r\n"
            + f"Content-Length: {(64 << 20) + 1}\r\n\r\n".encode()
        )
        return sock.recv(4096).decode(errors="replace")


def test_a_head_dropped_in_a_folder_is_served_on_sighup(tiny_bundle, tmp_path, frames):
    codec = load_manifest(tiny_bundle).model_id
    data, model_dir = tmp_path / "d", tmp_path / "models"
    model_dir.mkdir()
    with cloud_process([tiny_bundle], data_dir=data, model_dir=model_dir) as (url, proc):
        assert "late" not in {h["name"] for h in models(url)[codec]["heads"]}
        make_head(model_dir / "late", tiny_bundle, "late", labels=("a", "b", "c", "d"))
        make_head(data / "heads" / codec / "kept", tiny_bundle, "kept")
        proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 20
        while time.time() < deadline:
            names = {h["name"] for h in models(url)[codec]["heads"]}
            if {"late", "kept"} <= names:
                break
            time.sleep(0.2)
        assert {"late", "kept"} <= names, proc.log_text()[-2000:]
        answer = classify(url, frames[0], heads="late,kept")
        assert answer["heads"]["late"]["label"] in ("a", "b", "c", "d")
        assert answer["model_id"] == codec
        # A folder replaced by another head of the same name replaces it on the next SIGHUP.
        shutil.rmtree(model_dir / "late")
        make_head(model_dir / "late", tiny_bundle, "late", labels=("x", "y"), seed=3)
        proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 20
        while time.time() < deadline:
            late = classify(url, frames[0], heads="late")["heads"]["late"]
            if late["label"] in ("x", "y"):
                break
            time.sleep(0.2)
        assert late["label"] in ("x", "y")
        assert proc.poll() is None  # SIGHUP reloads; it does not stop the service
        # A bundle put in the model folder is served from the next SIGHUP on.
        (model_dir / "shipped").symlink_to(DEFAULT_BUNDLE, target_is_directory=True)
        proc.send_signal(signal.SIGHUP)
        shipped = load_manifest(DEFAULT_BUNDLE).model_id
        deadline = time.time() + 30
        while time.time() < deadline and shipped not in models(url):
            time.sleep(0.2)
        assert set(models(url)) == {codec, shipped}
        photo = Image.new("RGB", (90, 70), (30, 120, 200))
        frame = EdgeEncoder(DEFAULT_BUNDLE, cache_dir=False).encode(photo)
        assert classify(url, frame)["model_id"] == shipped


def unknown_bundle(tiny_bundle: Path, folder: Path) -> Path:
    """``tiny_bundle`` whose own head refuses every frame: the manifest's head (not part of the
    codec id) gets a max-softmax rule no probability reaches."""
    shutil.copytree(tiny_bundle, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    rule = {"score": "max_softmax", "threshold": 1.01}
    manifest["head"] = {"name": "tiny", "reject": rule}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert load_manifest(folder).model_id == load_manifest(tiny_bundle).model_id
    return folder


def test_an_unknown_frame_is_stored_and_counted_as_unknown(tiny_bundle, tmp_path, frames):
    bundle = unknown_bundle(tiny_bundle, tmp_path / "bundle")
    make_head(tmp_path / "sure", tiny_bundle, "sure", threshold=0.0)
    keys = dict(api_keys=UPLOAD, read_keys=READ, heads=tmp_path / "sure")
    with running_cloud([bundle], **keys) as url:
        answers = [classify(url, f, heads="all", device="cam-u") for f in frames[:2]]
        for a in answers:
            assert a["unknown"] is True and a["label"] is None
            assert a["top_k"] and a["class_id"] == a["top_k"][0]["class_id"]
            assert a["heads"]["tiny"]["unknown"] is True and a["heads"]["tiny"]["label"] is None
            assert a["heads"]["tiny"]["score"] is not None
            assert a["heads"]["sure"]["unknown"] is False and a["heads"]["sure"]["label"]
        classify(url, frames[2], device="cam-u")

        def read(path: str, **params) -> dict:
            r = httpx.get(url + path, params=params, headers=auth(READ))
            assert r.status_code == 200, r.text
            return r.json()

        stored = read("/v1/frames", device="cam-u")["frames"]
        assert len(stored) == 3 and all(f["unknown"] and f["label"] is None for f in stored)
        assert len(read("/v1/frames", unknown="true")["frames"]) == 3
        assert read("/v1/frames", unknown="false")["frames"] == []
        label = stored[0]["top_k"][0]["label"]
        assert read("/v1/frames", label=label)["frames"] == []  # an unknown frame has no label
        rows = read("/v1/stats", group_by="label", bucket="1d")["rows"]
        assert [(r["group"], r["count"]) for r in rows] == [("unknown", 3)]
        cams = {d["device_id"]: d for d in read("/v1/devices")["devices"]}
        assert cams["cam-u"]["unknowns_since"] == 3 and cams["cam-u"]["frames_since"] == 3
        event = _first_event(url)
        assert event["unknown"] is True and event["label"] is None


def _first_event(url: str) -> dict:
    """The first stored frame, as /v1/events sends it (resuming from event id 0)."""
    headers = {**auth(READ), "Last-Event-ID": "0"}
    with httpx.stream("GET", url + "/v1/events", headers=headers, timeout=20) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                return dict(json.loads(line[6:]))
    raise AssertionError("no event")


def test_bundle_flag_adds_to_the_shipped_codecs_unless_only(tiny_bundle, tmp_path):
    shipped = {load_manifest(b).model_id for b in shipped_bundles()}
    tiny = load_manifest(tiny_bundle).model_id
    make_head(tmp_path / "extra", tiny_bundle, "extra")
    args = ("--bundle", str(tiny_bundle), "--head", str(tmp_path / "extra"))
    with cloud_process(None, cli_args=args) as (url, _):
        served = models(url)
        assert set(served) == shipped | {tiny}
        assert "extra" in {h["name"] for h in served[tiny]["heads"]}
    with cloud_process(None, cli_args=("--only", *args)) as (url, _):
        assert set(models(url)) == {tiny}
