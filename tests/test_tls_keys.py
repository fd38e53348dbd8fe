"""Per-device keys, placeholder keys and TLS, on a real uvicorn (SQLite and a real PostgreSQL) and
a real nginx serving a certificate made by `make certs`'s own script."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from cloud_service.cli import build_parser, main
from cloud_service.cluster import Nginx
from cloud_service.harness import cloud_process, free_port, running_cloud
from cloud_service.settings import Settings
from edge_client.client import CloudClient
from edge_client.encoder import EdgeEncoder
from edge_client.errors import AuthError

ROOT = Path(__file__).resolve().parent.parent
OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture(scope="module")
def frame(tiny_bundle) -> bytes:
    return EdgeEncoder(tiny_bundle, qf=48, cache_dir=False).encode(
        Image.new("RGB", (90, 70), (40, 200, 40))
    )


def keys(capsys, *args: str) -> str:
    """`spic-cloud keys ...` (in this process); its stdout."""
    capsys.readouterr()
    assert main(["keys", *args]) == 0
    return capsys.readouterr().out.strip()


def post(
    url: str, frame: bytes, key: str, device: str | None, headers_extra: dict | None = None
) -> httpx.Response:
    headers = {**OCTET, "Authorization": f"Bearer {key}", **(headers_extra or {})}
    if device:
        headers["X-Device-Id"] = device
    return httpx.post(url + "/v1/classify", content=frame, headers=headers)


def problem(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return str(body["type"]).rsplit(":", 1)[-1]


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "not within the key cache's time"
        time.sleep(0.05)


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_per_device_keys_bind_the_device_and_revoke_without_restart(
    engine, request, tiny_bundle, tmp_path, frame, capsys
):
    data = tmp_path / "data"
    store = ["--data-dir", str(data)]
    settings: dict[str, object] = dict(data_dir=data, key_cache_s=0.2)
    if engine == "postgresql":
        url = request.getfixturevalue("postgres_server")()
        store = ["--database-url", url]
        settings["database_url"] = url
    cam1 = keys(capsys, "add", "--device", "cam-1", *store)
    cam2 = keys(capsys, "add", "--device", "cam-2", "--scope", "upload", *store)
    reader = keys(capsys, "add", "--scope", "read", *store)
    assert len({cam1, cam2, reader}) == 3 and all(len(k) > 40 for k in (cam1, cam2, reader))
    with running_cloud([tiny_bundle], **settings) as cloud:
        ok = post(cloud, frame, cam1, "cam-1")
        assert ok.status_code == 200 and ok.json()["device_id"] == "cam-1"
        # A camera presenting another camera's id is refused before anything is stored.
        assert problem(post(cloud, frame, cam1, "cam-2"), 403) == "device-mismatch"
        assert post(cloud, frame, cam1, None).json()["device_id"] == "cam-1"  # the key's device
        assert post(cloud, frame, cam2, "cam-2").status_code == 200
        assert problem(post(cloud, frame, reader, "cam-1"), 403) == "wrong-key-scope"
        assert problem(post(cloud, frame, "spic_guessed", "cam-1"), 403) == "wrong-api-key"
        assert problem(httpx.post(cloud + "/v1/classify", content=frame, headers=OCTET), 401)
        by_read = httpx.get(cloud + "/v1/frames", headers={"Authorization": f"Bearer {reader}"})
        assert {f["device_id"] for f in by_read.json()["frames"]} == {"cam-1", "cam-2"}
        by_cam = httpx.get(cloud + "/v1/frames", headers={"Authorization": f"Bearer {cam1}"})
        assert problem(by_cam, 403) == "wrong-key-scope"

        listed = [json.loads(line) for line in keys(capsys, "list", "--json", *store).split("\n")]
        assert [(k["scope"], k["device"]) for k in listed] == [
            ("upload", "cam-1"),
            ("upload", "cam-2"),
            ("read", None),
        ]
        assert all(k["key"].endswith("...") and len(k["key"]) < 15 for k in listed)

        # Revocation and rotation reach the running service within its key cache (0.2 s here).
        keys(capsys, "revoke", "--device", "cam-1", *store)
        wait_until(lambda: post(cloud, frame, cam1, "cam-1").status_code == 403)
        assert problem(post(cloud, frame, cam1, "cam-1"), 403) == "wrong-api-key"
        cam2_id = next(k["id"] for k in listed if k["device"] == "cam-2")
        first = post(cloud, frame, cam2, "cam-2", headers_extra={"Idempotency-Key": "f-1"})
        new_cam2 = keys(capsys, "rotate", str(cam2_id), *store)
        # A frame retried across the rotation is the camera's same frame: replayed, stored once.
        again = post(cloud, frame, new_cam2, "cam-2", headers_extra={"Idempotency-Key": "f-1"})
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["frame_id"] == first.json()["frame_id"]
        wait_until(lambda: post(cloud, frame, cam2, "cam-2").status_code == 403)
        # Every key revoked: authentication stays on, it does not fall back to open.
        for k in listed + [json.loads(keys(capsys, "list", "--json", *store).split("\n")[-1])]:
            main(["keys", "revoke", str(k["id"]), *store])
        wait_until(lambda: post(cloud, frame, new_cam2, "cam-2").status_code == 403)
        assert problem(httpx.post(cloud + "/v1/classify", content=frame, headers=OCTET), 401)
    if engine == "sqlite":  # at rest: each key's SHA-256, never the key
        raw = (data / "keys.sqlite").read_bytes()
        for key in (cam1, cam2, reader):
            assert key.encode() not in raw
            assert hashlib.sha256(key.encode()).hexdigest().encode() in raw


def test_environment_keys_keep_any_device_with_a_warning(tiny_bundle, tmp_path, frame, capsys):
    data = tmp_path / "data"
    cam1 = keys(capsys, "add", "--device", "cam-1", "--data-dir", str(data))
    with cloud_process([tiny_bundle], api_keys="fleet-key", data_dir=data) as (cloud, proc):
        assert post(cloud, frame, "fleet-key", "cam-7").json()["device_id"] == "cam-7"
        assert post(cloud, frame, "fleet-key", "cam-1").status_code == 200
        assert problem(post(cloud, frame, cam1, "cam-7"), 403) == "device-mismatch"
        assert "may send as ANY device" in proc.log_text()


def test_the_first_stored_key_turns_authentication_on(tiny_bundle, tmp_path, frame, capsys):
    with running_cloud([tiny_bundle], data_dir=tmp_path, key_cache_s=0.2) as cloud:
        open_post = lambda: httpx.post(cloud + "/v1/classify", content=frame, headers=OCTET)  # noqa: E731
        assert open_post().status_code == 200  # no key anywhere: open, with a warning
        keys(capsys, "add", "--device", "cam-1", "--data-dir", str(tmp_path))
        wait_until(lambda: open_post().status_code == 401)


def test_require_keys_refuses_everything_before_the_first_key(tiny_bundle, tmp_path, frame):
    with running_cloud([tiny_bundle], require_keys=1, data_dir=tmp_path) as cloud:
        assert problem(httpx.post(cloud + "/v1/classify", content=frame, headers=OCTET), 401)
        assert problem(httpx.get(cloud + "/v1/frames"), 401)
        assert httpx.get(cloud + "/readyz").status_code == 200  # probes need no key


def test_placeholder_keys_are_refused_outside_demo(tmp_path):
    for var in ("API_KEYS", "READ_KEYS", "ADMIN_KEYS", "METRICS_KEY"):
        env = {**os.environ, "PYTHONPATH": str(ROOT), f"SPIC_CLOUD_{var}": "Change-Me-too"}
        env["SPIC_CLOUD_DATA_DIR"] = str(tmp_path)
        out = subprocess.run(
            [sys.executable, "-m", "cloud_service.cli", "serve", "--port", str(free_port())],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2 and "placeholder" in out.stderr and "DEMO" in out.stderr
    assert Settings(api_keys=["change-me"], read_keys=["change-me-too"], demo=True).demo
    with pytest.raises(ValueError, match="placeholder"):
        Settings(api_keys=["change-me"])


def test_keys_cli_refuses_bad_requests(tmp_path, capsys):
    store = ["--data-dir", str(tmp_path)]
    assert main(["keys", "add", *store]) == 2  # an upload key needs its device
    assert main(["keys", "add", "--device", "cam 1", *store]) == 2
    with pytest.raises(SystemExit):
        main(["keys", "add", "--scope", "bogus", *store])
    capsys.readouterr()
    assert main(["keys", "add", "--scope", "read", "--device", "dashboard-1", *store]) == 0
    assert main(["keys", "revoke", "42", *store]) == 1
    assert main(["keys", "rotate", "42", *store]) == 2
    assert "spic-cloud:" in capsys.readouterr().err


def test_every_flag_has_help_with_its_variable_and_examples(capsys):
    def parsers(p):
        yield p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    for p in parsers(build_parser()):
        text = p.format_help()
        assert "examples:" in text, p.prog
        for action in p._actions:
            if action.option_strings and action.dest not in ("help", "version"):
                assert action.help, f"{p.prog} {action.option_strings}"
        if p.prog.endswith("serve"):
            for flag in ("--host", "--port", "--workers", "--bundle", "--log-level"):
                assert f"SPIC_CLOUD_{flag[2:].replace('-', '_').upper()}" in text, flag
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("spic-cloud ")


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    """A CA and a server certificate for localhost and 127.0.0.1, by `make certs`'s script."""
    folder = tmp_path_factory.mktemp("certs")
    subprocess.run(["sh", str(ROOT / "docker" / "make-certs.sh"), str(folder)], check=True)
    return folder


def test_tls_at_nginx_verified_by_the_edge(tiny_bundle, tmp_path, frame, certs, capsys):
    data = tmp_path / "data"
    cam1 = keys(capsys, "add", "--device", "cam-1", "--data-dir", str(data))
    tls = tuple(str(certs / n) for n in ("server.pem", "server.key", "ca.pem"))
    with running_cloud([tiny_bundle], data_dir=data) as cloud:
        lb = Nginx([cloud.removeprefix("http://")], tls=tls)  # type: ignore[arg-type]
        try:
            assert lb.url.startswith("https://")
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                httpx.get(lb.url + "/healthz")  # the system's CAs do not know this one
            plain = httpx.get(lb.url.replace("https://", "http://") + "/healthz")
            assert plain.status_code == 400  # no clear-text HTTP on the TLS port
            client = CloudClient(lb.url, cam1, device_id="cam-1", ca_cert=tls[2], max_retries=0)
            assert client.classify(frame, "tls-1")["device_id"] == "cam-1"
            client.close()
            thief = CloudClient(lb.url, cam1, device_id="cam-2", ca_cert=tls[2], max_retries=0)
            with pytest.raises(AuthError) as refused:
                thief.classify(frame, "tls-2")
            thief.close()
            assert refused.value.status == 403
            assert refused.value.problem["type"].endswith("device-mismatch")
            image = tmp_path / "photo.png"
            Image.new("RGB", (64, 64), "navy").save(image)
            env = {**os.environ, "PYTHONPATH": str(ROOT), "SPIC_EDGE_CA_CERT": tls[2]}
            sent = subprocess.run(
                [sys.executable, "-m", "edge_client.cli", "send", str(image), "--url", lb.url]
                + ["--api-key", cam1, "--device-id", "cam-1", "--bundle", str(tiny_bundle)]
                + ["--json", "--retries", "0"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert sent.returncode == 0, sent.stderr
            assert json.loads(sent.stdout.splitlines()[-1])["device_id"] == "cam-1"
        finally:
            lb.close()
