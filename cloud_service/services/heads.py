"""A head uploaded at run time (``PUT /v1/heads/{name}``): checked, kept, served.

The upload is a zip of the head folder's files: ``head.json`` and the files it lists (the graph,
a reject rule's bank), nothing else, no folders. Every bound holds before what it bounds is
read: the body's size (the route), the sum of the members' sizes before any is extracted, each
member's name. The files are written to a temporary folder beside their final place and checked
there (``load_head_manifest``: hashes and id; the graph opened and run once on the codec's
latent), so a bad upload leaves nothing behind; only then does the folder replace
``{data_dir}/heads/<codec id>/<name>/`` and the head the one of its name. A restart serves it
again (``serving.found_heads``). Frames of the codec's cameras get the head's answer from the
next batch on; the codec id, and so the cameras, do not change.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError

from cloud_service.problems import Problem
from cloud_service.services.serving import check_head, heads_root
from cloud_service.state import ServiceState
from shared.heads import HEAD_MANIFEST, Head, HeadManifest, load_head_manifest
from shared.heads import HEAD_NAME as HEAD_NAME  # the pattern of a name in the URL
from shared.runtime import MAX_HEADS, SpicCodec

MAX_UPLOAD = 64 << 20  # the zip as sent
MAX_UNPACKED = 128 << 20  # its members, uncompressed, in all
MAX_MANIFEST = 1 << 20  # head.json alone


def _bad(detail: str) -> Problem:
    return Problem(422, "bad-head", "head not accepted", detail)


@contextmanager
def unreadable_zip() -> Iterator[None]:
    """What zipfile raises for a damaged, encrypted or exotic archive, as a 422."""
    try:
        yield
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
        raise _bad(f"unreadable zip: {type(exc).__name__}: {str(exc)[:200]}") from None
    except (RuntimeError, ValueError) as exc:  # an encrypted member, a bad header field
        raise _bad(f"unreadable zip: {type(exc).__name__}: {str(exc)[:200]}") from None


def _members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    infos = archive.infolist()
    total = sum(i.file_size for i in infos)
    if total > MAX_UNPACKED:
        raise Problem(
            413,
            "head-too-large",
            "head too large",
            f"{total} bytes unpacked, at most {MAX_UNPACKED}",
        )
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        if "/" in name or "\\" in name or ".." in name or not name or info.is_dir():
            raise _bad(f"member {name[:80]!r}: a head zip holds files, no folders or paths")
        if name in members:
            raise _bad(f"member {name[:80]!r} twice")
        members[name] = info
    return members


def read_manifest(archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo]) -> HeadManifest:
    info = members.get(HEAD_MANIFEST)
    if info is None:
        raise _bad(f"no {HEAD_MANIFEST} in the zip")
    if info.file_size > MAX_MANIFEST:
        raise _bad(f"{HEAD_MANIFEST} of {info.file_size} bytes, at most {MAX_MANIFEST}")
    try:
        manifest = HeadManifest.model_validate_json(archive.read(info))
    except ValidationError as exc:
        raise _bad(
            f"{HEAD_MANIFEST}: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}"
        ) from None
    listed = {f.path for f in manifest.files.values()}
    if "graph" not in manifest.files:
        raise _bad(f"{HEAD_MANIFEST} lists no graph")
    bad = [p for p in listed if "/" in p or "\\" in p or ".." in p or p == HEAD_MANIFEST]
    missing = sorted(listed - set(members))
    extra = sorted(set(members) - listed - {HEAD_MANIFEST})
    if bad or missing or extra:
        raise _bad(
            f"the zip holds {HEAD_MANIFEST} and exactly the files it lists, by plain name: "
            f"bad names {bad[:5]}, missing {missing[:5]}, not listed {[e[:80] for e in extra[:5]]}"
        )
    return manifest


def install(state: ServiceState, name: str, body: bytes) -> tuple[Head, bool]:
    """Check, keep and serve an uploaded head (in a thread, under the reload lock); the head and
    whether it is new (False: it replaced one of its name)."""
    with unreadable_zip():
        archive = zipfile.ZipFile(io.BytesIO(body))
    with archive:
        with unreadable_zip():
            members = _members(archive)
            manifest = read_manifest(archive, members)
        if manifest.name != name:
            raise _bad(f"the URL names head {name!r}, its {HEAD_MANIFEST} {manifest.name!r}")
        runtime = state.runtime_for(manifest.codec_id)
        if runtime is None:
            served = sorted(state.runtimes)
            raise Problem(
                409,
                "unknown-model",
                "head of a codec this service does not serve",
                f"head codec id {manifest.codec_id}; served: {', '.join(served)}",
                head_codec_id=manifest.codec_id,
                served_model_ids=served,
            )
        if name not in runtime.heads and len(runtime.heads) >= MAX_HEADS:
            raise Problem(
                409,
                "too-many-heads",
                "the codec has as many heads as it may",
                f"codec {runtime.model_id} serves {MAX_HEADS} heads: replace one (same name)",
            )
        parent = heads_root(state.settings) / runtime.model_id
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".upload-", dir=parent))
        try:
            for member, info in members.items():
                with unreadable_zip(), archive.open(info) as src:
                    # at most what the header declared: a lying header cannot write more
                    data = src.read(info.file_size + 1)[: info.file_size]
                (staging / member).write_bytes(data)
            head = _open_checked(state, runtime, staging)
            target = parent / name
            _swap_in(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    head.source = target
    old = runtime.add_head(head)
    return head, old is None


def _open_checked(state: ServiceState, runtime: SpicCodec, folder: Path) -> Head:
    try:
        load_head_manifest(folder)
        head = Head.open(folder, state.settings.inference_threads, arena=False)
        check_head(runtime, head)
    except (ValueError, OSError) as exc:
        raise _bad(str(exc)[:500]) from None
    except Exception as exc:  # onnxruntime's own errors for a graph it cannot load
        raise _bad(f"{type(exc).__name__}: {str(exc)[:400]}") from None
    return head


def _swap_in(staging: Path, target: Path) -> None:
    """Put the checked folder in place of ``target`` (the old one, if any, is removed after)."""
    old = None
    if target.exists():
        old = target.with_name(f".old-{target.name}-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


async def put_head(state: ServiceState, name: str, body: bytes) -> tuple[Head, bool]:
    async with state.reload_lock:
        return await asyncio.to_thread(install, state, name, body)
