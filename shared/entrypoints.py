"""The console scripts, each behind a guard that names the extra to install.

``pip install ".[edge]"`` installs all ten scripts (a wheel cannot install scripts per extra),
but only the edge's dependencies. Each script imports its module by name only when run, so a
script whose extra is missing says so in one line instead of a ``ModuleNotFoundError``
traceback. This module imports nothing of the project's other packages itself.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Callable

OWN_PACKAGES = {"shared", "edge_client", "cloud_service", "models", "evaluation", "bench"}


def package_version() -> str:
    """The installed spic version, what every script's ``--version`` prints."""
    try:
        return importlib.metadata.version("spic")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown (not installed)"


def _missing_extra(prog: str, extras: str, exc: ModuleNotFoundError) -> int:
    print(
        f"{prog}: this command needs the '{extras}' extra ({exc.name} is not installed): "
        f"pip install 'spic[{extras}]'",
        file=sys.stderr,
    )
    return 1


def _launch(prog: str, module: str, extras: str) -> int:
    try:
        main: Callable[[], int] = importlib.import_module(module).main
        return main()
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in OWN_PACKAGES:
            raise  # a broken install, not a missing extra: keep the traceback
        return _missing_extra(prog, extras, exc)


def _script(prog: str, module: str, extras: str) -> Callable[[], int]:
    def run() -> int:
        return _launch(prog, module, extras)

    run.__name__ = prog.replace("-", "_")
    return run


# name = (module whose main() runs, the extras it needs)
spic_inspect = _script("spic-inspect", "shared.inspect_cli", "edge")
spic_edge = _script("spic-edge", "edge_client.cli", "edge")
spic_cloud = _script("spic-cloud", "cloud_service.cli", "cloud")
spic_train = _script("spic-train", "models.train", "train")
spic_export = _script("spic-export", "models.export", "train")
spic_int8 = _script("spic-int8", "models.int8", "train")
spic_train_reference = _script("spic-train-reference", "models.train_reference", "train,eval,edge")
spic_decoder = _script("spic-decoder", "models.decoder_train", "train,eval")
spic_card = _script("spic-card", "evaluation.card", "eval,edge,cloud")
spic_eval = _script("spic-eval", "evaluation.cli", "eval,edge,cloud")
spic_head = _script("spic-head", "models.head_cli", "train")
