"""The edge's settings, read and validated once: flags over ``SPIC_EDGE_*`` variables over defaults.

``spic-edge`` builds its parser with no defaults of its own; the flags a user gave are passed here
as keyword arguments, which pydantic-settings ranks above the environment. A bad value from
either source is refused before anything starts, and ``settings_error`` turns it into one line.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, FilePath, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.bundles import DEFAULT_BUNDLE
from shared.schemas import DEVICE_ID


def default_device_id() -> str:
    """The host name as a slug (what a camera is called unless told otherwise)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", socket.gethostname()).strip("-._")[:64]
    return slug or "camera"


class EdgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPIC_EDGE_", extra="ignore")

    bundle: Path = DEFAULT_BUNDLE
    qf: int | None = Field(None, ge=1, le=255)  # None: the bundle's default QF
    # A rate budget in bits/px instead of a QF: the QF measured to fit it (manifest.measured).
    bpp: float | None = Field(None, gt=0)
    codec: Literal["rans", "huffman"] = "rans"
    threads: int = Field(1, ge=1, le=256)  # a camera shares its cores with capture and I/O
    whole_image: bool = False
    int8: bool = False
    url: str | None = None
    # Sent as X-Device-Id with every frame; the cloud stores and filters by it. A slug.
    device_id: str = Field(default_factory=default_device_id, pattern=DEVICE_ID.pattern)
    api_key: str | None = None
    ca_cert: FilePath | None = None  # CA bundle or pinned certificate for an https:// URL
    timeout: float = Field(10.0, gt=0)  # seconds per HTTP attempt
    retries: int = Field(5, ge=0, le=100)  # attempts after the first, per frame and drain
    queue_dir: Path | None = None  # default: FOLDER/.spic-queue
    done_dir: Path | None = None  # default: FOLDER/.spic-done
    interval: float = Field(1.0, gt=0)  # seconds between scans of the watch folder
    max_queue_mb: float = Field(256.0, gt=0)  # AWS Greengrass stream manager's default
    ttl_hours: float = Field(24.0, gt=0)
    policy: Literal["reject_new", "drop_oldest"] = "reject_new"
    # An image is read only once its size and mtime have not changed for this long, so a file
    # still being written by the camera is not caught half-way.
    settle_s: float = Field(0.5, ge=0)
    # An image that still cannot be read after it has been unchanged this long is moved to
    # .spic-failed; before that it is retried at every scan (it may still be being written).
    give_up_s: float = Field(30.0, ge=0)
    # Originals of captured images are kept in the done folder as a ring: older than keep_hours
    # or past keep_mb in all, the oldest go first (0 keeps none). Bounded by default, so a camera
    # never fills its card with what it has already sent.
    keep_hours: float = Field(24.0, ge=0)
    keep_mb: float = Field(512.0, ge=0)
    # Serve the cloud's requests for better pictures of frames sent (issue 35): a long-poll of
    # GET /v1/devices/{id}/requests and the requests piggybacked on upload answers, answered from
    # the ring of originals. --no-refine: none.
    refine: bool = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        # Refused at start: "cloud:8000" would otherwise be retried as a connection error.
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                hint = "" if "://" in url else f", e.g. http://{url}"
                raise ValueError(f"needs http:// or https:// and a host{hint}")
        return url


def settings_error(exc: ValidationError) -> str:
    """pydantic's errors as one line: ``--threads / SPIC_EDGE_THREADS: message; ...``."""
    parts = []
    for e in exc.errors():
        name = "_".join(map(str, e["loc"]))
        parts.append(f"--{name.replace('_', '-')} / SPIC_EDGE_{name.upper()}: {e['msg']}")
    return "; ".join(parts)
