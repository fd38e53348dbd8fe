"""``spic-head train --from-cloud URL --read-key K``: train on frames the cloud already stores.

Frames are labelled through ``PUT /v1/frames/{id}/label`` by a labeller key; this client reads
them back with a read key:

    GET {URL}/v1/labels?cursor=C&limit=N   {"labels": [{"frame_id", "label", "model_id",
                                             "bitstream": "/v1/frames/{id}/bitstream"}],
                                            "next_cursor": C' or null}
    GET {URL}{bitstream}                   the frame's bytes, as the camera sent them

Each frame is parsed and decoded by the codec (``SpicCodec.parse`` / ``decompress``) into the ŷ
the cloud classifies; nothing is re-encoded, so the head learns on exactly what cameras sent, at
the QFs they sent. A frame of another codec, or of another latent size than most (a whole-image
frame among center crops), is left out and counted. The split is fixed by the frame id: SHA-256
of it, 20 in 100 to validation, so a rerun on a grown label set keeps every old frame's side.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from models.head_data import LatentSet
from shared.runtime import SpicCodec

PAGE = 500
VAL_PERCENT = 20


@dataclass
class CloudLabels:
    """What the cloud's label export held, and what of it was left out (by reason)."""

    frames: list[tuple[str, str, np.ndarray, int]]  # frame id, label, base ŷ, QF
    skipped: Counter[str] = field(default_factory=Counter)


def is_val(frame_id: str) -> bool:
    """The frame's side of the split: by its id alone, so it never changes between runs."""
    return int(hashlib.sha256(frame_id.encode()).hexdigest()[:8], 16) % 100 < VAL_PERCENT


class CloudReader:
    def __init__(self, url: str, read_key: str, timeout: float = 30.0):
        self.url, self.timeout = url.rstrip("/"), timeout
        self.headers = {"Authorization": f"Bearer {read_key}"}

    def get(self, path: str) -> bytes:
        request = urllib.request.Request(self.url + path, headers=self.headers)
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            body: bytes = response.read()
            return body

    def labels(self, limit: int = PAGE) -> list[dict]:
        """Every label the export lists, page after page."""
        out: list[dict] = []
        cursor: str | None = ""
        while cursor is not None:
            query = urllib.parse.urlencode({"cursor": cursor, "limit": limit})
            page = json.loads(self.get(f"/v1/labels?{query}"))
            out += page["labels"]
            cursor = page.get("next_cursor") or None
        return out


def fetch_labelled(codec: SpicCodec, url: str, read_key: str, progress: bool = True) -> CloudLabels:
    """Every labelled frame of ``codec`` in the cloud at ``url``, decoded to its base ŷ."""
    from tqdm import tqdm

    reader = CloudReader(url, read_key)
    listed = reader.labels()
    got = CloudLabels([])
    c = codec.manifest.latent.channels
    for item in tqdm(listed, desc="frames", unit="frame", disable=not progress):
        if item["model_id"] not in codec.ids:
            got.skipped["another codec"] += 1
            continue
        frame = codec.parse(reader.get(item["bitstream"]))
        y_hat = codec.decompress(frame)[:c]
        got.frames.append((item["frame_id"], str(item["label"]), y_hat, frame.qf))
    return got


def cloud_sets(got: CloudLabels) -> tuple[LatentSet, LatentSet]:
    """(train, val) of the fetched frames, classes sorted by name, split by frame id."""
    if not got.frames:
        raise ValueError("the cloud lists no labelled frames of this codec")
    shapes = Counter(f[2].shape for f in got.frames)
    shape = shapes.most_common(1)[0][0]
    frames = [f for f in got.frames if f[2].shape == shape]
    got.skipped["another latent size"] += len(got.frames) - len(frames)
    classes = sorted({f[1] for f in frames})
    index = {name: i for i, name in enumerate(classes)}

    def build(part: list[tuple[str, str, np.ndarray, int]]) -> LatentSet:
        latent = np.stack([f[2] for f in part])[:, None] if part else np.zeros((0, 1, *shape))
        return LatentSet(
            latent.astype(np.float32),
            np.asarray([index[f[1]] for f in part], dtype=np.int64),
            classes,
            np.asarray([f[3] for f in part], dtype=np.int64),
            [f[0] for f in part],
        )

    train = build([f for f in frames if not is_val(f[0])])
    val = build([f for f in frames if is_val(f[0])])
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"{len(frames)} labelled frames: too few for a train and a val split")
    return train, val
