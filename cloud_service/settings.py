"""Service settings, from the environment with the SPIC_CLOUD_ prefix (pydantic-settings).

Every number is range-checked when the settings are built, so a zero or negative value stops the
service at start with pydantic's message instead of hanging it later (a zero-slot semaphore, an
empty queue).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.bundles import DEFAULT_BUNDLE, bundles_in, shipped_bundles
from shared.manifest import ServingLimits

_DEFAULT_LIMITS = ServingLimits()
PLACEHOLDER = "change-me"  # .env.example's keys, refused unless SPIC_CLOUD_DEMO=1


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPIC_CLOUD_", extra="ignore")

    # Comma-separated in the environment: SPIC_CLOUD_BUNDLES=/models/a,/models/b. By default every
    # shipped SPIC bundle, so cameras on an older bundle keep working when the default changes.
    bundles: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: shipped_bundles() or [DEFAULT_BUNDLE]
    )
    # A folder of bundle folders served beside BUNDLES: codecs older than the shipped three
    # (`make old-codecs DEST=dir` writes them), or one's own. Empty: none.
    model_dir: Path | None = None
    # Comma-separated head folders (head.json + head.onnx, shared/heads.py) served beside each
    # codec's own classifier, for the codec each names; one that cannot be served keeps the
    # service unready. Heads uploaded with PUT /v1/heads/{name} live in DATA_DIR/heads.
    heads: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # Comma-separated decoder folders (decoder.json + decoder.onnx, shared/decoders.py, made by
    # spic-decoder): each renders the frames of the codec it names at its QFs, instead of the
    # bundle's decoder; one that cannot be served keeps the service unready.
    decoders: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # Comma-separated upload keys that may send as any device (a warning at start: prefer the
    # per-device keys of `spic-cloud keys add`). With no key here, in READ_KEYS, ADMIN_KEYS or in
    # the key store, and require_keys off, authentication is off (a warning at start too).
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # On: every /v1 request needs a key even before the first one exists (compose sets it).
    require_keys: bool = False
    # How long a key looked up in the key store is trusted: a revocation takes this long to reach
    # every replica; 0 looks every request's key up.
    key_cache_s: float = Field(2.0, ge=0)
    # Accept the placeholder keys of .env.example (change-me...): for a demo on one's own machine.
    demo: bool = False
    # Bearer key for GET /metrics; empty leaves /metrics open (the usual Prometheus set-up inside a
    # private network). Set it when the service port is reachable from outside.
    metrics_key: str = ""
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    # A 224² frame is ~0.6-3 kB and the largest frame the default limits let through (1 MiPx) is
    # ~60 kB at QF16; 1 MiB leaves room for high QFs without letting a body cost real memory.
    max_body_bytes: int = Field(1 << 20, ge=64)
    # The largest encoder input served (pixels, and pixels per side), whatever a bundle's manifest
    # allows: work per frame grows with the latent's area, so larger frames are refused before
    # decoding. A bundle's own ``limits`` may only lower these.
    max_input_pixels: int = Field(_DEFAULT_LIMITS.max_input_pixels, ge=1)
    max_input_side: int = Field(_DEFAULT_LIMITS.max_input_side, ge=1)
    # One ONNX call classifies up to this many frames. On CPU the classifier's throughput is flat
    # from batch 8 to 32 (bench/cloud_load.py: 260 vs 262 images/s), while a batch of 32 doubles
    # the tail: p99 at 32 clients was 300 ms at 32 and 172 ms at 8.
    max_batch_size: int = Field(8, ge=1, le=1024)
    max_batch_delay_ms: float = Field(2.0, ge=0)  # how long the first frame of a batch waits
    # Frames waiting for the classifier, at most (admission, below, usually admits fewer). At
    # ~230 frames/s on 2 cores, 64 waiting frames are ~0.3 s of work: deeper only adds latency.
    queue_size: int = Field(64, ge=1)
    # Classify requests admitted at once, in batches (beyond: 503 + Retry-After before the body is
    # read): enough to keep the classifier busy (a batch running, one gathered, two decoding);
    # more in flight only contend for the GIL. bench/cloud_load.py, 2 idle cores: 394 frames/s at
    # 32 clients, 369 at 64 and 335 at 256 when 72 were admitted (cloud_service/admission.py).
    admit_batches: int = Field(4, ge=1)
    # A frame that waited longer than this for the classifier is answered 503 instead of being
    # classified late (load shedding, as CoDel does): past saturation the queue holds at most this
    # much delay, and the edge retries after Retry-After.
    max_queue_wait_ms: float = Field(500.0, gt=0)
    # Reconstructions and frames larger than the bundle's own crop run in a separate lane of this
    # many threads, so a client sending the largest frames cannot starve 224² classifications.
    heavy_concurrency: int = Field(1, ge=1)
    heavy_queue_size: int = Field(4, ge=1)  # heavy jobs waiting for a thread; beyond: 503
    inference_threads: int = Field(1, ge=1)  # ONNX Runtime intra-op threads per session
    retry_after_s: int = Field(1, ge=1)
    # Slow clients: a request's headers must arrive within header_timeout_s of the connection (or
    # of the previous response), its body within body_timeout_s (408 otherwise).
    header_timeout_s: float = Field(10.0, gt=0)
    body_timeout_s: float = Field(10.0, gt=0)
    # Connections open at once per worker process, and per client address: beyond, a new
    # connection is answered at accept, before any request is read (503, or 429 for the
    # per-address cap; problem+json with Retry-After). Behind a load balancer every connection
    # comes from its address: set the per-client cap to max_connections there.
    max_connections: int = Field(512, ge=1)
    max_connections_per_client: int = Field(64, ge=1)
    # Live event streams (GET /v1/events) held open at once: per key (per client address with
    # authentication off; beyond: 429) and in all (beyond: 503). The connections above
    # max_event_streams stay for uploads, whatever listeners do.
    max_event_streams_per_key: int = Field(8, ge=1)
    max_event_streams: int = Field(64, ge=1)
    # A SQLite file makes the idempotency store survive restarts (exactly-once across a crash);
    # empty keeps it in memory. The only state the service has; see the README for replicas.
    idempotency_db: str = ""
    idempotency_ttl_s: float = Field(3600.0, gt=0)
    # Entry and byte bounds hold in memory and on SQLite; on PostgreSQL (shared by the replicas)
    # the TTL is the bound, so the table holds rate x TTL entries.
    idempotency_max_entries: int = Field(100_000, ge=1)
    # Stored answers in all; a classify answer is ~0.7 kB, so 64 MiB holds ~90,000 of them.
    idempotency_max_bytes: int = Field(64 << 20, ge=1024)
    # A claim whose request never finished (its process died) is released after this long.
    idempotency_lease_s: float = Field(60.0, gt=0)
    top_k: int = Field(5, ge=1)
    # The results store: SQLite in DATA_DIR/results.sqlite unless DATABASE_URL names PostgreSQL.
    store_results: bool = True  # off: nothing is kept (frame_id null), for benchmarks and tests
    data_dir: str = "spic-data"
    database_url: str = ""
    # Comma-separated keys for the query API (GET /v1/frames...). Upload keys may only send frames
    # and read keys may only query; with no keys at all, authentication is off for both.
    read_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    admin_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list
    )  # DELETE /v1/frames/{id}
    # Retention, applied in the background every retention_interval_s: frames older than
    # retention_days, then the oldest beyond retention_mb of frame bytes; 0 turns a bound off.
    # Bounded by default, so a service left with its defaults does not fill its disk: 30 days,
    # and 4 GiB of frame bytes (the database file is larger: rows hold predictions and indexes).
    retention_days: float = Field(30.0, ge=0)
    retention_mb: float = Field(4096.0, ge=0)
    retention_interval_s: float = Field(60.0, gt=0)
    # Rows deleted per statement, and the pause between statements, when uploads and queries
    # take the database: a pass never holds it for long (see cloud_service/retention.py).
    retention_batch: int = Field(500, ge=1)
    retention_pause_ms: float = Field(10.0, ge=0)
    # Every stored frame is POSTed here as JSON, signed with the secret (see webhooks.py).
    webhook_url: str = ""
    webhook_secret: str = ""
    webhook_max_attempts: int = Field(5, ge=1)
    # What reaches the webhook: every stored frame, or only those whose answer changed from
    # their camera's frame before (its label, or its confidence across a confidence_bound).
    webhook_events: Literal["frames", "changes"] = "frames"
    # Confidences at which a frame counts as a change although its label stayed, e.g. "0.5,0.8":
    # a consumer hears when the answer became sure or unsure, not every wobble of it.
    confidence_bounds: Annotated[list[float], NoDecode] = Field(default_factory=list)
    # A skip frame of a stream (nothing changed) is counted on the row it repeats; true stores a
    # row per skip, as for any frame.
    stream_skip_rows: bool = False
    # /v1/stats?measure=seconds: an answer counts as held until the camera's next frame only if
    # that frame comes within this long of its last sign (the frame or its latest repeat).
    stats_gap_s: float = Field(60.0, gt=0)
    reconstruction_cache: int = Field(64, ge=0)  # PNGs of stored frames kept (~80 kB each)
    events_poll_s: float = Field(0.5, gt=0)  # how often a /v1/events stream looks for new frames
    # On shutdown, open requests (live event streams above all) get this long to finish.
    shutdown_timeout_s: int = Field(5, ge=1)

    @field_validator(
        "bundles",
        "heads",
        "decoders",
        "api_keys",
        "read_keys",
        "admin_keys",
        "confidence_bounds",
        mode="before",
    )
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            return [s.strip() for s in v.split(",") if s.strip()]
        return v

    @model_validator(mode="after")
    def _add_model_dir(self) -> Settings:
        if self.model_dir is not None:
            if not self.model_dir.is_dir():
                raise ValueError(f"SPIC_CLOUD_MODEL_DIR {self.model_dir} is not a folder")
            listed = {p.resolve() for p in self.bundles}
            self.bundles += [p for p in bundles_in(self.model_dir) if p.resolve() not in listed]
        return self

    @model_validator(mode="after")
    def _safe(self) -> Settings:
        if not self.bundles:
            raise ValueError("SPIC_CLOUD_BUNDLES is empty: serve at least one bundle")
        missing = [str(h) for h in self.heads if not (h / "head.json").is_file()]
        if missing:
            raise ValueError(f"SPIC_CLOUD_HEADS: no head.json in {', '.join(missing)}")
        missing = [str(d) for d in self.decoders if not (d / "decoder.json").is_file()]
        if missing:
            raise ValueError(f"SPIC_CLOUD_DECODERS: no decoder.json in {', '.join(missing)}")
        if self.max_queue_wait_ms <= self.max_batch_delay_ms:
            raise ValueError(
                f"max_queue_wait_ms ({self.max_queue_wait_ms}) must exceed max_batch_delay_ms "
                f"({self.max_batch_delay_ms}), or every batched frame would be shed"
            )
        if self.metrics_key and self.metrics_key in self.api_keys:
            raise ValueError("metrics_key must differ from every upload key")
        kinds = [set(self.api_keys), set(self.read_keys), set(self.admin_keys)]
        if any(a & b for i, a in enumerate(kinds) for b in kinds[i + 1 :]):
            raise ValueError("a key can be only one of upload, read and admin key")
        if any(not 0 < b < 1 for b in self.confidence_bounds):
            raise ValueError("SPIC_CLOUD_CONFIDENCE_BOUNDS are confidences between 0 and 1")
        if self.webhook_url and not self.webhook_secret:
            raise ValueError("SPIC_CLOUD_WEBHOOK_URL needs SPIC_CLOUD_WEBHOOK_SECRET to sign with")
        placeholders = [k for k in self.all_keys if k.lower().startswith(PLACEHOLDER)]
        if placeholders and not self.demo:
            raise ValueError(
                f"a key is still the placeholder {placeholders[0]!r}: set real keys (spic-cloud "
                "keys add) or SPIC_CLOUD_DEMO=1 for a demo"
            )
        if self.max_event_streams >= self.max_connections:
            raise ValueError(
                f"max_event_streams ({self.max_event_streams}) must be below max_connections "
                f"({self.max_connections}), or listeners could leave no connection for uploads"
            )
        return self

    @property
    def all_keys(self) -> list[str]:
        """Every key given in the environment, of any kind."""
        return [
            k for k in (*self.api_keys, *self.read_keys, *self.admin_keys, self.metrics_key) if k
        ]

    @property
    def limits(self) -> ServingLimits:
        return ServingLimits(
            max_input_pixels=self.max_input_pixels, max_input_side=self.max_input_side
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()
