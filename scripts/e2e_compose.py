"""make e2e-compose: docker-compose.yml played for real through a Docker engine, with failures.

1. Images: the defaults of docker-compose.yml (python:3.11-slim, postgres:15, nginx:1.25) where
   they are already present; otherwise the equivalents `make base-image` builds from Debian's
   packages (spic-base:bookworm, spic-services:bookworm). Nothing is pulled.
2. Builds the cloud and edge images from build/wheelhouse (`make wheelhouse`), then starts
   PostgreSQL, 3 cloud replicas, nginx and 3 edges as the compose project ``spic-e2e``.
3. The 3 edges share a read-only folder of 200 images (random crops of scikit-image's photos), so
   each sends 200 frames as its own device: 600 frames through the load balancer.
4. Mid-stream one cloud replica is SIGKILLed (its main process, from the host: a crash, not a
   stop) and later PostgreSQL is restarted once.
5. Checks, in PostgreSQL itself: every frame is stored exactly once. A duplicate is a second row
   for the same (device, frame bytes); a lost frame is one no row has. It also pages through
   GET /v1/frames via the load balancer, so every stored frame is queryable.

The last line printed is a JSON summary. Not part of `make test`: it needs a Docker engine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evaluation.samples import sample_images  # noqa: E402

PROJECT = "spic-e2e"
EDGES, REPLICAS, IMAGES = 3, 3, 200
API_KEY, READ_KEY = "e2e-upload-key", "e2e-read-key"
OFFLINE_IMAGES = {
    "SPIC_BASE_IMAGE": ("python:3.11-slim", "spic-base:bookworm"),
    "SPIC_POSTGRES_IMAGE": ("postgres:15", "spic-services:bookworm"),
    "SPIC_NGINX_IMAGE": ("nginx:1.25", "spic-services:bookworm"),
}


def log(message: str) -> None:
    print(f"e2e-compose: {message}", file=sys.stderr, flush=True)


def compose_command() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


def choose_images() -> dict[str, str]:
    """The compose defaults if present here, else the images made from Debian's packages."""
    chosen = {}
    for var, (default, offline) in OFFLINE_IMAGES.items():
        chosen[var] = os.environ.get(var) or (default if image_exists(default) else offline)
    if any(not image_exists(name) for name in chosen.values()):
        log("building base images from Debian's packages (make base-image)")
        subprocess.run(["bash", str(ROOT / "docker" / "base-image.sh")], check=True)
    return chosen


def write_images(folder: Path) -> None:
    rng = np.random.default_rng(0)
    photos = [np.asarray(im) for im in sample_images(None)]
    for i in range(IMAGES):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = photo[y : y + side, x : x + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        Image.fromarray(np.ascontiguousarray(crop)).resize((256, 256)).save(
            folder / f"img{i:04d}.jpg", quality=90
        )


class Stack:
    def __init__(self, env: dict[str, str]):
        self.env = env
        self.compose = [*compose_command(), "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml")]

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> str:
        out = subprocess.run(
            [*self.compose, *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and out.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
            )
        return out.stdout

    def sql(self, query: str) -> list[list[str]] | None:
        """Rows from PostgreSQL in the db container; None while it is unreachable."""
        try:
            out = self.run(
                "exec", "-T", "db", "psql", "-h", "/var/run/postgresql", "-U", "spic", "-d", "spic",
                "-tAF", "|", "-c", query,
                check=False,
                timeout=30,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return None
        rows = [line.split("|") for line in out.splitlines() if line.strip()]
        return rows or None

    def stored(self) -> int:
        rows = self.sql("SELECT COUNT(*) FROM frames")
        return int(rows[0][0]) if rows else -1

    def containers(self, service: str) -> list[str]:
        return self.run("ps", "-q", service).split()


def wait_for(what: str, condition, timeout: float) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise TimeoutError(what)
        time.sleep(1)


def healthy(container: str) -> bool:
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Health.Status}}", container],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() == "healthy"


def scenario(stack: Stack, lb_url: str) -> dict:
    start = time.time()
    log("starting PostgreSQL, 3 cloud replicas and nginx")
    stack.run("up", "-d", "--scale", f"cloud={REPLICAS}", "--scale", "edge=0", "db", "cloud", "lb")
    wait_for("replicas healthy", lambda: all(map(healthy, stack.containers("cloud"))), 300)
    wait_for("load balancer", lambda: _ok(lb_url + "/readyz"), 60)
    log(f"sending: {EDGES} edges x {IMAGES} images")
    stack.run(
        "up", "-d", "--no-recreate", "--scale", f"cloud={REPLICAS}", "--scale", f"edge={EDGES}"
    )
    total = EDGES * IMAGES

    wait_for("a quarter stored", lambda: stack.stored() >= total // 4, 300)
    victim = stack.containers("cloud")[1]
    pid = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Pid}}", victim], capture_output=True, text=True
    ).stdout.strip()
    os.kill(int(pid), 9)  # the replica's process dies mid-stream, as in a crash or an OOM kill
    killed_at = stack.stored()
    log(f"SIGKILLed replica {victim[:12]} (pid {pid}) at {killed_at} frames stored")

    wait_for("half stored", lambda: stack.stored() >= total // 2, 300)
    restarted_at = stack.stored()
    stack.run("restart", "db")
    log(f"restarted PostgreSQL at {restarted_at} frames stored")

    def settled() -> bool:
        return stack.stored() >= total and not _queued(stack)

    try:
        wait_for("every frame stored", settled, 600)
    except TimeoutError:
        log("timed out waiting for every frame")

    rows = stack.sql(
        "SELECT COUNT(*), COUNT(DISTINCT (device, md5(frame))), COUNT(DISTINCT device), "
        "COUNT(DISTINCT idem_key) FROM frames"
    )
    stored, distinct, devices, keys = (int(v) for v in rows[0]) if rows else (0, 0, 0, 0)
    queryable = _count_via_api(lb_url)
    answered = sum(
        line.count(".jpg:") for line in stack.run("logs", "--no-color", "edge").splitlines()
    )
    restarts = sum(
        int(
            subprocess.run(
                ["docker", "inspect", "-f", "{{.RestartCount}}", c], capture_output=True, text=True
            ).stdout.strip()
            or 0
        )
        for c in stack.containers("cloud")
    )
    return {
        "frames_sent": total,
        "stored": stored,
        "duplicates": stored - distinct,
        "lost": total - distinct,
        "replicas": REPLICAS,
        "edges": devices,
        "distinct_keys": keys,
        "answered_in_edge_logs": answered,
        "queryable_via_lb": queryable,
        "replica_killed_at_stored": killed_at,
        "replica_restarts": restarts,
        "postgres_restarted_at_stored": restarted_at,
        "seconds": round(time.time() - start, 1),
    }


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _queued(stack: Stack) -> bool:
    """Whether any edge still holds a frame in its queue (files named <sequence>.frame)."""
    for container in stack.containers("edge"):
        out = subprocess.run(
            ["docker", "exec", container, "find", "/queue", "-maxdepth", "1", "-name", "*.frame"],
            capture_output=True,
            text=True,
        )
        if out.stdout.strip():
            return True
    return False


def _count_via_api(lb_url: str) -> int:
    count, cursor = 0, None
    for _ in range(100):  # 100 pages of 200 bound the walk
        params: dict[str, str | int] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        page = httpx.get(
            lb_url + "/v1/frames",
            params=params,
            headers={"Authorization": f"Bearer {READ_KEY}"},
            timeout=10,
        ).json()
        count += len(page["frames"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return count


def main() -> int:
    if not (ROOT / "build" / "wheelhouse").is_dir():
        log("no build/wheelhouse: run `make wheelhouse` (make e2e-compose does)")
        return 2
    port = 18000 + os.getpid() % 1000
    frames = Path(tempfile.mkdtemp(prefix="spic-e2e-frames-"))
    os.chmod(frames, 0o755)
    write_images(frames)
    env = {
        **os.environ,
        **choose_images(),
        "SPIC_API_KEY": API_KEY,
        "SPIC_READ_KEY": READ_KEY,
        "SPIC_DB_PASSWORD": "e2e-db-password",
        "SPIC_PORT": str(port),
        "SPIC_FRAMES": str(frames),
    }
    stack = Stack(env)
    log(f"images: {', '.join(f'{k}={env[k]}' for k in OFFLINE_IMAGES)}")
    build_start = time.time()
    stack.run("build")
    built_s = time.time() - build_start
    try:
        summary = scenario(stack, f"http://127.0.0.1:{port}")
    except Exception as exc:
        log(f"failed: {exc}")
        for service in ("cloud", "lb", "edge", "db"):
            log(
                f"--- {service} logs ---\n"
                + stack.run("logs", "--no-color", "--tail", "30", service, check=False)
            )
        summary = {"error": str(exc)}
    finally:
        stack.run("down", "-v", "--remove-orphans", check=False)
        shutil.rmtree(frames, ignore_errors=True)
    sizes = {
        name: int(subprocess.run(
            ["docker", "image", "inspect", "-f", "{{.Size}}", name], capture_output=True, text=True
        ).stdout.strip() or 0) // (1 << 20)
        for name in ("spic-cloud:latest", "spic-edge:latest")
    }  # fmt: skip
    summary.update(
        {"build_s": round(built_s, 1), "image_mb": sizes, "base_image": env["SPIC_BASE_IMAGE"]}
    )
    passed = (
        summary.get("stored") == summary.get("frames_sent")
        and summary.get("duplicates") == 0
        and summary.get("lost") == 0
        and summary.get("queryable_via_lb") == summary.get("frames_sent")
    )
    summary["passed"] = passed
    print(json.dumps(summary))
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
