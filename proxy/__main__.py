"""Command line: ``imagegate [--config PATH] [--host H] [--port P] [--workers N]`` and
``imagegate check-config PATH``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from aiohttp import web

from proxy import __version__
from proxy.config import ConfigError, load_config

DEFAULT_CONFIG = "config/imagegate.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagegate", description="OpenAI-compatible gateway for AI image edits"
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument(
        "--config",
        default=os.environ.get("IMAGEGATE_CONFIG", DEFAULT_CONFIG),
        help="YAML config file (default: $IMAGEGATE_CONFIG or config/imagegate.yaml)",
    )
    parser.add_argument("--host", help="listen address (overrides server.host)")
    parser.add_argument("--port", type=int, help="listen port (overrides server.port)")
    parser.add_argument(
        "--workers",
        type=int,
        help="worker processes sharing the port (overrides server.workers)",
    )
    # Set by the supervisor on its workers: bind with SO_REUSEPORT.
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command")
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("path", nargs="?", help="config file (default: --config)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path = getattr(args, "path", None) or args.config
    try:
        config = load_config(path)
    except ConfigError as exc:
        sys.stderr.write(f"imagegate: invalid config: {exc}\n")
        return 2
    if args.command == "check-config":
        sys.stdout.write(f"{path}: ok ({len(config.providers)} providers)\n")
        return 0
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    workers = args.workers if args.workers is not None else config.server.workers
    if workers < 1:
        sys.stderr.write("imagegate: --workers must be at least 1\n")
        return 2
    if workers > 1:
        if port == 0:
            # Each worker would bind its own random port.
            sys.stderr.write("imagegate: --workers above 1 needs a fixed --port\n")
            return 2
        from proxy.workers import supervise

        worker_argv = ["--config", str(path), "--host", host, "--port", str(port)]
        return supervise([*worker_argv, "--workers", "1", "--reuse-port"], workers)
    from proxy.app import create_app
    from proxy.logs import setup_logging

    setup_logging(config.server.log_level)
    app = create_app(config, environ=os.environ)
    web.run_app(
        app,
        host=host,
        port=port,
        shutdown_timeout=config.server.shutdown_timeout_s,
        keepalive_timeout=config.server.keepalive_timeout_s,
        access_log=None,
        print=None,
        reuse_port=args.reuse_port or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
