"""Time to the first partial image of a streamed edit, one request at a time.

``python -m bench.ttfp URL BODY_FILE CONTENT_TYPE SECONDS OUT_JSON``: wrk cannot see
inside a response, so this small client (stdlib ``http.client``, one keep-alive
connection) times each request from sending to the first ``partial_image`` event, reads
the rest, and writes a summary shaped like ``wrk.lua``'s (percentiles of that time).
"""

from __future__ import annotations

import http.client
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

_MARK = b"partial_image"


def _one(conn: http.client.HTTPConnection, path: str, body: bytes, ctype: str) -> float:
    start = time.perf_counter()
    conn.request("POST", path, body=body, headers={"Content-Type": ctype})
    resp = conn.getresponse()
    if resp.status != 200:
        resp.read()
        raise RuntimeError(f"status {resp.status}")
    seen = b""
    first = 0.0
    while chunk := resp.read1(65536):
        if not first:
            seen = seen[-len(_MARK) :] + chunk
            if _MARK in seen:
                first = time.perf_counter() - start
    if not first:
        raise RuntimeError("no partial image in the stream")
    return first


def main(argv: list[str]) -> int:
    url, body_file, ctype, seconds, out = argv
    parts = urlsplit(url)
    body = Path(body_file).read_bytes()
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    times: list[float] = []
    errors = 0
    start = time.perf_counter()
    while time.perf_counter() - start < float(seconds):
        try:
            times.append(_one(conn, parts.path, body, ctype))
        except (RuntimeError, OSError, http.client.HTTPException):
            errors += 1
            conn.close()
    duration = time.perf_counter() - start
    us = sorted(t * 1e6 for t in times) or [0.0]
    summary = {
        "requests": len(times) + errors, "duration_us": int(duration * 1e6),
        "errors_status": errors, "p50_us": int(statistics.median(us)),
        "p90_us": int(us[int(0.9 * (len(us) - 1))]),
        "p99_us": int(us[int(0.99 * (len(us) - 1))]),
        "mean_us": statistics.fmean(us), "max_us": int(us[-1]),
    }  # fmt: skip
    Path(out).write_bytes(msgspec.json.encode(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
