"""Scale-out on one machine, as plain processes: a PostgreSQL server, N cloud replicas sharing it,
and nginx in front. The replica test (tests/test_replicas.py) and ``bench/replicas.py`` run the
same topology that docker-compose.yml runs in containers, and the same nginx rules
(``nginx_config``, also written to docker/nginx.conf by the test that checks they agree).

PostgreSQL refuses to run as root, so as root it runs as ``nobody`` in a folder under /tmp that
``nobody`` owns. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud_service.harness import CloudProcess, free_port, spawn_cloud, stop, wait_ready


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    path = found[-1] if found else shutil.which("postgres")
    if not path:
        raise RuntimeError("no PostgreSQL server: `make postgres` installs one")
    return Path(path).parent


class PostgresServer:
    """A throwaway PostgreSQL server on 127.0.0.1 (trust auth). ``fsync=False`` (tests) skips the
    flushes that make a commit durable; benchmarks keep them, as production does."""

    def __init__(self, fsync: bool = False) -> None:
        import psycopg

        self.fsync = fsync
        self.bindir = postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="spic-pg-", dir="/tmp"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "nobody", "nogroup")
            self.as_user = ["runuser", "-u", "nobody", "--"]
        self.data = self.root / "data"
        subprocess.run(
            [*self.as_user, str(self.bindir / "initdb"), "-D", str(self.data), "-U", "spic"]
            + ["--auth=trust"],
            check=True,
            capture_output=True,
        )
        self.port = free_port()
        self.admin_url = f"postgresql://spic@127.0.0.1:{self.port}/postgres"
        self._psycopg = psycopg
        self._names = iter(range(1_000_000))
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with (self.root / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.as_user, str(self.bindir / "postgres"), "-D", str(self.data)]
                + ["-p", str(self.port), "-h", "127.0.0.1", "-k", str(self.root)]
                + ["-c", f"fsync={'on' if self.fsync else 'off'}", "-c", "max_connections=200"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.time() + 60
        while True:
            try:
                self._psycopg.connect(self.admin_url, connect_timeout=2).close()
                return
            except self._psycopg.OperationalError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError((self.root / "server.log").read_text()) from None
                time.sleep(0.2)

    def stop(self) -> None:
        """A fast shutdown (SIGINT): open connections are cut, as in a failover or a restart."""
        if self.proc is not None and self.proc.poll() is None:
            # pg_ctl as the server's user: runuser does not pass SIGINT on to the server.
            subprocess.run(
                [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data)]
                + ["stop", "-m", "fast", "-w"],
                check=False,
                capture_output=True,
                timeout=60,
            )
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"t{next(self._names)}"
        with self._psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://spic@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def nginx_config(
    upstreams: list[str],
    listen: str,
    prefix: str = "/tmp/nginx",
    tls: tuple[str, str] | None = None,
) -> str:
    """nginx in front of the replicas; with ``tls`` (certificate, key), HTTPS only.

    * Passive health checks: an upstream that refuses or resets a connection is skipped for
      ``fail_timeout`` (open-source nginx has no active probes; compose adds container health).
    * A request that carries an Idempotency-Key is retried on the next replica when its replica
      dies under it (``non_idempotent``): the shared idempotency store makes that safe. A POST
      without a key is never retried by nginx, because the replica may have classified it.
    * When no replica answers, a problem+json 503 with Retry-After, as the replicas' own 503.
    """
    servers = "\n".join(f"        server {u} max_fails=1 fail_timeout=5s;" for u in upstreams)
    # Bearer keys must not cross the network in clear: TLS ends here, in front of the replicas.
    ssl = (
        f""" ssl;
        ssl_certificate {tls[0]};
        ssl_certificate_key {tls[1]};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:spic_tls:1m;"""
        if tls
        else ";"
    )
    return f"""# Written by cloud_service/cluster.py:nginx_config; docker-compose uses the same rules.
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_max_body_size 2m;  # above any frame the model allows; the replicas check the rest
    upstream spic_cloud {{
{servers}
        keepalive 32;
    }}
    server {{
        listen {listen}{ssl}
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_connect_timeout 2s;
        proxy_read_timeout 60s;
        proxy_buffering off;  # /v1/events is a server-sent event stream
        proxy_next_upstream_tries 3;
        proxy_next_upstream_timeout 15s;
        location / {{
            error_page 418 = @keyed;
            if ($http_idempotency_key) {{ return 418; }}
            proxy_pass http://spic_cloud;
            proxy_next_upstream error timeout;
            error_page 502 504 = @unavailable;
        }}
        location @keyed {{
            proxy_pass http://spic_cloud;
            proxy_next_upstream error timeout non_idempotent;
            error_page 502 504 = @unavailable;
        }}
        location @unavailable {{
            default_type application/problem+json;
            add_header Retry-After 1 always;
            return 503 '{{"type":"urn:spic:problem:no-replica","title":"no replica available","status":503,"detail":"retry later"}}';
        }}
    }}
}}
"""


class Nginx:
    """nginx on 127.0.0.1; with ``tls`` = (certificate, key, CA bundle), HTTPS only."""

    def __init__(self, upstreams: list[str], tls: tuple[str, str, str] | None = None):
        self.root = Path(tempfile.mkdtemp(prefix="spic-nginx-"))
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        conf = self.root / "nginx.conf"
        listen = f"127.0.0.1:{self.port}"
        conf.write_text(nginx_config(upstreams, listen, str(self.root), tls[:2] if tls else None))
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        with (self.root / "stderr.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [binary, "-c", str(conf), "-p", str(self.root), "-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        wait_ready(self.proc, self.url + "/healthz", timeout=30, ca_cert=tls[2] if tls else None)

    def close(self) -> None:
        stop(self.proc)
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Cluster:
    url: str  # the load balancer's
    replicas: list[CloudProcess]
    balancer_pid: int


@contextmanager
def running_cluster(
    bundles: list[Path], database_url: str, replicas: int = 3, **settings: object
) -> Iterator[Cluster]:
    """``replicas`` cloud processes sharing ``database_url``, behind nginx."""
    procs: list[CloudProcess] = []
    urls: list[str] = []
    nginx = None
    try:
        # All spawned first, then awaited: the replicas load their models side by side. Their
        # ports are told apart here, as none is bound yet.
        ports: set[int] = set()
        while len(ports) < replicas:
            ports.add(free_port())
        for port in sorted(ports):
            extra: dict[str, Any] = {"database_url": database_url, **settings}
            proc, url = spawn_cloud(bundles, port, None, "warning", **extra)
            procs.append(proc)
            urls.append(url)
        for proc, url in zip(procs, urls, strict=True):
            wait_ready(proc, url + "/readyz")
        nginx = Nginx([u.removeprefix("http://") for u in urls])
        yield Cluster(nginx.url, procs, nginx.proc.pid)
    finally:
        if nginx is not None:
            nginx.close()
        for proc in procs:
            if proc.poll() is None:
                stop(proc)


def compose_nginx_config() -> str:
    """docker/nginx.conf: the same rules in front of the compose service ``cloud``. Its name
    resolves, when nginx starts, to every replica of ``--scale cloud=N``: one server each. TLS
    with the certificate of the certs volume (`make certs` makes a test one)."""
    return nginx_config(["cloud:8000"], "8443", "/tmp", ("/certs/server.pem", "/certs/server.key"))
