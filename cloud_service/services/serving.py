"""What the cloud serves: codecs and their heads, loaded at start and again on SIGHUP.

At start the lifespan opens every configured bundle (``Settings.bundles``, the model folder's
included), gives each codec a classify batcher that runs all its heads, then adds the heads:
the ``--head`` folders (``Settings.heads``; one that cannot be served keeps the service unready,
saying why), the heads uploaded before (``{data_dir}/heads/<codec id>/<name>/``) and head
folders in the model folder (``model_dir/<name>/head.json``); those found by scanning are skipped
with a warning when they cannot be served.

On SIGHUP the same scan runs again without a restart: bundles not yet served (a new folder in
the model folder) are opened and served, heads are added, and a head whose folder now holds
another head id replaces the one served under its name. No camera is touched: a head never
changes the codec id its frames carry. Loading runs in a thread; requests keep being answered.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from pathlib import Path

import numpy as np

from cloud_service.batcher import Batcher
from cloud_service.services.predictions import run_heads
from cloud_service.settings import Settings
from cloud_service.state import ServiceState
from shared.bundles import bundles_in
from shared.decoders import Decoder
from shared.heads import HEAD_MANIFEST, Head, load_head_manifest
from shared.runtime import SpicCodec

log = logging.getLogger("spic.cloud")
HEADS_DIR = "heads"  # under the data folder: the heads uploaded with PUT /v1/heads/{name}


def open_codec(path: str | Path, settings: Settings) -> SpicCodec:
    """A codec for serving: no memory arena, its limits capped by the settings, heads open."""
    codec = SpicCodec(path, settings.inference_threads, limits=settings.limits, arena=False)
    codec.load_heads()
    return codec


def serve_codec(state: ServiceState, runtime: SpicCodec) -> None:
    """Serve an opened codec: its ids, and a batcher running all its heads (on the event loop)."""
    taken = [i for i in runtime.ids if state.runtime_for(i) is not None]
    if taken:
        raise ValueError(f"bundle {runtime.path} has the id of another codec: {taken[0]}")
    s = state.settings
    state.add_runtime(runtime)
    state.batchers[runtime.model_id] = Batcher(
        partial(run_heads, runtime),
        s.max_batch_size,
        s.max_batch_delay_ms / 1000,
        s.queue_size,
        state.metrics,
        max_wait_s=s.max_queue_wait_ms / 1000,
    )
    log.info("loaded model %s (%s) from %s", runtime.model_id, runtime.manifest.name, runtime.path)


def heads_root(settings: Settings) -> Path:
    return Path(settings.data_dir) / HEADS_DIR


def found_heads(settings: Settings) -> list[Path]:
    """Head folders found by scanning: uploaded ones, then the model folder's."""
    # An upload's staging folder or a replaced one left by a crash starts with a dot: skipped.
    uploaded = heads_root(settings).glob(f"*/*/{HEAD_MANIFEST}")
    found = sorted(p.parent for p in uploaded if not p.parent.name.startswith("."))
    if settings.model_dir is not None:
        found += sorted(p.parent for p in settings.model_dir.glob(f"*/{HEAD_MANIFEST}"))
    return found


def check_head(runtime: SpicCodec, head: Head) -> None:
    """Run ``head`` once on a zero latent of the codec's own crop: a graph that cannot read this
    codec's latent, or answers another number of classes, is refused before it serves a frame."""
    _, h, w = runtime.native_shape
    latent = np.zeros((1, runtime.manifest.latent.channels, h, w), dtype=np.float32)
    try:
        probs = head.run(latent).probs
    except Exception as exc:
        msg = f"head {head.name} cannot read codec {runtime.model_id}'s latent: {exc}"
        raise ValueError(msg) from exc
    if probs.shape != (1, len(head.labels)):
        raise ValueError(
            f"head {head.name} answers {probs.shape[-1]} scores for {len(head.labels)} classes"
        )


def open_head(state: ServiceState, folder: Path) -> tuple[SpicCodec, Head] | None:
    """The codec a head folder reads and the head, opened and checked; None when that codec
    already serves this very head. ``LookupError`` when the codec is not served, ``ValueError``
    (or ``OSError``) when the folder is not a sound head."""
    manifest = load_head_manifest(folder)
    runtime = state.runtime_for(manifest.codec_id)
    if runtime is None:
        raise LookupError(
            f"head {manifest.name} reads codec {manifest.codec_id}, which is not served "
            f"(served: {', '.join(sorted(state.runtimes))})"
        )
    served = runtime.heads.get(manifest.name)
    if served is not None and served.head_id == manifest.head_id:
        return None
    head = Head.open(folder, state.settings.inference_threads, arena=False)
    check_head(runtime, head)
    return runtime, head


def add_heads(state: ServiceState, folders: list[Path], strict: bool) -> list[str]:
    """Open and serve the heads of ``folders`` (in a thread); the names added or replaced. With
    ``strict`` a folder that cannot be served raises, otherwise it is logged and skipped."""
    changed = []
    for folder in folders:
        try:
            opened = open_head(state, folder)
            if opened is None:
                continue
            runtime, head = opened
            old = runtime.add_head(head)
        except (LookupError, ValueError, OSError) as exc:
            if strict:
                raise ValueError(f"head {folder}: {exc}") from exc
            log.warning("head %s not served: %s", folder, exc)
            continue
        verb = "replaced" if old is not None else "added"
        log.info("%s head %s (%s) of codec %s", verb, head.name, head.head_id, runtime.model_id)
        changed.append(head.name)
    return changed


async def load_models(state: ServiceState) -> None:
    """The lifespan's loader: every bundle, then every head; unready, with the reason, if any
    configured one fails."""
    settings = state.settings
    try:
        async with state.reload_lock:
            for path in settings.bundles:
                serve_codec(state, await asyncio.to_thread(open_codec, path, settings))
            await asyncio.to_thread(add_heads, state, list(settings.heads), True)
            await asyncio.to_thread(add_heads, state, found_heads(settings), False)
            await asyncio.to_thread(add_decoders, state, list(settings.decoders))
    except Exception as exc:  # keep serving /healthz and say why /readyz is not ready
        state.load_error = f"{type(exc).__name__}: {exc}"
        log.error("model loading failed: %s", state.load_error)
        return
    state.ready = True


def add_decoders(state: ServiceState, folders: list[Path]) -> None:
    """Register each decoder folder with the codec it names (``SpicCodec.add_decoder``): the
    codec's frames at the decoder's QFs are rendered by it. Raises for one that cannot serve."""
    for folder in folders:
        decoder = Decoder.open(folder, state.settings.inference_threads, arena=False)
        runtime = state.runtime_for(decoder.codec_id)
        if runtime is None:
            raise LookupError(
                f"decoder {decoder.name} reads codec {decoder.codec_id}, which is not served "
                f"(served: {', '.join(sorted(state.runtimes))})"
            )
        runtime.add_decoder(decoder)
        state.reconstructions.clear()  # pictures rendered before were the bundle decoder's
        log.info("decoder %s (%s) renders codec %s", decoder.name, folder, runtime.model_id)


def new_bundles(state: ServiceState) -> list[Path]:
    """Bundles configured or in the model folder that no served codec was opened from."""
    settings = state.settings
    paths = list(settings.bundles)
    if settings.model_dir is not None and settings.model_dir.is_dir():
        paths += bundles_in(settings.model_dir)
    served = {r.path.resolve() for r in state.runtimes.values()}
    fresh: dict[Path, Path] = {}
    for path in paths:
        if path.resolve() not in served:
            fresh.setdefault(path.resolve(), path)
    return list(fresh.values())


async def reload(state: ServiceState) -> None:
    """SIGHUP: serve new bundles, add and replace heads; one reload at a time, never fatal."""
    async with state.reload_lock:
        log.info("SIGHUP: rescanning bundles and heads")
        for path in new_bundles(state):
            try:
                serve_codec(state, await asyncio.to_thread(open_codec, path, state.settings))
            except Exception as exc:
                log.error("bundle %s not served: %s: %s", path, type(exc).__name__, exc)
        folders = [*state.settings.heads, *found_heads(state.settings)]
        changed = await asyncio.to_thread(add_heads, state, folders, False)
        log.info("SIGHUP: done; heads added or replaced: %s", ", ".join(changed) or "none")
