"""spic-cloud serve [--host H] [--port P] [--workers N] [--bundle DIR ...]: run the service.

Flags are exported as SPIC_CLOUD_* variables before uvicorn starts, so every worker process builds
the same settings; anything not given as a flag comes from the environment (see ``settings``).
"""

from __future__ import annotations

import argparse
import logging
import os

import uvicorn

from cloud_service.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    defaults = Settings()
    p = argparse.ArgumentParser(prog="spic-cloud", description="SPIC cloud service")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the HTTP service with uvicorn")
    s.add_argument("--host", default=defaults.host)
    s.add_argument("--port", type=int, default=defaults.port)
    s.add_argument("--workers", type=int, default=defaults.workers)
    s.add_argument("--bundle", action="append", help="model bundle folder (repeat for several)")
    s.add_argument("--log-level", default=os.environ.get("SPIC_CLOUD_LOG_LEVEL", "info"))
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.bundle:
        os.environ["SPIC_CLOUD_BUNDLES"] = ",".join(args.bundle)
    os.environ["SPIC_CLOUD_WORKERS"] = str(args.workers)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from shared.tuning import tune_malloc

    tune_malloc()
    Settings()  # fail here, with pydantic's message, before uvicorn forks workers
    uvicorn.run(
        "cloud_service.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
