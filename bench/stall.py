"""Event-loop stalls: the worst ``/healthz`` latency while one heavy request runs.

``python -m bench.stall [--repeat N]`` (issue 19, item 7). Three processes, so that
neither the heavy client nor the upstream shares a loop with what is measured: the
fake upstream (this module with ``--upstream``), imagegate, and a probe (this module
with ``--probe``) sending ``GET /healthz`` on one kept-alive connection every 2 ms.
Each heavy request is sent ``--repeat`` times, one at a time; the probe's worst and
99th-percentile latency over those requests is reported per scenario, beside an idle
baseline. Requests within the default limits:

- ``json64``: a JSON edit of 16 data URLs, 60 MiB of base64 in all;
- ``multipart16``: a multipart edit of 16 images of 4 MiB;
- ``reply256``: a generation whose reply is 256 MiB (``max_response_bytes``);
- ``reply256kept``: the same with an ``Idempotency-Key`` (a fresh one each time): the
  reply is held whole, not relayed; past the default ``max_answer_bytes`` it is not
  kept, unless ``--keep-answers`` (then each is copied into the memory store, and the
  older ones evicted);
- ``mask25mp``: a FLUX Fill edit (``bfl/flux-pro-1.0-fill``) of a 5000x5000 image and
  an RGBA mask of the same size (25 Mpx, ``max_image_pixels``), each a real PNG just
  under 50 MiB (``max_file_bytes``): the mask is decoded and converted to FLUX's
  white = edit, both are sent base64 in JSON, and the fake upstream answers BFL's
  submit, poll and delivery.

The aiohttp floor (``bench/floor.py``) is sent the same bodies (``--peers``): what
carrying them costs a loop with no application code. imagegate runs under
``bench.loopsteps``, so each of its scenarios also reports the longest
CPU time its loop spent between two 1 ms heartbeats (``loop cpu``): the stall
imagegate itself causes, which the loaded machine's scheduling does not inflate;
and the longest gap less the loop's wait for a CPU (``own``): its CPU and its waits
for the GIL a worker thread holds (a mask conversion), which ``loop cpu`` misses.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import msgspec
from aiohttp import web
from PIL import Image

from bench import loopsteps
from bench.procs import Proc, free_port
from bench.scenarios import MiB, multipart, png_bytes
from bench.targets import BENCH_KEY_ENV, Target, floor, imagegate_config

REPLY_BYTES = 256 * MiB - 4096
_BLOCK = b"A" * (4 * MiB)


async def _edit(request: web.Request) -> web.StreamResponse:
    await request.read()
    return web.json_response({"created": 1, "data": [{"b64_json": "aGk="}]})


async def _huge(request: web.Request) -> web.StreamResponse:
    """A 256 MiB images reply, written in 4 MiB blocks (chunked)."""
    await request.read()
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    head = b'{"created":1,"data":[{"b64_json":"'
    await resp.write(head)
    left = REPLY_BYTES - len(head) - 3
    while left > 0:
        block = _BLOCK[: min(left, len(_BLOCK))]
        await resp.write(block)
        left -= len(block)
    await resp.write(b'"}]}')
    await resp.write_eof()
    return resp


async def _bfl_submit(request: web.Request) -> web.StreamResponse:
    await request.read()
    poll = f"http://{request.host}/bfl/v1/get_result?id=j1"
    return web.json_response({"id": "j1", "polling_url": poll})


async def _bfl_result(request: web.Request) -> web.StreamResponse:
    sample = f"http://{request.host}/bfl/delivery/j1.png"
    return web.json_response({"id": "j1", "status": "Ready",
                              "result": {"sample": sample}})  # fmt: skip


async def _bfl_file(request: web.Request) -> web.StreamResponse:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(buf, format="PNG")
    return web.Response(body=buf.getvalue(), content_type="image/png")


def serve_upstream(port: int) -> None:
    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/small/v1/images/edits", _edit)
    app.router.add_post("/big/v1/images/generations", _huge)
    app.router.add_post("/bfl/v1/{model}", _bfl_submit)
    app.router.add_get("/bfl/v1/get_result", _bfl_result)
    app.router.add_get("/bfl/delivery/{file}", _bfl_file)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


def probe(port: int, seconds: float, out: Path) -> None:
    """``GET /healthz`` every 2 ms on one connection, until ``seconds`` have passed or
    ``out`` with the suffix ``.stop`` exists; latencies (s) to ``out``."""
    stop = out.with_suffix(".stop")
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    samples: list[tuple[float, float]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and not stop.exists():
        t0 = time.monotonic()
        sock.sendall(req)
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            data += sock.recv(4096)
        samples.append((time.time(), time.monotonic() - t0))
        time.sleep(0.002)
    out.write_bytes(msgspec.json.encode(samples))


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def fill_pair(side: int = 5000, noisy: tuple[int, int] = (3400, 2900)) -> list[bytes]:
    """A ``side`` x ``side`` RGB image and an RGBA mask (alpha 0 in the middle ninth),
    real PNGs whose first rows are noise so that each file is just under 50 MiB."""
    rgb = os.urandom(side * 3 * noisy[0]) + bytes(side * 3 * (side - noisy[0]))
    image = Image.frombytes("RGB", (side, side), rgb)
    alpha = Image.new("L", (side, side), 255)
    alpha.paste(0, (side // 3, side // 3, 2 * side // 3, 2 * side // 3))
    rgb = os.urandom(side * 3 * noisy[1]) + bytes(side * 3 * (side - noisy[1]))
    mask = Image.frombytes("RGB", (side, side), rgb)
    mask.putalpha(alpha)
    return [_png(image), _png(mask)]


def _bodies(only: list[str] | None) -> dict[str, tuple[str, bytes, str]]:
    """(path, body, content type) per scenario (those in ``only`` if given)."""
    image = png_bytes(int(2.8 * MiB))
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    doc = {"model": "openai/gpt-image-2", "prompt": "p",
           "images": [{"image_url": url} for _ in range(16)]}  # fmt: skip
    files = [("image[]", png_bytes(4 * MiB)) for _ in range(16)]
    form, ctype = multipart({"model": "openai/gpt-image-2", "prompt": "p"}, files)
    gen = {"model": "big/gpt-image-2", "prompt": "p"}
    bodies = {
        "json64": ("/v3/images/edits", msgspec.json.encode(doc), "application/json"),
        "multipart16": ("/v3/images/edits", form, ctype),
        "reply256": ("/v3/images/generations", msgspec.json.encode(gen),
                     "application/json"),
        "reply256kept": ("/v3/images/generations#kept", msgspec.json.encode(gen),
                         "application/json"),
    }  # fmt: skip
    if not only or "mask25mp" in only:
        image, mask = fill_pair()
        assert max(len(image), len(mask)) <= 50 * MiB, (len(image), len(mask))
        form, ctype = multipart({"model": "bfl/flux-pro-1.0-fill", "prompt": "p"},
                                [("image", image), ("mask", mask)])  # fmt: skip
        bodies["mask25mp"] = ("/v3/images/edits", form, ctype)
    return {k: v for k, v in bodies.items() if not only or k in only}


async def _send(port: int, path: str, body: bytes, ctype: str) -> tuple[float, float]:
    headers = {"Content-Type": ctype}
    if path.endswith("#kept"):  # a fresh key each time: the reply is held, not relayed
        path = path.removesuffix("#kept")
        headers["Idempotency-Key"] = secrets.token_hex(8)
    async with aiohttp.ClientSession() as s:
        t0 = time.time()
        async with s.post(
            f"http://127.0.0.1:{port}{path}", data=body, headers=headers
        ) as r:  # fmt: skip
            async for _ in r.content.iter_chunked(1 * MiB):
                pass
            assert r.status == 200, r.status
        return t0, time.time()


def _stats(
    samples: list[tuple[float, float]], windows: list[tuple[float, float]]
) -> str:
    during = sorted(lat for t, lat in samples if any(a <= t <= b for a, b in windows))
    if not during:
        return "no samples"
    p99 = during[min(len(during) - 1, int(len(during) * 0.99))]
    return (
        f"worst {1000 * during[-1]:7.1f} ms  p99 {1000 * p99:6.1f} ms  n={len(during)}"
    )


# The floor has no routes of its own: it posts each request to the same path on the
# fake upstream, so it is sent the upstream's path for the same body. It converts no
# mask and keeps no answer: its figure is what carrying the same bytes costs.
_FLOOR_PATHS = {
    "/v3/images/edits": "/small/v1/images/edits",
    "/v3/images/generations": "/big/v1/images/generations",
    "/v3/images/generations#kept": "/big/v1/images/generations",
}
PEERS = ("imagegate", "aiohttp")


def _measure(
    peer: str, port: int, bodies: dict[str, tuple[str, bytes, str]], repeat: int,
    steps: Path | None, workdir: Path,
) -> None:  # fmt: skip
    """Each scenario through one peer: the probe's worst ``/healthz`` while it runs,
    and (imagegate, under ``bench.loopsteps``) its loop's longest step."""
    for name, (path, body, ctype) in bodies.items():
        if peer != "imagegate":
            path = _FLOOR_PATHS[path]
        asyncio.run(_send(port, path, body, ctype))  # warm up
        out = workdir / f"{peer}-{name}.json"
        probing = subprocess.Popen(
            [sys.executable, "-m", "bench.stall", "--probe", str(port),
             "--seconds", "600", "--out", str(out)],
            env={**os.environ}, cwd=os.getcwd(),
        )  # fmt: skip
        time.sleep(1.0)
        idle = [(time.time(), time.time() + 0.8)]
        time.sleep(1.0)
        windows = []
        for _ in range(repeat):
            windows.append(asyncio.run(_send(port, path, body, ctype)))
            time.sleep(0.3)
        out.with_suffix(".stop").touch()
        probing.wait()
        samples = [tuple(s) for s in msgspec.json.decode(out.read_bytes())]
        loop = ""
        if steps is not None:
            cpu, wall, own = loopsteps.longest(str(steps), windows)
            loop = (f"  loop cpu {1000 * cpu:6.1f} ms own {1000 * own:6.1f} "
                    f"(wall {1000 * wall:6.1f})")  # fmt: skip
        print(f"{peer:9s} {name:12s} {len(body) / MiB:6.1f} MiB  idle: "
              f"{_stats(samples, idle)}  during: {_stats(samples, windows)}{loop}",
              flush=True)  # fmt: skip


def _peer(peer: str, workdir: Path, up: int, *, keep_answers: bool) -> Target:
    """imagegate under ``bench.loopsteps`` (its steps to ``workdir/steps.txt``), or
    the aiohttp floor; listening, on CPU 1."""
    if peer == "aiohttp":
        return floor(workdir, up, "1")
    if peer != "imagegate":
        raise SystemExit(f"unknown peer {peer!r}")
    port = free_port()
    conf = imagegate_config(workdir, port, up, {"providers": {"bfl": {
        "type": "bfl", "base_url": f"http://127.0.0.1:{up}/bfl/v1",
        "api_key_env": BENCH_KEY_ENV, "poll_interval_s": 0.01,
        "allowed_hosts": ["http://127.0.0.1:*"]}},
        **({"idempotency": {"max_bytes": 600 * MiB, "max_answer_bytes": 300 * MiB}}
           if keep_answers else {})})  # fmt: skip
    cmd = [sys.executable, "-m", "bench.loopsteps", str(workdir / "steps.txt"),
           "--config", str(conf)]  # fmt: skip
    gate = Proc(peer, cmd, log=workdir / f"{peer}.log", cpus="1",
                env={BENCH_KEY_ENV: "sk-bench-not-a-real-key"})  # fmt: skip
    gate.wait_port(port)
    return Target(peer, port, gate)


def main() -> None:
    p = argparse.ArgumentParser(prog="bench.stall")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--only", nargs="*", help="scenarios to run (default: all)")
    p.add_argument("--peers", default=",".join(PEERS),
                   help="imagegate and/or aiohttp (the floor), comma-separated")  # fmt: skip
    p.add_argument("--keep-answers", action="store_true",
                   help="keep reply256kept's answers (idempotency.max_answer_bytes "
                   "300 MiB, max_bytes 600 MiB): copied, stored, evicted")  # fmt: skip
    p.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    p.add_argument("--probe", type=int, help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.upstream:
        serve_upstream(args.upstream)
        return
    if args.probe:
        probe(args.probe, args.seconds, args.out)
        return
    bodies = _bodies(args.only)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        up = free_port()
        cmd = [sys.executable, "-m", "bench.stall", "--upstream", str(up)]
        upstream = Proc("upstream", cmd, log=d / "up.log", cpus="0")
        try:
            upstream.wait_port(up)
            for peer in args.peers.split(","):
                gate = _peer(peer, d, up, keep_answers=args.keep_answers)
                try:
                    steps = d / "steps.txt" if peer == "imagegate" else None
                    _measure(peer, gate.port, bodies, args.repeat, steps, d)
                finally:
                    if gate.proc is not None:
                        gate.proc.stop()
        finally:
            upstream.stop()


if __name__ == "__main__":
    main()
