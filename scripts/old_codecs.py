"""Write the bundles that left the tree back out of git history: ``make old-codecs DEST=dir``.

The tree keeps the last three SPIC codecs (the support window: v5, the default, v4 and v3); older
codecs and the reference classifiers (``spic-eval --reference`` inputs and training teachers) are
listed in ``models/bundles/retired.json`` with the commit that still holds them, so nothing is
downloaded: ``git archive`` reads them from this clone's history. ``DEST=models/bundles`` (the
default) puts them back where the training configs and old commands name them (git ignores them
there); any other folder is a model folder for the cloud (``SPIC_CLOUD_MODEL_DIR=dir``).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RETIRED = ROOT / "models" / "bundles" / "retired.json"


def retired() -> tuple[str, dict[str, str]]:
    """(the commit that holds them, {bundle folder name: model id})."""
    listed = json.loads(RETIRED.read_text())
    return listed["commit"], listed["bundles"]


def in_history(root: Path = ROOT) -> bool:
    """Whether this clone has the commit (a shallow clone may not)."""
    commit, _ = retired()
    found = subprocess.run(
        ["git", "-C", str(root), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True
    )
    return found.returncode == 0


def write_bundles(dest: Path, names: list[str] | None = None, root: Path = ROOT) -> list[Path]:
    """Write the named retired bundles (all by default) as ``dest/<name>/``; a folder already
    there is left as it is. Returns the bundle folders."""
    commit, listed = retired()
    unknown = sorted(set(names or []) - set(listed))
    if unknown:
        raise SystemExit(f"not a retired bundle: {', '.join(unknown)} (see {RETIRED})")
    out = []
    for name in names or list(listed):
        target = dest / name
        out.append(target)
        if (target / "manifest.json").exists():
            continue
        archive = subprocess.run(
            ["git", "-C", str(root), "archive", "--format=tar", commit, f"models/bundles/{name}"],
            capture_output=True,
            check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            for member in tar.getmembers():
                source = tar.extractfile(member) if member.isfile() else None
                if source is not None:  # regular files only, named below dest by construction
                    path = dest / Path(member.name).relative_to("models/bundles")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(source.read())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dest", type=Path, default=ROOT / "models" / "bundles")
    p.add_argument("names", nargs="*", help="bundle folder names (default: every retired one)")
    args = p.parse_args(argv)
    if not in_history():
        raise SystemExit(
            f"this clone lacks commit {retired()[0]}: fetch it (git fetch --unshallow)"
        )
    for path in write_bundles(args.dest, args.names or None):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
