"""``bench/gateway_log.py``: the in-flight benchmark's times from the gateway's own
logs, each event matched to its connection's accept by the peer's port."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import gateway_log


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_events_are_timed_from_their_own_connections_accept(tmp_path: Path) -> None:
    # Port 7 is used twice (ports recur): each answer goes with the accept before it.
    accepts = gateway_log.read(
        _write(tmp_path / "a", ["[10.0, 7, 1.0]", "[10.5, 8, 1.2]", "[14.0, 7, 2.0]"]),
        start=9.0, end=20.0,
    )  # fmt: skip
    answers = gateway_log.read(
        _write(
            tmp_path / "b",
            [
                '[10.25, 7, 1.1, 503, "/v3/images/edits"]',
                '[10.75, 8, 1.5, 200, "/healthz"]',
                '[14.5, 7, 2.4, 503, "/v3/images/edits"]',
            ],
        ),
        start=9.0, end=20.0,
    )  # fmt: skip
    refused = gateway_log.since_accept(accepts, answers, status=503)
    assert refused == [pytest.approx((0.25, 0.1)), pytest.approx((0.5, 0.4))]
    probes = gateway_log.since_accept(accepts, answers, status=200, path="/healthz")
    assert probes == [pytest.approx((0.25, 0.3))]


def test_first_keeps_one_event_per_connection(tmp_path: Path) -> None:
    accepts = gateway_log.read(_write(tmp_path / "a", ["[1.0, 5, 0.5]"]), 0.0, 9.0)
    heads = gateway_log.read(
        _write(tmp_path / "h", ["[1.5, 5, 0.6]", "[1.25, 5, 0.55]", "[0.5, 5, 0.1]"]),
        0.0, 9.0,
    )  # fmt: skip
    # Read out of order, sorted; the read before the accept belongs to none.
    assert gateway_log.since_accept(accepts, heads, first=True) == [
        pytest.approx((0.25, 0.05))
    ]
    assert len(gateway_log.since_accept(accepts, heads)) == 1


def test_outside_the_burst_or_without_logs_nothing_counts(tmp_path: Path) -> None:
    path = _write(tmp_path / "a", ["[1.0, 5, 0.5]", "[30.0, 6, 0.9]"])
    assert set(gateway_log.read(path, 0.0, 9.0)) == {5}
    assert gateway_log.figures(tmp_path / "none", 0.0, 9.0, []) == {}


def test_a_503_is_timed_from_its_heads_first_read_too(tmp_path: Path) -> None:
    accepts = gateway_log.read(_write(tmp_path / "a", ["[1.0, 5, 0.5]"]), 0.0, 9.0)
    heads = gateway_log.read(
        _write(tmp_path / "h", ["[3.0, 5, 0.7]", "[3.5, 5, 0.75]"]), 0.0, 9.0
    )
    answers = gateway_log.read(
        _write(tmp_path / "b", ['[3.25, 5, 0.9, 503, "/v3/images/edits"]']), 0.0, 9.0
    )
    # The client sent its head 2 s after the accept: the gateway answered 0.25 s on.
    assert gateway_log.since_head(accepts, heads, answers, status=503) == [
        pytest.approx((0.25, 0.2))
    ]
    assert gateway_log.since_accept(accepts, answers, status=503) == [
        pytest.approx((2.25, 0.4))
    ]
