"""Command line: ``imagegate [--config PATH] [--host H] [--port P] [--workers N]``,
``imagegate check-config PATH``, ``imagegate lifecycle-rules [PATH]``,
``imagegate prepare-bucket [PATH]`` and ``imagegate hash-key [--stdin]``."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import os
import sys
from collections.abc import Mapping, Sequence

import msgspec

from proxy import __version__
from proxy.client_keys import hash_key, new_key
from proxy.config import Config, ConfigError, load_config, override_server
from proxy.config_errors import plural
from proxy.controls import exposure_error
from proxy.environment import problems

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
    rules = sub.add_parser(
        "lifecycle-rules",
        help="print the bucket lifecycle rules files.backend: s3 needs (S3's JSON)",
    )
    rules.add_argument("path", nargs="?", help="config file (default: --config)")
    prepare = sub.add_parser(
        "prepare-bucket",
        help="create the files.s3 bucket if missing and merge in its lifecycle rules",
    )
    prepare.add_argument("path", nargs="?", help="config file (default: --config)")
    hashing = sub.add_parser(
        "hash-key", help="make a new client key and print it with its sha256 for keys:"
    )
    hashing.add_argument(
        "--stdin", action="store_true", help="hash the key read from standard input"
    )
    return parser


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed: it cuts the proxy's CPU per request (see bench/README.md)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(environ: Mapping[str, str], arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas, unless ``MALLOC_ARENA_MAX`` already says.

    glibc gives threads their own heap arenas (up to 8 per core); the file I/O
    threads allocate and free MiB-sized buffers in theirs, and memory freed there is
    seldom returned. Two arenas lowered the upload benchmark's peak RSS by 10-20 MiB
    (a noisy figure) at no measurable CPU cost. A no-op off glibc (musl, macOS).
    """
    if "MALLOC_ARENA_MAX" in environ:
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))


_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers
_M_MMAP_THRESHOLD = -3
# Buffers from 4 MiB up are mmap'd: a bytearray growing past it (a JSON body being
# read) moves by mremap, not by a copy; at 32 MiB, 32 MiB were copied in one step of
# the loop (bench.stall json64: 42-49 ms of loop CPU, glibc's sliding threshold
# 33-39, 4 MiB 7-9). Up to 8 MiB freed at the heap's top is kept: with 64 MiB a
# burst of 1,000 held 1 MiB edits peaked at 372 MiB and settled at 139 a minute later
# (trims included), with 8 MiB 327 and 90, and JSON with a 1 MiB data URL at c=16 cost
# the same (2.2-2.4 ms per request against 2.1-2.2; glibc's sliding thresholds 4.0-4.8).
MMAP_THRESHOLD = 4 * 1024 * 1024
TRIM_THRESHOLD = 8 * 1024 * 1024
_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory(environ: Mapping[str, str]) -> bool:
    """Keep freed heap memory for reuse instead of handing it back after each burst
    of buffers, unless the environment sets glibc's thresholds itself.

    With glibc's sliding thresholds, 16 requests' MiB-sized buffers freed together
    left more than the trim threshold free at the heap's top: it went back to the
    kernel, and every page of the next ones was faulted in (and zeroed) again. JSON
    with a 1 MiB data URL at c=16 took 130-390 minor faults per request in five runs
    of eight (the aiohttp floor 1-150) and 1.3-1.8 ms of kernel CPU, against 0-2
    faults and 0.8-0.9 ms with fixed thresholds (bench/syscalls.py). ``proxy.trim``
    still hands the memory back once the gateway is quiet. A no-op off glibc.
    """
    if any(name in environ for name in _MALLOC_ENV):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mmap = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    return bool(mmap and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


GC_GEN0_THRESHOLD = 2_000


def tune_gc(gen0: int = GC_GEN0_THRESHOLD) -> None:
    """Freeze what start-up made and collect the youngest generation less often.

    A request allocates a few thousand container objects, nearly all freed by
    reference counting; at CPython's default (a gen-0 pass every 700 net
    allocations) the collector ran several times per request, and its full passes
    walked every module and config object. Frozen start-up objects and a threshold
    of 2 000 cut CPU per small edit by about 6% (0.38 to 0.36 ms) and its p99 at
    c=32 from 27 to 17 ms. 10 000 saved a little more CPU but raised the upload
    benchmarks' peak RSS by 20-30 MiB; 2 000 leaves it within the noise
    (bench/README.md). Cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)


def _hash_key(from_stdin: bool) -> int:
    # A key is never taken from argv, where shell history and `ps` would keep it.
    if from_stdin:
        key = sys.stdin.readline().strip()
        if not key:
            sys.stderr.write("imagegate: no key on standard input\n")
            return 2
        sys.stdout.write(f"sha256: {hash_key(key)}\n")
        return 0
    key = new_key()
    sys.stdout.write(f"key: {key}\nsha256: {hash_key(key)}\n")
    return 0


def _per_process_limits(config: Config, workers: int) -> bool:
    """Limits kept in memory would be counted once per worker."""
    limited = any(
        k.rpm or k.concurrency or k.budget_usd_day or k.budget_usd_month
        for k in config.keys.values()
    )
    shared = config.redis_url is not None or config.redis_url_env is not None
    return workers > 1 and limited and not shared


def _lifecycle_rules(config: Config) -> int:
    from proxy.lifecycle import rules

    try:
        found = rules(config)
    except ValueError as exc:
        sys.stderr.write(f"imagegate: {exc}\n")
        return 2
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(found)).decode() + "\n")
    return 0


def _prepare_bucket(config: Config) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from proxy.lifecycle import prepare

    if config.files.backend != "s3":
        sys.stderr.write("imagegate: files.backend is not s3: no bucket to prepare\n")
        return 2
    try:
        done = prepare(config, os.environ)
    except (BotoCoreError, ClientError) as exc:
        # botocore's messages name the operation and the error code, not secrets.
        sys.stderr.write(f"imagegate: prepare-bucket failed: {exc}\n")
        return 1
    for line in done:
        sys.stdout.write(line + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "hash-key":
        return _hash_key(args.stdin)
    path = getattr(args, "path", None) or args.config
    try:
        config = load_config(path)
    except ConfigError as exc:
        sys.stderr.write(f"imagegate: invalid config: {exc}\n")
        return 2
    if args.command == "lifecycle-rules":
        return _lifecycle_rules(config)
    if args.command == "prepare-bucket":
        return _prepare_bucket(config)  # needs the store's variables only
    lacking = problems(config, os.environ)
    for line in lacking:
        sys.stderr.write(f"imagegate: {line}\n")
    if lacking:
        return 2
    if args.command == "check-config":
        sys.stdout.write(f"{path}: ok ({plural(len(config.providers), 'provider')})\n")
        return 0
    try:
        server = override_server(
            config.server, host=args.host or None, port=args.port, workers=args.workers
        )
    except ConfigError as exc:
        sys.stderr.write(f"imagegate: {exc}\n")
        return 2
    host = server.host
    refusal = exposure_error(host=host, auth=config.auth, keys=config.keys)
    if refusal is not None:
        sys.stderr.write(f"imagegate: {refusal}\n")
        return 2
    port = server.port
    workers = server.workers
    if _per_process_limits(config, workers):
        sys.stderr.write(
            "imagegate: key limits are per worker without redis_url: "
            "set redis_url or use one worker\n"
        )
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
    from proxy.serve import effective_backlog, serve

    setup_logging(config.server.log_level)
    limit_malloc_arenas(os.environ)  # before any thread exists
    keep_freed_memory(os.environ)
    app = create_app(config, environ=os.environ)
    tune_gc()  # after start-up's objects exist
    try:
        # A Runner like asyncio.run's, on uvloop's loop.
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(
                serve(
                    app,
                    host=host,
                    port=port,
                    shutdown_timeout_s=config.server.shutdown_timeout_s,
                    keepalive_timeout_s=config.server.keepalive_timeout_s,
                    reuse_port=args.reuse_port,
                    backlog=effective_backlog(config.server.backlog),
                    health_port=config.server.health_port,
                )
            )
    except OSError as exc:  # the address is taken or not ours
        sys.stderr.write(f"imagegate: cannot listen on {host}:{port}: {exc.strerror}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
