"""``python -m bench.forward``: how long after the client's last byte the provider has
the edit's last byte (issue 19 item 6), with C uploads in flight at once.

C clients each send one multipart edit of an ``--upload``-byte image through imagegate
and then through the aiohttp floor (``--peers``) to a fake provider (``--serve``, a
child process), which notes when each request's body ended and holds it ``--hold``
seconds before answering. Both orders are sent:
``fields-first`` (the OpenAI SDKs' order: forwarded as it arrives) and ``files-first``
(the image before the fields: spooled whole, then sent). The lag of one edit is the
provider's last-byte time minus the client's (both ``time.monotonic``, one clock for
every process of the machine); requests are matched by their prompt.

    python -m bench.forward                       # 250 x 8 MiB, both orders
    python -m bench.forward --clients 40 --upload 1048576 --hold 1   # a quick look

Writes ``bench/results/<name>.{md,json}``. Wall-clock figures on a shared machine:
compare the two orders of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from bench import report
from bench.inflight_client import raise_nofile
from bench.procs import Proc, free_port
from bench.scenarios import MiB, png_bytes
from bench.targets import BENCH_KEY_ENV, HERE, Target, floor, imagegate_config

ORDERS = ("fields-first", "files-first")
PEERS = ("imagegate", "aiohttp")
_PROMPT = re.compile(rb'name="prompt"\r\n\r\n(req-\d+)\r\n')
_REPLY = msgspec.json.encode(
    {
        "created": 0,
        "data": [{"b64_json": "iVBORw0KGgo="}],
        "usage": {"input_tokens": 50, "output_tokens": 1000, "total_tokens": 1050,
                  "input_tokens_details": {"text_tokens": 10, "image_tokens": 40}},
    }
)  # fmt: skip
_PIECE = 256 * 1024  # what the client writes at a time


class _Provider(asyncio.Protocol):
    """The fake provider's side of one connection, raw (no HTTP parsing beyond the
    head, so the fake costs little beside the gateway): a body ends at its
    Content-Length or at the last chunk; its prompt is in its first bytes (the
    gateway sends the fields first) or its last (the floor passes a files-first form
    as it came)."""

    def __init__(self, hold: float, sink: Any) -> None:
        self._hold, self._sink = hold, sink
        self._reset()

    def _reset(self) -> None:
        self._head = bytearray()
        self._left: int | None = None  # Content-Length bytes still to come
        self._chunked = False
        self._first = bytearray()
        self._last = b""  # the body's last 4 KiB: a chunked end, a files-first prompt
        self._in_body = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport: Any = transport  # uvloop's, not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        if not self._in_body:
            self._head += data
            at = self._head.find(b"\r\n\r\n")
            if at < 0:
                return
            head, data = bytes(self._head[:at]).lower(), bytes(self._head[at + 4 :])
            self._in_body = True
            self._chunked = b"transfer-encoding: chunked" in head
            length = re.search(rb"content-length: *(\d+)", head)
            self._left = int(length[1]) if length else None
        if len(self._first) < 4096:
            self._first += data[:4096]
        self._last = (self._last + data[-4096:])[-4096:]
        if self._left is not None:
            self._left -= len(data)
            done = self._left <= 0
        else:
            done = self._last.endswith(b"\r\n0\r\n\r\n")
        if done:
            ended = time.monotonic()
            found = _PROMPT.search(self._first) or _PROMPT.search(self._last)
            self._sink.write(f"{found[1].decode() if found else '-'} {ended}\n")
            self._reset()
            asyncio.get_running_loop().call_later(self._hold, self._answer)

    def _answer(self) -> None:
        if not self._transport.is_closing():
            head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(_REPLY)}\r\n\r\n").encode()  # fmt: skip
            self._transport.write(head + _REPLY)


def serve(port: int, hold: float, out: Path) -> None:
    """The fake provider: one line ``<prompt> <last byte time>`` per whole body."""
    import uvloop

    sink = out.open("a", buffering=1)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Provider(hold, sink), "127.0.0.1", port, backlog=4096
        )
        await server.serve_forever()

    uvloop.run(main())


def form(order: str, prompt: str, image: bytes, boundary: str) -> bytes:
    fields = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in (("model", "openai/gpt-image-2"), ("prompt", prompt))
    )
    file = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="cat.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        + image
        + b"\r\n"
    )
    parts = fields + file if order == "fields-first" else file + fields
    return parts + f"--{boundary}--\r\n".encode()


async def _one(
    session: aiohttp.ClientSession, url: str, body: bytes, boundary: str, rate: float
) -> tuple[int, float]:
    """One edit (at ``rate`` bytes/s, 0: as fast as it goes): its status and when its
    last byte was written."""
    last = 0.0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal last
        view = memoryview(body)
        begun = time.monotonic()
        for start in range(0, len(view), _PIECE):
            if rate:  # a client on a real link: its pieces at its pace
                await asyncio.sleep(max(0.0, begun + start / rate - time.monotonic()))
            yield bytes(view[start : start + _PIECE])
        last = time.monotonic()  # resumed once the last piece was written

    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(body)),
    }
    async with session.post(url, data=chunks(), headers=headers) as r:
        await r.read()
        return r.status, last


async def burst(
    url: str, order: str, clients: int, image: bytes, rate: float = 0.0
) -> dict[str, float]:
    """C edits at once; each prompt's client last-byte time (failures left out)."""
    boundary = "benchforward0123456789"
    bodies = {
        f"req-{i}": form(order, f"req-{i}", image, boundary) for i in range(clients)
    }
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        results = await asyncio.gather(
            *(_one(session, url, b, boundary, rate) for b in bodies.values()),
            return_exceptions=True,
        )
    done: dict[str, float] = {}
    for prompt, result in zip(bodies, results, strict=True):
        if isinstance(result, tuple) and result[0] == 200:
            done[prompt] = result[1]
    return done


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def run(
    workdir: Path, *, clients: int, upload: int, hold: float, proxy_cpus: str | None,
    client_cpus: str | None, rate: float = 0.0, peers: Sequence[str] = PEERS,
) -> list[dict[str, Any]]:  # fmt: skip
    raise_nofile()
    if client_cpus is not None:  # the clients run here, beside the fake provider
        os.sched_setaffinity(0, {int(c) for c in client_cpus.split(",")})
    image = png_bytes(upload)
    rows = []
    for peer in peers:
        for order in ORDERS:
            row = _one_run(workdir, peer, order, clients=clients, upload=upload,
                           hold=hold, proxy_cpus=proxy_cpus, client_cpus=client_cpus,
                           rate=rate, image=image)  # fmt: skip
            sys.stderr.write(f"{row}\n")
            rows.append(row)
    return rows


def _peer(
    workdir: Path, peer: str, up_port: int, clients: int, cpus: str | None
) -> Target:
    """imagegate with limits raised to ``clients``, or the aiohttp floor, which reads
    each body whole before it sends it on; listening."""
    if peer == "aiohttp":
        return floor(workdir, up_port, cpus)
    if peer != "imagegate":
        raise SystemExit(f"unknown peer {peer!r}")
    port = free_port()
    overrides: dict[str, dict[str, object]] = {
        "backpressure": {"max_inflight": clients, "max_inflight_share": 1.0,
                         "max_temp_share": 1.0},
    }  # fmt: skip
    conf = imagegate_config(workdir, port, up_port, overrides)
    gate = Proc(
        peer, [sys.executable, "-m", "proxy", "--config", str(conf)],
        log=workdir / f"{peer}.log", cpus=cpus,
        env={BENCH_KEY_ENV: "sk-bench-not-a-real-key"},
    )  # fmt: skip
    gate.wait_port(port)
    return Target(peer, port, gate)


def _one_run(
    workdir: Path, peer: str, order: str, *, clients: int, upload: int, hold: float,
    proxy_cpus: str | None, client_cpus: str | None, rate: float, image: bytes,
) -> dict[str, Any]:  # fmt: skip
    seen = workdir / f"{peer}-{order}.seen"
    up_port = free_port()
    cmd = [sys.executable, "-m", "bench.forward", "--serve", str(up_port),
           "--hold", str(hold), "--seen", str(seen)]  # fmt: skip
    upstream = Proc("upstream", cmd, log=workdir / "up.log", cpus=client_cpus)
    gate: Target | None = None
    try:
        upstream.wait_port(up_port)
        gate = _peer(workdir, peer, up_port, clients, proxy_cpus)
        url = f"http://127.0.0.1:{gate.port}/v3/images/edits"
        start = time.monotonic()
        sent = asyncio.run(burst(url, order, clients, image, rate))
        wall = time.monotonic() - start
    finally:
        if gate is not None and gate.proc is not None:
            gate.proc.stop()
        upstream.stop()
    arrived = {}
    for line in seen.read_text().splitlines():
        prompt, _, at = line.partition(" ")
        arrived[prompt] = float(at)
    lags = [arrived[p] - t for p, t in sent.items() if p in arrived]
    return {
        "peer": peer, "order": order, "clients": clients, "upload_bytes": upload,
        "hold_s": hold, "rate_bytes_s": rate,
        "ok": len(sent), "wall_s": round(wall, 2),
        "lag_min_ms": _ms(min(lags, default=None)),
        "lag_p50_ms": _ms(statistics.median(lags) if lags else None),
        "lag_p99_ms": _ms(_pct(lags, 0.99) if lags else None),
        "lag_max_ms": _ms(max(lags, default=None)),
    }  # fmt: skip


def _pace(rate: float | None) -> str:
    return f"each sent at {rate / MiB:g} MiB/s" if rate else "sent as fast as they go"


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


COLUMNS = (
    ("peer", "peer"), ("order", "order"), ("clients", "C"), ("ok", "ok"),
    ("wall_s", "wall s"),
    ("lag_min_ms", "lag min ms"), ("lag_p50_ms", "lag p50 ms"),
    ("lag_p99_ms", "lag p99 ms"), ("lag_max_ms", "lag max ms"),
)  # fmt: skip


def write(
    out: Path, name: str, rows: list[dict[str, Any]], meta: dict[str, Any]
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "results": rows}
    (out / f"{name}.json").write_bytes(msgspec.json.encode(doc) + b"\n")
    first = rows[0] if rows else {}
    lines = [
        f"# Last-byte lag ({name})", "",
        f"{first.get('clients')} edits of {first.get('upload_bytes', 0) / MiB:g} MiB "
        f"at once ({_pace(meta.get('rate_bytes_s'))}), upstream hold "
        f"{meta['hold_s']} s; lag = the provider's last byte "
        "minus the client's, wall clock; "
        f"{meta['machine'].get('cpu', '')}; load average after "
        f"{' '.join(meta['loadavg_after'])}.", "",
        "| " + " | ".join(h for _, h in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]  # fmt: skip
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(k, "-")) for k, _ in COLUMNS) + " |")
    path = out / f"{name}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench.forward", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--clients", type=int, default=250)
    p.add_argument("--upload", type=int, default=8 * MiB, help="image bytes")
    p.add_argument("--hold", type=float, default=2.0, help="upstream hold, s")
    p.add_argument("--rate", type=float, default=0.0,
                   help="each client's upload pace, bytes/s (0: as fast as it goes)")  # fmt: skip
    p.add_argument("--peers", default=",".join(PEERS),
                   help="imagegate and/or aiohttp (the floor), comma-separated")  # fmt: skip
    p.add_argument("--proxy-cpus", default="1")
    p.add_argument("--client-cpus", default="0")
    p.add_argument("--name", default="forward")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the fake provider
    p.add_argument("--seen", type=Path, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.hold, args.seen)
        return 0
    with tempfile.TemporaryDirectory(prefix="imagegate-forward-") as tmp:
        rows = run(
            Path(tmp), clients=args.clients, upload=args.upload, hold=args.hold,
            proxy_cpus=args.proxy_cpus, client_cpus=args.client_cpus, rate=args.rate,
            peers=args.peers.split(","),
        )  # fmt: skip
    meta = {
        "machine": report.machine(), "hold_s": args.hold, "rate_bytes_s": args.rate,
        "proxy_cpus": args.proxy_cpus, "client_cpus": args.client_cpus,
        "loadavg_after": Path("/proc/loadavg").read_text().split()[:3],
    }  # fmt: skip
    md = write(args.out, args.name, rows, meta)
    sys.stdout.write(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
