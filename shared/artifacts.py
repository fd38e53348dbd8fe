"""Artifacts that read a codec (heads, decoders): a folder with a JSON manifest that lists its
files, sealed the same way. The artifact's id is the first 8 bytes of SHA-256 over the manifest's
canonical JSON without the id and what was measured after sealing, every listed file's SHA-256
in it; loading checks every file against its hash and the id against the content."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from shared.manifest import BundleFile, seal_files, sha256_file

A = TypeVar("A", bound=BaseModel)
UNSEALED = {"measured"}  # besides the id itself


def artifact_id(manifest: BaseModel, id_field: str) -> str:
    body = manifest.model_dump(mode="json", exclude=UNSEALED | {id_field})
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]


def write_artifact(folder: Path, manifest: A, id_field: str, filename: str) -> A:
    """Hash the artifact's files, set its id and write its manifest."""
    files: dict[str, BundleFile] = dict(manifest)["files"]
    sealed = manifest.model_copy(update={"files": seal_files(folder, files)})
    sealed = sealed.model_copy(update={id_field: artifact_id(sealed, id_field)})
    (folder / filename).write_text(sealed.model_dump_json(indent=1) + "\n")
    return sealed


def load_artifact(folder: Path, cls: type[A], id_field: str, filename: str, kind: str) -> A:
    """Read and verify an artifact folder: every file against its hash, the id its content's."""
    path = folder / filename
    if not path.is_file():
        raise FileNotFoundError(f"no {filename} in {folder}: not a SPIC {kind}")
    manifest = cls.model_validate_json(path.read_text())
    for role, f in dict(manifest)["files"].items():
        if sha256_file(folder / f.path) != f.sha256:
            raise ValueError(f"{kind} file {f.path} ({role}) does not match its hash")
    if artifact_id(manifest, id_field) != getattr(manifest, id_field):
        raise ValueError(f"{kind} id {getattr(manifest, id_field)} does not match its content")
    return manifest
