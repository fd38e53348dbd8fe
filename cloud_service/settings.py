"""Service settings, from the environment with the SPIC_CLOUD_ prefix (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "models" / "bundles" / "spic-imagenette"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPIC_CLOUD_", extra="ignore")

    # Comma-separated in the environment: SPIC_CLOUD_BUNDLES=/models/a,/models/b
    bundles: Annotated[list[Path], NoDecode] = Field(default_factory=lambda: [DEFAULT_BUNDLE])
    # Comma-separated keys; empty means authentication is off (a warning is logged at start-up).
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_body_bytes: int = (
        1 << 20
    )  # a 224² frame is ~0.6-3 kB; 1 MiB leaves room for big whole images
    # One ONNX call classifies up to this many frames. On CPU the classifier's throughput is flat
    # from batch 8 to 32 (bench/cloud_load.py: 260 vs 262 images/s), while a batch of 32 doubles
    # the tail: p99 at 32 clients was 300 ms at 32 and 172 ms at 8.
    max_batch_size: int = 8
    max_batch_delay_ms: float = 2.0  # how long the first frame of a batch waits for company
    queue_size: int = 256  # frames waiting for the classifier; beyond it: 503 + Retry-After at once
    reconstruct_concurrency: int = 2  # decoder runs at once; more wait in the queue bound above
    inference_threads: int = 1  # ONNX Runtime intra-op threads per session
    retry_after_s: int = 1
    # A SQLite file makes the idempotency store survive restarts (exactly-once across a crash);
    # empty keeps it in memory. The only state the service has; see the README for replicas.
    idempotency_db: str = ""
    idempotency_ttl_s: float = 3600.0
    idempotency_max_entries: int = 100_000
    top_k: int = 5

    @field_validator("bundles", "api_keys", mode="before")
    @classmethod
    def _split(cls, v):
        if isinstance(v, str):
            return [s.strip() for s in v.split(",") if s.strip()]
        return v


@lru_cache
def get_settings() -> Settings:
    return Settings()
