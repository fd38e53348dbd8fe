"""Start the real service (``spic-cloud serve``) as a uvicorn process on 127.0.0.1 for tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cloud(
    bundles: list[Path], port: int | None = None, **settings
) -> tuple[subprocess.Popen, str]:
    port = port or free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPIC_CLOUD_BUNDLES": ",".join(map(str, bundles))}
    env.update({f"SPIC_CLOUD_{k.upper()}": str(v) for k, v in settings.items()})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cloud_service.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url + "/readyz")
    return proc, url


def wait_ready(proc: subprocess.Popen, probe: str, timeout: float = 60) -> None:
    """Poll ``probe`` until it answers 200; raise with the process's stderr if it dies first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            raise RuntimeError(f"server exited: {err}")
        try:
            if httpx.get(probe, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"server not ready within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    """Terminate gracefully, kill after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@contextmanager
def running_cloud(bundles: list[Path], **settings):
    proc, url = start_cloud(bundles, **settings)
    try:
        yield url
    finally:
        stop(proc)
