"""End to end: the cloud and the edge as real processes on 127.0.0.1, started with the commands
and environment of docker-compose.yml (hosts, ports and paths substituted), and broken on purpose.
As in compose, the edges reach the cloud through nginx over TLS (a certificate by `make certs`'s
script, verified with --ca-cert) with a per-device key made by `spic-cloud keys add`.

Deliveries are counted from the cloud's access log: every frame must be classified (a 200 that is
not an idempotent replay) exactly once, whatever crashes in between.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from cloud_service.cluster import Nginx
from cloud_service.harness import free_port
from edge_client.encoder import EdgeEncoder

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
API_KEY = "e2e-secret"


class System:
    """Processes built from the compose services, with their logs kept in files."""

    def __init__(self, tmp: Path, bundle: Path, **cloud_env):
        self.tmp, self.bundle, self.port = tmp, bundle, free_port()
        self.frames, self.queue = tmp / "frames", tmp / "queue"
        self.frames.mkdir()
        self.cloud_env = cloud_env
        self.cloud: subprocess.Popen | None = None
        self.lb: Nginx | None = None
        self.certs = tmp / "certs"
        subprocess.run(["sh", str(ROOT / "docker" / "make-certs.sh"), str(self.certs)], check=True)
        self.edge_key = subprocess.run(
            [sys.executable, "-m", "cloud_service.cli", "keys", "add", "--device", "cam-1"]
            + ["--data-dir", str(tmp / "cloud-data")],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        self.edges: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def _env(self, service: str, extra: dict) -> dict:
        """The compose service's environment with its ${VAR:-default}s filled in, the test's API
        key and bundle, and no database URL: these processes use the single-host default
        (SQLite); tests/test_replicas.py runs the PostgreSQL topology."""
        env = {
            k: re.sub(
                r"\$\{(\w+):-([^}]*)\}",
                lambda m: {"SPIC_API_KEY": API_KEY, "SPIC_EDGE_KEY": self.edge_key}.get(m[1], m[2]),
                str(v),
            )
            for k, v in COMPOSE["services"][service]["environment"].items()
            if k != "SPIC_CLOUD_DATABASE_URL"
        }
        env["SPIC_CLOUD_BUNDLES" if service == "cloud" else "SPIC_EDGE_BUNDLE"] = str(self.bundle)
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SPIC_CACHE_DIR": str(self.tmp / "cache"),
            **env,
            **extra,
        }

    def _command(self, service: str) -> list[str]:
        cmd = [str(c) for c in COMPOSE["services"][service]["command"]]
        cmd = [
            c.replace("0.0.0.0", "127.0.0.1")
            .replace("8000", str(self.port))
            .replace("https://lb:8443", self.lb.url if self.lb else "")
            .replace("/certs", str(self.certs))
            .replace("/frames", str(self.frames))
            .replace("/queue", str(self.queue))
            for c in cmd
        ]
        module = {"spic-cloud": "cloud_service.cli", "spic-edge": "edge_client.cli"}[cmd[0]]
        return [sys.executable, "-m", module, *cmd[1:]]

    def start_cloud(self) -> None:
        log = self.tmp / f"cloud-{len(self.logs)}.log"
        self.logs.append(log)
        extra = {f"SPIC_CLOUD_{k.upper()}": str(v) for k, v in self.cloud_env.items()}
        extra.setdefault("SPIC_CLOUD_DATA_DIR", str(self.tmp / "cloud-data"))  # not the cwd
        self.cloud = subprocess.Popen(
            self._command("cloud"),
            env=self._env("cloud", extra),
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("cloud not ready")
        if self.lb is None:  # the load balancer of compose, TLS included, in front of the cloud
            tls = tuple(str(self.certs / n) for n in ("server.pem", "server.key", "ca.pem"))
            self.lb = Nginx([f"127.0.0.1:{self.port}"], tls=tls)  # type: ignore[arg-type]

    def start_edge(self, frames: Path | None = None, queue: Path | None = None) -> subprocess.Popen:
        cmd = self._command("edge")
        if frames:
            cmd = [
                str(frames) if c == str(self.frames) else str(queue) if c == str(self.queue) else c
                for c in cmd
            ]
        proc = subprocess.Popen(
            [*cmd, "--retries", "2", "--interval", "0.2"],
            env=self._env("edge", {}),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.edges.append(proc)
        return proc

    def answered(self) -> list[tuple[str, bool]]:
        """(idempotency key, replayed) of every 200 from /v1/classify, over every cloud log."""
        out = []
        for log in self.logs:
            text = log.read_text()
            # A line the cloud is still writing is read next time: only whole lines count.
            for line in text[: text.rfind("\n") + 1].splitlines():
                if "spic.cloud.access" not in line:
                    continue
                rec = json.loads(line.split("spic.cloud.access: ", 1)[1])
                if (
                    rec["route"] == "/v1/classify"
                    and rec["status"] == 200
                    and rec["idempotency_key"]
                ):
                    out.append((rec["idempotency_key"], rec["replayed"]))
        return out

    def classified(self) -> list[str]:
        """Keys of frames the cloud classified. A replay proves an earlier classification whose log
        line may have died with a SIGKILLed cloud, so it counts as delivered, never as a second one."""
        return [k for k, _ in self.answered()]

    def wait_for(self, n: int, timeout: float = 120, queues: tuple[Path, ...] = ()) -> None:
        deadline = time.time() + timeout
        queues = queues or (self.queue,)
        while time.time() < deadline:
            done = len(set(self.classified())) >= n
            empty = all(not list(q.glob("*.frame")) for q in queues)
            if done and empty:
                return
            time.sleep(0.2)
        raise AssertionError(
            f"only {len(set(self.classified()))} of {n} frames classified in {timeout} s"
        )

    def stop(self) -> None:
        for p in [*self.edges, self.cloud]:
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if self.lb is not None:
            self.lb.close()


def drop_images(folder: Path, n: int, start: int = 0) -> None:
    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        arr = rng.integers(0, 255, (72, 96, 3), dtype=np.uint8)
        tmp = folder / f".frame{i:03d}.tmp"
        Image.fromarray(arr).save(tmp, format="PNG")
        os.replace(tmp, folder / f"frame{i:03d}.png")  # a camera writes, then renames into place


@pytest.fixture
def system(tmp_path, tiny_bundle):
    systems = []

    def make(**cloud_env) -> System:
        s = System(tmp_path, tiny_bundle, **cloud_env)
        systems.append(s)
        return s

    yield make
    for s in systems:
        s.stop()


def assert_exactly_once(sys_: System, n: int) -> None:
    answered = sys_.answered()
    delivered = {k for k, _ in answered}
    assert len(delivered) == n, f"{len(delivered)} distinct frames classified, expected {n}"
    fresh = [k for k, replayed in answered if not replayed]
    doubled = {k for k in fresh if fresh.count(k) > 1}
    assert not doubled, f"{len(doubled)} frame(s) classified twice"


def test_happy_path(system):
    s = system()
    s.start_cloud()
    s.start_edge()
    drop_images(s.frames, 20)
    s.wait_for(20)
    assert_exactly_once(s, 20)
    assert len(list((s.frames / ".spic-done").iterdir())) == 20


def test_cloud_crash_mid_stream(system):
    s = system()
    s.start_cloud()
    s.start_edge()
    drop_images(s.frames, 40)
    deadline = time.time() + 60
    while len(set(s.classified())) < 10 and time.time() < deadline:
        time.sleep(0.02)
    s.cloud.send_signal(signal.SIGKILL)
    s.cloud.wait()
    # The edge queues meanwhile: wait until it has (polled, not a fixed 2 s sleep).
    deadline = time.time() + 60
    while not list(s.queue.glob("*.frame")) and time.time() < deadline:
        time.sleep(0.05)
    assert list(s.queue.glob("*.frame")), "the edge queued nothing while the cloud was down"
    s.start_cloud()  # same idempotency database: answers given before the crash are replayed
    s.wait_for(40)
    assert_exactly_once(s, 40)


def test_edge_crash_mid_queue(system):
    s = system()
    s.start_cloud()
    edge = s.start_edge()
    drop_images(s.frames, 40)
    deadline = time.time() + 60
    while len(set(s.classified())) < 10 and time.time() < deadline:
        time.sleep(0.02)
    edge.send_signal(signal.SIGKILL)
    edge.wait()
    s.start_edge()
    s.wait_for(40)
    assert_exactly_once(s, 40)


PER_CAMERA = 3


def test_overloaded_cloud_edge_backs_off(system, tiny_bundle):
    # One frame may wait, and each batch waits 100 ms for company: six other clients sending
    # ordinary frames back to back keep that one place taken, so most frames are shed with 503.
    s = system(queue_size=1, max_batch_size=2, max_batch_delay_ms=100, max_queue_wait_ms=2000)
    s.start_cloud()
    big = EdgeEncoder(tiny_bundle, cache_dir=False).encode(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8))
    )
    stop, shed = threading.Event(), []

    def hammer() -> None:
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                r = c.post(
                    f"http://127.0.0.1:{s.port}/v1/classify",
                    content=big,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Authorization": f"Bearer {API_KEY}",
                    },
                )
                shed.append(r.status_code)

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        folders = []
        for i in range(3):  # three cameras
            f, q = s.tmp / f"cam{i}", s.tmp / f"queue{i}"
            f.mkdir()
            folders.append((f, q))
            s.start_edge(f, q)
            # 3 a camera, not 10: ~87 % of requests are shed, so every edge still meets 503s, in a
            # quarter of the time (each shed frame waits out Retry-After: 1 s)
            drop_images(f, PER_CAMERA, start=PER_CAMERA * i)
        s.wait_for(3 * PER_CAMERA, timeout=180, queues=tuple(q for _, q in folders))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert 503 in shed, "the load never filled the tiny queue"
    edge_503 = [
        line
        for log in s.logs
        for line in log.read_text().splitlines()
        if '"status": 503' in line
        and '"idempotency_key": "' in line
        and '"idempotency_key": null' not in line
    ]
    assert edge_503, "the edges were never told to back off"
    assert_exactly_once(s, 3 * PER_CAMERA)
