"""spic-cloud serve [--host H] [--port P] [--workers N] [--bundle DIR ...]: run the service.

Flags are exported as SPIC_CLOUD_* variables before the settings are read, so every worker
process builds the same settings; anything not given as a flag comes from the environment (see
``settings``). Bad settings stop it at once with one line naming each variable (exit 2).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn
from pydantic import ValidationError

from cloud_service.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spic-cloud", description="SPIC cloud service")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the HTTP service with uvicorn")
    s.add_argument("--host", help="default SPIC_CLOUD_HOST or 127.0.0.1")
    s.add_argument("--port", type=int, help="default SPIC_CLOUD_PORT or 8000")
    s.add_argument("--workers", type=int, help="default SPIC_CLOUD_WORKERS or 1")
    s.add_argument("--bundle", action="append", help="model bundle folder (repeat for several)")
    s.add_argument("--log-level", default=os.environ.get("SPIC_CLOUD_LOG_LEVEL", "info"))
    return p


def settings_error(exc: ValidationError) -> str:
    """pydantic's errors as one line: ``SPIC_CLOUD_<FIELD>: message; ...``."""
    return "; ".join(
        f"SPIC_CLOUD_{'_'.join(map(str, e['loc'])).upper() or '*'}: {e['msg']}"
        for e in exc.errors()
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    flags = {"BUNDLES": ",".join(args.bundle) if args.bundle else None}
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


if __name__ == "__main__":
    raise SystemExit(main())
