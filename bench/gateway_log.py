"""What imagegate itself saw of a burst (``bench/turns.py``'s logs): each connection's
accept, the reads of its head and its answer, named by the peer's port, each with the
loop thread's CPU clock beside the wall clock.

Wall time from accept mixes the gateway's own work with what the machine made it wait
(other processes on the same cores: the "run-queue wait" column); the loop's CPU time
between two events is the work the gateway did in between, what the wall time would
be on a core of its own.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

# (monotonic s, loop thread CPU s, status and path: 0 and "" but for answers)
Event = tuple[float, float, int, str]


def read(path: Path, start: float, end: float) -> dict[int, list[Event]]:
    """port -> its events within the burst, in time order."""
    if not path.exists():
        return {}
    events: dict[int, list[Event]] = {}
    for line in path.read_bytes().splitlines():
        at, port, cpu, *answer = msgspec.json.decode(line)
        status, route = answer if answer else (0, "")
        if start <= at <= end + 1:
            events.setdefault(port, []).append((at, cpu, status, route))
    for found in events.values():
        found.sort()
    return events


def since_accept(
    accepts: dict[int, list[Event]],
    events: dict[int, list[Event]],
    *,
    status: int | None = None,
    path: str | None = None,
    first: bool = False,
) -> list[tuple[float, float]]:
    """(wall s, loop CPU s) from a connection's accept (the latest accept of the
    event's port before it) to its event: its first with ``first``, else its last
    (the benchmark's connections carry one request each)."""
    out: dict[tuple[int, float], tuple[float, float]] = {}
    for port, found in events.items():
        times = [a[0] for a in accepts.get(port, ())]
        for at, cpu, code, where in found:
            if (status is not None and code != status) or path not in (None, where):
                continue
            i = bisect.bisect_right(times, at) - 1
            if i < 0:
                continue
            accepted = accepts[port][i]
            key = (port, accepted[0])
            if first and key in out:
                continue
            out[key] = (at - accepted[0], cpu - accepted[1])
    return list(out.values())


def since_head(
    accepts: dict[int, list[Event]],
    heads: dict[int, list[Event]],
    answers: dict[int, list[Event]],
    *,
    status: int,
) -> list[tuple[float, float]]:
    """(wall s, loop CPU s) from the first read of a connection's head (after its
    latest accept) to its answer of ``status``."""
    out = []
    for port, found in answers.items():
        times = [a[0] for a in accepts.get(port, ())]
        for at, cpu, code, _ in found:
            i = bisect.bisect_right(times, at) - 1
            if code != status or i < 0:
                continue
            accepted = times[i]
            read = [h for h in heads.get(port, ()) if accepted <= h[0] <= at]
            if read:
                out.append((at - read[0][0], cpu - read[0][1]))
    return out


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def _top(values: Sequence[float]) -> tuple[float | None, float | None]:
    """(max, p99)"""
    if not values:
        return None, None
    ordered = sorted(values)
    return ordered[-1], ordered[
        min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)
    ]


def figures(
    workdir: Path,
    start: float,
    end: float,
    rows: Sequence[Sequence[Any]],
) -> dict[str, Any]:
    """The burst's figures from the gateway's logs (empty without ``--turns``);
    ``rows`` are the load client's."""
    accepts = read(workdir / "accepts.jsonl", start, end)
    if not accepts:
        return {}
    answers = read(workdir / "answers.jsonl", start, end)
    heads = read(workdir / "heads.jsonl", start, end)
    refused = since_accept(accepts, answers, status=503)
    healthz = since_accept(accepts, answers, status=200, path="/healthz")
    head = since_accept(accepts, heads, first=True)
    # From the head's first read, the moment the gateway could see the request: a
    # load client that sends late is not counted against the gateway.
    seen = since_head(accepts, heads, answers, status=503)
    # The client read its 503 this long after the gateway wrote it.
    lag = []
    for row in rows:
        if row[4] == 503 and len(row) > 7:
            written = [a[0] for a in answers.get(row[7], ()) if a[0] <= row[2]]
            if written:
                lag.append(row[2] - written[-1])
    out: dict[str, Any] = {"accepted": sum(len(a) for a in accepts.values())}
    named = (("refused", refused), ("healthz", healthz), ("head", head), ("seen", seen))
    for name, spans in named:
        wall, wall99 = _top([s[0] for s in spans])
        cpu, cpu99 = _top([s[1] for s in spans])
        out |= {
            f"{name}_written_max_ms": _ms(wall),
            f"{name}_written_p99_ms": _ms(wall99),
            f"{name}_written_cpu_max_ms": _ms(cpu),
            f"{name}_written_cpu_p99_ms": _ms(cpu99),
        }
    out["client_read_lag_max_ms"] = _ms(max(lag, default=None))
    return out
