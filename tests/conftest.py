"""Shared fixtures. Tests never need ../shared/data: images are generated or come from scikit-image."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

TINY_CLASSES = ("n01440764", "n02102040")


def make_image_folder(
    root: Path, per_class: int = 8, size: tuple[int, int] = (96, 80), seed: int = 0
) -> Path:
    """A labelled ImageFolder of generated images: class 0 reddish stripes, class 1 bluish blobs."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c, wnid in enumerate(TINY_CLASSES):
            d = root / split / wnid
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                w, h = size
                base = rng.integers(0, 80, (h, w, 3))
                if c == 0:
                    base[:, :, 0] += 150
                    base[:: 8 + i % 4] = 255
                else:
                    base[:, :, 2] += 150
                    yy, xx = np.ogrid[:h, :w]
                    base[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (10 + i) ** 2] = 20
                Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(
                    d / f"{split}_{i}.JPEG", quality=90
                )
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("tinydata"))


def set_args(**values: object) -> list[str]:
    """``--set KEY=VALUE`` arguments (values as JSON) for spic-train and spic-train-reference."""
    import json

    return [a for k, v in values.items() for a in ("--set", f"{k}={json.dumps(v)}")]


# Tiny runs at 64² crops: a few seconds on CPU.
_TINY = dict(epochs=2, batch_size=4, crop=64, final_crop=64, final_crop_epochs=1, eval_size=64)
TINY_TRAIN_ARGS = set_args(model="spic-tiny", **_TINY, eval_every=1)


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    """A spic-tiny model trained for 2 epochs on generated images (a few seconds on CPU)."""
    from models.train import main

    out = tmp_path_factory.mktemp("tinyrun")
    assert main(["--data", str(tiny_data), "--out", str(out), *TINY_TRAIN_ARGS]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run, tiny_data, tmp_path_factory) -> Path:
    """A complete model bundle exported from ``tiny_run``: what edge and cloud tests serve."""
    from models.export import main

    out = tmp_path_factory.mktemp("bundles") / "spic-tiny-test"
    assert (
        main(
            [
                str(tiny_run / "checkpoint.pt"),
                "--out",
                str(out),
                "--data",
                str(tiny_data / "train"),
                "--size",
                "64",
            ]
        )
        == 0
    )
    return out


TINY_REFERENCE_ARGS = set_args(
    model="resnet-tiny", **_TINY, finetune_epochs=1, calibration_images=4
)


@pytest.fixture(scope="session")
def tiny_reference(tiny_data, tmp_path_factory) -> Path:
    """The run directory of a resnet-tiny reference trained for 2 epochs (its bundle in bundle/)."""
    from models.train_reference import main

    out = tmp_path_factory.mktemp("reference")
    assert main(["--data", str(tiny_data), "--out", str(out), *TINY_REFERENCE_ARGS]) == 0
    return out


def find_retired(name: str) -> Path | None:
    """A bundle that left the tree (models/bundles/retired.json), where one was written back:
    models/bundles (``make old-codecs``), SPIC_RETIRED_CODECS or SPIC_CLOUD_MODEL_DIR."""
    dirs = [ROOT / "models" / "bundles"]
    dirs += [
        Path(os.environ[v])
        for v in ("SPIC_RETIRED_CODECS", "SPIC_CLOUD_MODEL_DIR")
        if v in os.environ
    ]
    return next((d / name for d in dirs if (d / name / "manifest.json").is_file()), None)


@pytest.fixture(scope="session")
def retired_bundle(tmp_path_factory):
    """name -> a retired bundle's folder: one written back, else one read out of git history (as
    ``make old-codecs`` does); skipped in a clone without that commit."""
    from scripts.old_codecs import in_history, write_bundles

    def get(name: str) -> Path:
        found = find_retired(name)
        if found is not None:
            return found
        if not in_history():
            pytest.skip(f"{name} is not in this clone's history: make old-codecs needs it")
        return write_bundles(tmp_path_factory.getbasetemp() / "retired", [name])[0]

    return get


@pytest.fixture(scope="session")
def tiny_reference_ft(tiny_reference, tiny_bundle, tiny_data, tmp_path_factory) -> Path:
    """``tiny_reference`` fine-tuned on codec-decoded images matched to ``tiny_bundle``'s rate."""
    from models.train_reference import main

    out = tmp_path_factory.mktemp("reference-ft")
    args = ["--finetune-from", str(tiny_reference / "checkpoint.pt")]
    args += ["--spic-bundle", str(tiny_bundle)]
    assert main(["--data", str(tiny_data), "--out", str(out), *args]) == 0
    return out


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on 127.0.0.1 for this test session, in a temporary folder. One
    for all: each server costs an initdb and a removal of its folder (6 s on the CI machine).
    A test that stops or restarts it starts it again before it ends (``postgres_running``)."""
    from cloud_service.cluster import PostgresServer

    server = PostgresServer()
    yield server
    server.close()


@pytest.fixture()
def postgres_running(postgres):
    """``postgres`` for a test that stops it: running again afterwards, whatever happened."""
    yield postgres
    if postgres.proc is None or postgres.proc.poll() is not None:
        postgres.start()


@pytest.fixture(scope="session")
def postgres_server(postgres):
    """A function that makes a fresh, empty database on the session's PostgreSQL server and
    returns its URL."""
    return postgres.new_database


def on_engine(request: pytest.FixtureRequest, settings: dict[str, object]) -> dict[str, object]:
    """``settings`` for the results store ``request.param`` names: "sqlite" (the default file) or
    "postgresql" (a fresh database on the session's server)."""
    if request.param == "postgresql":
        settings["database_url"] = request.getfixturevalue("postgres_server")()
    return settings


@pytest.fixture(scope="session")
def noise_frames(tiny_bundle):
    """A function: ``count`` frames of random 96x80 images, encoded by the tiny bundle's edge
    encoder from the generator of ``seed``."""
    from edge_client.encoder import EdgeEncoder

    def make(count: int, seed: int) -> list[bytes]:
        rng = np.random.default_rng(seed)
        encoder = EdgeEncoder(tiny_bundle, cache_dir=False)
        return [
            encoder.encode(Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)))
            for _ in range(count)
        ]

    return make
