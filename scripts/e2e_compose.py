"""make e2e-compose: docker-compose.yml played for real through a Docker engine, with failures.

1. Images: the defaults of docker-compose.yml (python:3.11-slim, postgres:15, nginx:1.25) where
   they are already present; otherwise the equivalents `make base-image` builds from Debian's
   packages (spic-base:bookworm, spic-services:bookworm). Nothing is pulled.
2. Builds the cloud and edge images from build/wheelhouse (`make wheelhouse`), then starts
   PostgreSQL, 3 cloud replicas and nginx as the compose project ``spic-e2e``, with nginx serving
   TLS on a certificate made by `make certs`'s script (docker/make-certs.sh).
3. Makes a key per camera (cam-1..3) and a read key with ``spic-cloud keys add`` in a cloud
   container, as docs/deploy.md says to, and checks through the load balancer that a camera
   presenting another camera's id gets 403 ``device-mismatch``, that the certificate verifies
   only against its CA, and that the service refuses a change-me placeholder key.
4. Starts 3 edges (the compose service ``edge``, once per camera, with its id and key), which
   verify nginx's certificate with ``--ca-cert`` and share a read-only folder of 200 images
   (random crops of scikit-image's photos): each sends 200 frames as its own device, 600 in all.
5. Mid-stream one cloud replica is SIGKILLed (its main process, from the host: a crash, not a
   stop) and later PostgreSQL is restarted once.
6. Checks, in PostgreSQL itself: every frame is stored exactly once. A duplicate is a second row
   for the same (device, frame bytes); a lost frame is one no row has. It also pages through
   GET /v1/frames via the load balancer, so every stored frame is queryable.

The last line printed is a JSON summary. Not part of `make test`: it needs a Docker engine.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evaluation.samples import sample_images  # noqa: E402

PROJECT = "spic-e2e"
EDGES, REPLICAS, IMAGES = 3, 3, 200
CAMERAS = [f"cam-{i + 1}" for i in range(EDGES)]
EDGE_SERVICES = [f"edge-{c}" for c in CAMERAS]
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


def edges_override(path: Path) -> None:
    """A compose file adding one service per camera: the service ``edge`` with that camera's id
    and key (from the variables E2E_KEY_<n>, so no key is written to disk)."""
    edge = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["edge"]
    edge.pop("build")  # the image `build` made for ``edge``
    services = {}
    for i, (name, camera) in enumerate(zip(EDGE_SERVICES, CAMERAS, strict=True)):
        env = {**edge["environment"], "SPIC_EDGE_DEVICE_ID": camera}
        env["SPIC_EDGE_API_KEY"] = f"${{E2E_KEY_{i}}}"
        services[name] = {**edge, "environment": env}
    path.write_text(json.dumps({"services": services}))  # JSON is YAML


class Stack:
    def __init__(self, env: dict[str, str], override: Path):
        self.env = env
        self.compose = [*compose_command(), "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml")]
        self.compose += ["-f", str(override)]

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


def add_key(stack: Stack, *args: str) -> str:
    """`spic-cloud keys add ARGS` in a one-off cloud container: the key it prints."""
    out = stack.run("run", "--rm", "-T", "--no-deps", "cloud", "spic-cloud", "keys", "add", *args)
    return out.strip().splitlines()[-1]


def security_checks(stack: Stack, lb: Lb, keys: dict[str, str]) -> dict:
    """What TLS and per-device keys refuse, through the load balancer."""
    frame_headers = {"Content-Type": "application/octet-stream", "X-Device-Id": CAMERAS[1]}
    stolen = httpx.post(
        lb.url + "/v1/classify",
        content=b"SPIC",
        headers={**frame_headers, "Authorization": f"Bearer {keys[CAMERAS[0]]}"},
        verify=lb.verify,
        timeout=10,
    )
    try:
        httpx.get(lb.url + "/healthz", timeout=5)  # the system's CAs: must not verify
        unverified = "accepted"
    except httpx.ConnectError as exc:
        unverified = "refused" if "CERTIFICATE_VERIFY_FAILED" in str(exc) else str(exc)
    placeholder = subprocess.run(
        [*stack.compose, "run", "--rm", "-T", "--no-deps", "-e", "SPIC_CLOUD_API_KEYS=change-me"]
        + ["cloud", "spic-cloud", "serve"],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return {
        "other_device_id_status": stolen.status_code,
        "other_device_id_problem": stolen.json().get("type"),
        "tls_unknown_ca": unverified,
        "placeholder_key_exit": placeholder.returncode,
    }


def scenario(stack: Stack, lb: Lb) -> dict:
    start = time.time()
    log("starting PostgreSQL, 3 cloud replicas and nginx (TLS)")
    stack.run("up", "-d", "--scale", f"cloud={REPLICAS}", "db", "cloud", "lb")
    wait_for("replicas healthy", lambda: all(map(healthy, stack.containers("cloud"))), 300)
    wait_for("load balancer", lambda: lb.ok("/readyz"), 60)
    log(f"keys: one per camera ({', '.join(CAMERAS)}) and a read key, by spic-cloud keys add")
    camera_keys = {camera: add_key(stack, "--device", camera) for camera in CAMERAS}
    lb.read_key = add_key(stack, "--scope", "read")
    checks = security_checks(stack, lb, camera_keys)
    log(f"refused: {checks}")
    stack.env.update({f"E2E_KEY_{i}": camera_keys[c] for i, c in enumerate(CAMERAS)})
    log(f"sending: {EDGES} edges x {IMAGES} images")
    stack.run("up", "-d", "--no-recreate", "--scale", f"cloud={REPLICAS}", *EDGE_SERVICES)
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
    queryable = _count_via_api(lb)
    answered = sum(
        line.count(".jpg:") for line in stack.run("logs", "--no-color", *EDGE_SERVICES).splitlines()
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
        **checks,
    }


class Lb:
    """The load balancer as the host sees it: HTTPS, verified against the test CA."""

    def __init__(self, port: int, ca: Path):
        self.url = f"https://127.0.0.1:{port}"
        self.verify = ssl.create_default_context(cafile=str(ca))
        self.read_key = ""

    def ok(self, path: str) -> bool:
        try:
            return httpx.get(self.url + path, timeout=2, verify=self.verify).status_code == 200
        except httpx.HTTPError:
            return False


def _queued(stack: Stack) -> bool:
    """Whether any edge still holds a frame in its queue (files named <sequence>.frame)."""
    for container in (c for service in EDGE_SERVICES for c in stack.containers(service)):
        out = subprocess.run(
            ["docker", "exec", container, "find", "/queue", "-maxdepth", "1", "-name", "*.frame"],
            capture_output=True,
            text=True,
        )
        if out.stdout.strip():
            return True
    return False


def _count_via_api(lb: Lb) -> int:
    count, cursor = 0, None
    for _ in range(100):  # 100 pages of 200 bound the walk
        params: dict[str, str | int] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        page = httpx.get(
            lb.url + "/v1/frames",
            params=params,
            headers={"Authorization": f"Bearer {lb.read_key}"},
            timeout=10,
            verify=lb.verify,
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
    certs = Path(tempfile.mkdtemp(prefix="spic-e2e-certs-"))
    os.chmod(certs, 0o755)  # nginx reads them as nobody
    subprocess.run(["sh", str(ROOT / "docker" / "make-certs.sh"), str(certs)], check=True)
    override = certs / "edges.compose.json"
    edges_override(override)
    env = {
        **os.environ,
        **choose_images(),
        "SPIC_DB_PASSWORD": "e2e-db-password",
        "SPIC_PORT": str(port),
        "SPIC_FRAMES": str(frames),
        "SPIC_CERTS": str(certs),
        **{f"E2E_KEY_{i}": "" for i in range(EDGES)},
    }
    stack = Stack(env, override)
    log(f"images: {', '.join(f'{k}={env[k]}' for k in OFFLINE_IMAGES)}")
    build_start = time.time()
    stack.run("build")
    built_s = time.time() - build_start
    try:
        summary = scenario(stack, Lb(port, certs / "ca.pem"))
    except Exception as exc:
        log(f"failed: {exc}")
        for service in ("cloud", "lb", *EDGE_SERVICES, "db"):
            log(
                f"--- {service} logs ---\n"
                + stack.run("logs", "--no-color", "--tail", "30", service, check=False)
            )
        summary = {"error": str(exc)}
    finally:
        stack.run("down", "-v", "--remove-orphans", check=False)
        shutil.rmtree(frames, ignore_errors=True)
        shutil.rmtree(certs, ignore_errors=True)
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
        and summary.get("other_device_id_status") == 403
        and summary.get("tls_unknown_ca") == "refused"
        and summary.get("placeholder_key_exit") == 2
    )
    summary["passed"] = passed
    print(json.dumps(summary))
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
