"""Prometheus metrics, in a registry per app so tests and several apps never collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "spic_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.total = Histogram(
            "spic_request_duration_seconds",
            "Total request time",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue = Histogram(
            "spic_queue_duration_seconds",
            "Time a frame waited for the classifier",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "spic_inference_duration_seconds",
            "ONNX classifier time per batch",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch = Histogram(
            "spic_batch_size",
            "Frames per classifier call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "spic_in_flight_requests", "Requests being handled", registry=self.registry
        )
        self.queue_depth = Gauge(
            "spic_queue_depth", "Frames waiting for the classifier", registry=self.registry
        )
        self.heavy_pending = Gauge(
            "spic_heavy_pending",
            "Reconstructions and oversized frames running or waiting in the heavy lane",
            registry=self.registry,
        )
        self.shed = Counter(
            "spic_shed",
            "Requests refused to shed load (503, or 429 past a per-key cap), by reason",
            ["reason"],
            registry=self.registry,
        )
        self.worker_restarts = Counter(
            "spic_batch_worker_restarts",
            "Batch workers that died and were restarted",
            registry=self.registry,
        )
        self.frames_removed = Counter(
            "spic_frames_removed",
            "Stored frames removed, by reason (age, size: retention; deleted: DELETE)",
            ["reason"],
            registry=self.registry,
        )
        self.webhooks = Counter(
            "spic_webhooks",
            "Webhook deliveries by outcome (delivered, retried, failed, dropped)",
            ["outcome"],
            registry=self.registry,
        )
        self.frames_stored = Gauge(
            "spic_frames_stored", "Frames in the results store", registry=self.registry
        )
        self.frame_bytes = Histogram(
            "spic_frame_bytes",
            "Size of received frames",
            buckets=(128, 256, 512, 1024, 2048, 4096, 16384, 65536),
            registry=self.registry,
        )
        self.reconstruction_cache = Counter(
            "spic_reconstruction_cache",
            "Reconstruction cache lookups and evictions (hit, miss, eviction)",
            ["outcome"],
            registry=self.registry,
        )
