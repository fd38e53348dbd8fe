"""spic-cloud: run the service (``serve``) and manage its per-device API keys (``keys``).

Flags are exported as SPIC_CLOUD_* variables before the settings are read, so every worker
process builds the same settings; anything not given as a flag comes from the environment (see
``settings``). Bad settings stop it at once with one line naming each variable (exit 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import uvicorn  # at the top: without the cloud extra, spic-cloud says which to install
from pydantic import ValidationError

from cloud_service.database import StoreUnavailable
from cloud_service.keys import SCOPES, ApiKey, open_keys
from cloud_service.settings import Settings
from cloud_service.timeutil import format_rfc3339
from shared.bundles import shipped_bundles

EXAMPLES = """examples:
  spic-cloud serve --port 8000
  SPIC_CLOUD_DATABASE_URL=postgresql://spic@db/spic spic-cloud serve --workers 2
  spic-cloud keys add --device cam-1          # prints the camera's new key, once
  spic-cloud keys add --scope read            # a key for the query API and dashboard
  spic-cloud keys list
  spic-cloud keys rotate 3                    # a new key for key 3's device; key 3 revoked
  spic-cloud keys revoke --device cam-1

Every other setting is an environment variable SPIC_CLOUD_<NAME> (README: "Cloud settings")."""

SERVE_EXAMPLES = """examples:
  spic-cloud serve                              # 127.0.0.1:8000, every shipped bundle
  spic-cloud serve --host 0.0.0.0 --port 8000 --workers 2
  spic-cloud serve --bundle /models/custom       # the shipped bundles and /models/custom
  spic-cloud serve --only --bundle /models/custom   # /models/custom alone
  spic-cloud serve --head /models/heads/birds    # one more head for the codec it names
  spic-cloud serve --decoder /models/decoders/qf4 # a better picture from the same frames
  kill -HUP <pid>                               # rescan SPIC_CLOUD_MODEL_DIR, DATA_DIR/heads, --head
  SPIC_CLOUD_API_KEYS=k1,k2 SPIC_CLOUD_READ_KEYS=r1 spic-cloud serve   # keys for any device"""

KEYS_EXAMPLES = """The keys live in the service's database: SQLite in SPIC_CLOUD_DATA_DIR/keys.sqlite, or the
PostgreSQL of SPIC_CLOUD_DATABASE_URL; run these with the service's values. Only a key's SHA-256
is kept: a key is shown once, when it is made. A revocation reaches running replicas within
SPIC_CLOUD_KEY_CACHE_S seconds (2), without a restart.

examples:
  spic-cloud keys add --device cam-1                 # an upload key that may send only as cam-1
  spic-cloud keys add --scope admin                  # may delete frames
  spic-cloud keys list --all --json                  # revoked keys too
  spic-cloud keys rotate 3                           # new key, same device and scope; 3 revoked
  spic-cloud keys revoke 3
  spic-cloud keys revoke --device cam-1              # every key of cam-1"""


def version() -> str:
    try:
        return metadata.version("spic")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _command(summary: str, examples: str, description: str | None = None) -> dict[str, Any]:
    """A subcommand's help: ``summary`` in the list, and atop its own --help ``description``
    (by default the summary as a sentence)."""
    return {
        "help": summary,
        "description": description or summary[0].upper() + summary[1:] + ".",
        "epilog": examples,
        "formatter_class": _formatter,
    }


def _store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the service's data folder, holding keys.sqlite (env SPIC_CLOUD_DATA_DIR; "
        "default spic-data); unused when a PostgreSQL URL is given",
    )
    p.add_argument(
        "--database-url",
        metavar="URL",
        help="postgresql://... shared by the replicas (env SPIC_CLOUD_DATABASE_URL; "
        "default: none, SQLite in --data-dir)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spic-cloud",
        description="SPIC cloud service: classifies SPIC frames from their latents.",
        epilog=EXAMPLES,
        formatter_class=_formatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="{serve,keys}")
    s = sub.add_parser("serve", **_command("run the HTTP service with uvicorn", SERVE_EXAMPLES))
    s.add_argument("--host", help="address to listen on (env SPIC_CLOUD_HOST; default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (env SPIC_CLOUD_PORT; default 8000)")
    s.add_argument(
        "--workers", type=int, help="worker processes (env SPIC_CLOUD_WORKERS; default 1)"
    )
    s.add_argument(
        "--bundle",
        action="append",
        metavar="DIR",
        help="a model bundle folder to serve beside the shipped ones (or beside "
        "SPIC_CLOUD_BUNDLES, comma-separated, when set); repeat for several",
    )
    s.add_argument(
        "--only",
        action="store_true",
        help="serve only the --bundle bundles, not the shipped ones",
    )
    s.add_argument(
        "--head",
        action="append",
        metavar="DIR",
        help="a head folder (head.json + head.onnx) to serve for the codec it names, beside the "
        "codec's own classifier; repeat for several (env SPIC_CLOUD_HEADS, comma-separated)",
    )
    s.add_argument(
        "--decoder",
        action="append",
        metavar="DIR",
        help="a decoder folder (spic-decoder: decoder.json + decoder.onnx) that renders the "
        "frames of the codec it names at its QFs; repeat for several (env SPIC_CLOUD_DECODERS)",
    )
    s.add_argument(
        "--log-level",
        default=os.environ.get("SPIC_CLOUD_LOG_LEVEL", "info"),
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="(env SPIC_CLOUD_LOG_LEVEL; default info)",
    )

    k = sub.add_parser(
        "keys",
        **_command(
            "add, list, rotate and revoke API keys",
            KEYS_EXAMPLES,
            "Per-device API keys, hashed at rest.",
        ),
    )
    ks = k.add_subparsers(dest="keys_command", required=True, metavar="{add,list,rotate,revoke}")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return ks.add_parser(name, help=summary, epilog=KEYS_EXAMPLES, formatter_class=_formatter)

    add = command("add", "make a key and print it once")
    add.add_argument(
        "--device",
        metavar="ID",
        help="the camera the key belongs to: an upload key may send only as it (its "
        "X-Device-Id); needed for upload keys, a label on read and admin keys",
    )
    add.add_argument(
        "--scope",
        choices=SCOPES,
        default="upload",
        help="upload: send frames; read: query frames and the dashboard; admin: delete frames "
        "and add heads; labeller: label stored frames; operator: ask cameras for better "
        "pictures of stored frames (default upload)",
    )
    _store_flags(add)
    ls = command("list", "list keys (never the keys themselves)")
    ls.add_argument("--all", action="store_true", help="revoked keys too")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    _store_flags(ls)
    rot = command("rotate", "a new key for a key's device and scope; the old one revoked")
    rot.add_argument("id", type=int, help="the key's id (spic-cloud keys list)")
    _store_flags(rot)
    rev = command("revoke", "revoke a key, or every key of a device")
    which = rev.add_mutually_exclusive_group(required=True)
    which.add_argument("id", type=int, nargs="?", help="the key's id (spic-cloud keys list)")
    which.add_argument("--device", metavar="ID", help="revoke every active key of this device")
    _store_flags(rev)
    return p


def settings_error(exc: ValidationError) -> str:
    """pydantic's errors as one line: ``SPIC_CLOUD_<FIELD>: message; ...``."""
    return "; ".join(
        f"SPIC_CLOUD_{'_'.join(map(str, e['loc'])).upper() or '*'}: {e['msg']}"
        for e in exc.errors()
    )


def describe(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "key": key.hint + "...",
        "scope": key.scope,
        "device": key.device,
        "created": format_rfc3339(key.created_us),
        "revoked": None if key.revoked_us is None else format_rfc3339(key.revoked_us),
    }


def keys(args: argparse.Namespace) -> int:
    # Only the two settings that locate the store: a key can be made before the rest is set.
    fields = Settings.model_fields
    data_dir = args.data_dir or os.environ.get("SPIC_CLOUD_DATA_DIR", fields["data_dir"].default)
    url = args.database_url or os.environ.get("SPIC_CLOUD_DATABASE_URL", "")
    try:
        store = open_keys(url, data_dir, cache_s=0)
    except StoreUnavailable as exc:
        print(f"spic-cloud: the key store cannot be reached: {exc}", file=sys.stderr)
        return 1
    try:
        if args.keys_command == "add":
            key, secret = store.add(args.scope, args.device)
            print(secret)  # alone on stdout, so a script can take it: $(spic-cloud keys add ...)
            print(
                f"spic-cloud: key {key.id} ({key.scope}"
                + (f", device {key.device}" if key.device else "")
                + "): shown once; only its hash is kept",
                file=sys.stderr,
            )
        elif args.keys_command == "rotate":
            key, secret = store.rotate(args.id)
            print(secret)
            print(f"spic-cloud: key {key.id} replaces key {args.id} (revoked)", file=sys.stderr)
        elif args.keys_command == "revoke":
            revoked = store.revoke(args.id, args.device)
            if not revoked:
                print("spic-cloud: no such active key", file=sys.stderr)
                return 1
            print(f"spic-cloud: revoked key(s) {', '.join(str(k.id) for k in revoked)}")
        else:
            rows = [describe(k) for k in store.listing(include_revoked=args.all)]
            for row in rows:
                if args.json:
                    print(json.dumps(row))
                else:
                    print(
                        f"{row['id']:>5}  {row['key']:<11} {row['scope']:<7} "
                        f"{row['device'] or '-':<20} {row['created']}"
                        + (f"  revoked {row['revoked']}" if row["revoked"] else "")
                    )
    except (ValueError, LookupError) as exc:
        print(f"spic-cloud: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        print(f"spic-cloud: the key store cannot be reached: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


def served_bundles(given: list[str] | None, only: bool) -> str | None:
    """SPIC_CLOUD_BUNDLES for ``--bundle``: added to the shipped bundles (or to the variable's own
    list, when set) unless ``only``; None leaves the variable as it is."""
    if not given:
        return None
    base: list[str] = []
    if not only:
        env = os.environ.get("SPIC_CLOUD_BUNDLES", "")
        base = [b.strip() for b in env.split(",") if b.strip()]
        base = base or [str(p) for p in shipped_bundles()]
    seen = {Path(b).resolve() for b in base}
    return ",".join(base + [b for b in given if Path(b).resolve() not in seen])


def serve(args: argparse.Namespace) -> int:
    if args.only and not args.bundle:
        print("spic-cloud: --only serves the --bundle bundles: name at least one", file=sys.stderr)
        return 2
    flags = {"BUNDLES": served_bundles(args.bundle, args.only)}
    if args.head:
        env = os.environ.get("SPIC_CLOUD_HEADS", "")
        flags["HEADS"] = ",".join([h for h in env.split(",") if h.strip()] + args.head)
    if args.decoder:
        env = os.environ.get("SPIC_CLOUD_DECODERS", "")
        flags["DECODERS"] = ",".join([d for d in env.split(",") if d.strip()] + args.decoder)
    flags |= {"HOST": args.host, "PORT": args.port, "WORKERS": args.workers}
    for name, value in flags.items():
        if value is not None:
            os.environ[f"SPIC_CLOUD_{name}"] = str(value)
    try:
        settings = Settings()  # fail here, in one line, before uvicorn forks workers
    except ValidationError as exc:
        print(f"spic-cloud: bad settings: {settings_error(exc)}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Connection caps are checked at accept, answered in problem+json (cloud_service/connections):
    # uvicorn's limit_concurrency would refuse requests on open connections, in text/plain.
    from cloud_service.connections import ConnectionCapH11Protocol

    uvicorn.run(
        "cloud_service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=args.log_level,
        access_log=False,
        http=ConnectionCapH11Protocol,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return keys(args) if args.command == "keys" else serve(args)


if __name__ == "__main__":
    raise SystemExit(main())
