"""Run ``spic-cloud serve`` as a child process on 127.0.0.1: a free port, a readiness wait, a
clean stop, and its log in a file. The tests, ``make demo`` and the benchmarks all start the cloud
through here.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CloudProcess(subprocess.Popen[bytes]):
    """The server process, with the file its stderr goes to."""

    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_cloud(*args: Any, **settings: Any) -> tuple[CloudProcess, str]:
    """``spawn_cloud``, then wait until the service is ready (``/readyz``)."""
    proc, url = spawn_cloud(*args, **settings)
    wait_ready(proc, url + "/readyz")
    return proc, url


def spawn_cloud(
    bundles: list[Path] | None,
    port: int | None = None,
    log_path: Path | None = None,
    log_level: str = "warning",
    *,
    cli_args: tuple[str, ...] = (),
    **settings: object,
) -> tuple[CloudProcess, str]:
    """Start the service with ``SPIC_CLOUD_<NAME>`` set from ``settings``, without waiting (for a
    service expected not to become ready). ``bundles=None`` leaves the bundles to the service's
    default; ``cli_args`` go to ``spic-cloud serve`` (``--bundle``, ``--only``, ``--head``)."""
    port = port or free_port()
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="spic-cloud-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SPIC_CLOUD_BUNDLES", None)  # None: the service's default, every shipped bundle
    if bundles is not None:
        env["SPIC_CLOUD_BUNDLES"] = ",".join(map(str, bundles))
    if "data_dir" not in settings:  # a results store of its own, never the working directory's
        env["SPIC_CLOUD_DATA_DIR"] = tempfile.mkdtemp(prefix="spic-cloud-data-")
    env.update({f"SPIC_CLOUD_{k.upper()}": str(v) for k, v in settings.items()})
    command = [sys.executable, "-m", "cloud_service.cli", "serve"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", log_level]
    command += list(cli_args)
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        proc = CloudProcess(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    proc.log_path = log_path
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(
    proc: subprocess.Popen[bytes], probe: str, timeout: float = 60, ca_cert: str | None = None
) -> None:
    """Poll ``probe`` until it answers 200; raise with the process's log if it dies first.
    ``ca_cert``: what an https:// probe's certificate must chain to."""
    verify = ssl.create_default_context(cafile=ca_cert) if ca_cert else True
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            log = proc.log_text()[-2000:] if isinstance(proc, CloudProcess) else ""
            raise RuntimeError(f"server exited ({proc.returncode}): {log}")
        try:
            if httpx.get(probe, timeout=1, verify=verify).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"server not ready within {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate gracefully, kill after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def cloud_process(
    bundles: list[Path] | None, log_level: str = "warning", **settings: object
) -> Iterator[tuple[str, CloudProcess]]:
    """``settings`` as ``spawn_cloud`` takes them, ``cli_args`` included."""
    proc, url = start_cloud(bundles, None, None, log_level, **settings)
    try:
        yield url, proc
    finally:
        stop(proc)


@contextmanager
def running_cloud(bundles: list[Path] | None, **settings: object) -> Iterator[str]:
    with cloud_process(bundles, "warning", **settings) as (url, _):
        yield url
