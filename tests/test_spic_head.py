"""spic-head: a head trained on a codec's latents is a head the cloud can serve.

The shipped codec encodes generated images (``tiny_data``); each kind trains for one epoch, so the
test checks the artifact, not accuracy (docs/research/heads.md measures that).
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
import torch

from models.head_cli import main
from models.head_cloud import is_val
from shared.heads import Head, load_head_manifest
from shared.preprocess import load_rgb, prepare
from shared.runtime import SpicCodec
from tests.local_http import LocalServer

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "models" / "bundles" / "spic-imagenette"


@pytest.fixture(scope="module")
def codec() -> SpicCodec:
    return SpicCodec(BUNDLE)


def latents_of(codec: SpicCodec, folder: Path, qf: int) -> np.ndarray:
    """What the cloud would classify for the images of ``folder``: encode, compress, decode."""
    spec, stride = codec.manifest.preprocessing.model_dump(), codec.manifest.latent.stride
    out = []
    for path in sorted(folder.rglob("*.JPEG")):
        im = load_rgb(path)
        _, data = codec.compress(codec.analyse(prepare(im, spec, stride)), qf, "rans", im.size)
        out.append(codec.decompress(codec.parse(data)))
    return np.stack(out)


@pytest.mark.parametrize("kind", ["linear", "conv", "finetune"])
def test_spic_head_trains_a_head_the_cloud_serves(kind, codec, tiny_data, tmp_path, capsys):
    torch.manual_seed(0)
    out = tmp_path / "My_Head"
    args = ["train", "--codec", str(BUNDLE), "--data", str(tiny_data), "--out", str(out)]
    mix = ["--mix-qfs", "2", "8"] if kind == "conv" else []  # each frame at one of these QFs
    assert main([*args, "--kind", kind, "--epochs", "1", "--no-progress", *mix]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    m = load_head_manifest(out)  # verifies every file's hash and the head id
    assert m.name == "my_head"  # the folder's name, made a head name
    assert m.codec_id == codec.model_id == summary["codec_id"]
    assert [c.id for c in m.classes] == sorted(p.name for p in (tiny_data / "train").iterdir())
    assert m.architecture == f"spic-head-{kind}"
    assert m.measured is not None and m.measured.n_val == 16
    # Without --qf a head trains on every QF of the base latent (1-16 here) and is measured at
    # each; --mix-qfs 2 8 on the card's QFs.
    default_mix = {"1"} if kind == "finetune" else set()
    assert set(m.measured.top1) == {"2", "4", "8", "16"} | default_mix
    assert all(0 <= t <= 1 for t in m.measured.top1.values())
    assert m.measured.command.startswith("spic-head train --codec")
    assert m.reject is not None and m.reject.score == "knn" and m.reject.bank == "bank"
    assert (out / "bank.npy").is_file() and "bank" in m.files

    # The ONNX head runs on the latents a cloud decodes, with both outputs.
    y_hat = latents_of(codec, tiny_data / "val", 4)[:, : codec.manifest.latent.channels]
    head = Head.open(out)
    assert head.outputs == ["logits", "features"]
    logits, feats = head.session.run(None, {"latent": y_hat})
    assert logits.shape == (len(y_hat), 2) and feats.ndim == 2 and len(feats) == len(y_hat)
    # ... registered on the codec it reads, beside the bundle's own head
    codec.load_heads()
    codec.add_head(head)
    answers = codec.classify(y_hat)
    assert set(answers) == {codec.default_head, "my_head"}
    assert answers["my_head"].probs.shape == (len(y_hat), 2)
    assert answers["my_head"].score is not None
    # the threshold accepts 95% of the val split, which these are
    assert answers["my_head"].unknown.mean() <= 0.2

    card = (out / "HEAD_CARD.md").read_text()
    assert m.measured.command in card and "| 4 |" in card and "s**" in card
    assert ("each frame at one of QFs [2, 8]" in card) == (kind == "conv")


def test_a_head_of_another_codec_is_refused(codec, tiny_data, tmp_path):
    out = tmp_path / "h"
    args = ["train", "--codec", str(BUNDLE), "--data", str(tiny_data), "--out", str(out)]
    assert main([*args, "--kind", "linear", "--epochs", "1", "--no-progress"]) == 0
    other = SpicCodec(ROOT / "models" / "bundles" / "spic-imagenette-v4")
    with pytest.raises(ValueError, match="reads codec"):
        other.add_head(Head.open(out))


class LabelCloud:
    """The cloud's label export for spic-head: paged /v1/labels and the frames' bitstreams,
    behind a read key."""

    def __init__(self, labelled: list[tuple[str, str, str, bytes]], key: str, page: int = 3):
        self.frames = {fid: data for fid, _, _, data in labelled}
        self.labels = [
            {
                "frame_id": fid,
                "label": label,
                "model_id": model_id,
                "bitstream": f"/v1/frames/{fid}/bitstream",
            }
            for fid, label, model_id, _ in labelled
        ]
        self.limits: list[int] = []
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.headers.get("Authorization") != f"Bearer {key}":
                    return self.reply(401, b"{}", "application/json")
                url = urlparse(self.path)
                if url.path == "/v1/labels":
                    q = parse_qs(url.query)
                    start = int(q.get("cursor", ["0"])[0] or 0)
                    limit = min(int(q["limit"][0]), page)
                    cloud.limits.append(limit)
                    items = cloud.labels[start : start + limit]
                    nxt = start + limit if start + limit < len(cloud.labels) else None
                    body = {"labels": items, "next_cursor": None if nxt is None else str(nxt)}
                    return self.reply(200, json.dumps(body).encode(), "application/json")
                fid = url.path.split("/")[3]
                return self.reply(200, cloud.frames[fid], "application/octet-stream")

        self.server = LocalServer(Handler)
        self.url = self.server.url


def test_spic_head_trains_on_the_clouds_labelled_frames(codec, tiny_data, tmp_path, capsys):
    from edge_client.encoder import EdgeEncoder

    labelled = []
    for qf in (4, 8):
        encoder = EdgeEncoder(BUNDLE, qf=qf, cache_dir=False)
        for path in sorted(tiny_data.rglob("*.JPEG")):
            label = "stripes" if path.parent.name.endswith("764") else "blobs"
            fid = f"f{qf}-{path.parent.name}-{path.parent.parent.name}-{path.stem}"
            labelled.append((fid, label, codec.model_id, encoder.encode(path)))
    labelled.append(("other", "blobs", "0123456789abcdef", b"not read"))
    cloud = LabelCloud(labelled, key="read-key-1")
    out = tmp_path / "from-cloud"
    args = ["train", "--codec", str(BUNDLE), "--from-cloud", cloud.url]
    args += ["--read-key", "read-key-1", "--out", str(out), "--kind", "conv", "--epochs", "1"]
    try:
        assert main([*args, "--no-progress"]) == 0
    finally:
        cloud.server.close()
    captured = capsys.readouterr()
    assert "left out 1 frames (another codec)" in captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    n_val = sum(is_val(fid) for fid, _, model_id, _ in labelled if model_id == codec.model_id)
    assert summary["n_val"] == n_val and summary["n_train"] == 64 - n_val
    assert len(cloud.limits) > 1  # it paged

    m = load_head_manifest(out)
    assert [c.name for c in m.classes] == ["blobs", "stripes"]
    assert m.codec_id == codec.model_id
    assert m.measured is not None and set(m.measured.top1) == {"4", "8"}  # the QFs sent
    # the read key is a secret: the card and head.json name a variable instead
    assert "read-key-1" not in (out / "head.json").read_text()
    assert "read-key-1" not in (out / "HEAD_CARD.md").read_text()
    assert "$SPIC_READ_KEY" in m.measured.command


def test_from_cloud_needs_a_read_key(tmp_path):
    with pytest.raises(SystemExit):
        main(["train", "--codec", str(BUNDLE), "--from-cloud", "http://x", "--out", str(tmp_path)])
