"""The access log's direct path writes the formatter's line, and steps aside for
anything else attached to the logging tree."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from proxy import logs

FIELDS: dict[str, Any] = {"request_id": "abc", "status": 200, "cost_usd": 0.04}


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, direct = root.handlers[:], root.level, logs._direct
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logs._direct = direct
    logs.access_log.setLevel(logging.NOTSET)


def _lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert text.endswith("\n")
    return [msgspec.json.decode(line) for line in text.splitlines()]


def test_direct_line_matches_the_formatter(root_restored: None, tmp_path: Path) -> None:
    path = tmp_path / "log"
    with path.open("w") as stream:
        logs.setup_logging("INFO", stream)
        assert logs._direct is not None
        assert logs._direct.alone()
        logs.log_access(FIELDS)
        # The same line through logging, as the fallback would write it.
        logs.access_log.info("request", extra={"fields": FIELDS})
    direct, formatted = _lines(path)
    for line in (direct, formatted):
        assert line.pop("ts").endswith("Z")
    assert direct == formatted == {
        "level": "info", "logger": "imagegate.access", "msg": "request", **FIELDS,
    }  # fmt: skip


def test_buffered_lines_keep_their_order(root_restored: None, tmp_path: Path) -> None:
    path = tmp_path / "log"
    with path.open("w", buffering=1 << 16) as stream:  # not flushed per line
        logs.setup_logging("INFO", stream)
        logging.getLogger("imagegate").warning("first")
        logs.log_access(FIELDS)
    first, second = _lines(path)
    assert first["msg"] == "first"
    assert second["msg"] == "request"


def test_another_handler_gets_the_record_instead(
    root_restored: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "log"
    with path.open("w") as stream:
        logs.setup_logging("INFO", stream)
        logging.getLogger().addHandler(caplog.handler)  # what a test or operator adds
        logs.log_access(FIELDS)
    (record,) = [r for r in caplog.records if r.name == "imagegate.access"]
    assert record.fields == FIELDS  # type: ignore[attr-defined]
    assert len(_lines(path)) == 1, "written once, by the handler"


def test_a_filter_or_level_is_honoured(root_restored: None, tmp_path: Path) -> None:
    path = tmp_path / "log"
    with path.open("w") as stream:
        logs.setup_logging("INFO", stream)
        logs.access_log.setLevel(logging.WARNING)
        logs.log_access(FIELDS)
        logs.access_log.setLevel(logging.NOTSET)
        quiet = logging.Filter("nothing-matches")
        logs.access_log.addFilter(quiet)
        try:
            logs.log_access(FIELDS)
        finally:
            logs.access_log.removeFilter(quiet)
    assert path.read_text() == ""


def test_a_stream_without_a_descriptor_uses_records(root_restored: None) -> None:
    stream = io.StringIO()
    logs.setup_logging("INFO", stream)
    assert logs._direct is None
    logs.log_access(FIELDS)
    assert msgspec.json.decode(stream.getvalue())["request_id"] == "abc"


@pytest.mark.parametrize(
    ("t", "text"),
    [
        (1764000000.9999, "2025-11-24T16:00:00.999Z"),
        (1764000001.0005, "2025-11-24T16:00:01.000Z"),  # the next second, re-formatted
        (1764000001.5, "2025-11-24T16:00:01.500Z"),  # the same second, from the cache
        (1764000000.25, "2025-11-24T16:00:00.250Z"),  # back again
    ],
)
def test_timestamp(t: float, text: str) -> None:
    assert logs.timestamp(t) == text


def test_text_that_is_not_unicode_does_not_lose_the_line(
    root_restored: None, tmp_path: Path
) -> None:
    path = tmp_path / "log"
    fields = {**FIELDS, "prompt": "a \ud800 hat", "model": {"x\udcff": ["\udfff"]}}
    with path.open("w") as stream:
        logs.setup_logging("INFO", stream)
        logs.log_access(fields)
        logs.access_log.info("request", extra={"fields": fields})
    direct, formatted = _lines(path)
    for line in (direct, formatted):
        assert line["prompt"] == "a \\ud800 hat"
        assert line["model"] == {"x\\udcff": ["\\udfff"]}
