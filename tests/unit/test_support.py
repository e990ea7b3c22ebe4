"""Logging, background tasks and capability checks."""

from __future__ import annotations

import asyncio
import logging

import msgspec
import pytest

from proxy.dispatch import check_inputs, check_job
from proxy.errors import InvalidRequest
from proxy.logs import JsonFormatter, setup_logging
from proxy.models import EditJob, FileRef, StoredImage
from proxy.providers.base import Capabilities
from proxy.tasks import TaskGroup


def test_json_formatter_merges_fields_and_exceptions() -> None:
    record = logging.LogRecord(
        "imagegate", logging.INFO, "f", 1, "hello %s", ("you",), None
    )
    record.fields = {"status": 200, "provider": "openai"}
    out = msgspec.json.decode(JsonFormatter().format(record))
    assert out["msg"] == "hello you"
    assert out["status"] == 200
    assert out["level"] == "info"
    assert out["ts"].endswith("Z")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        err = logging.LogRecord("x", logging.ERROR, "f", 1, "bad", (), sys.exc_info())
    assert "ValueError: boom" in msgspec.json.decode(JsonFormatter().format(err))["exc"]


def test_setup_logging_installs_one_json_handler() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("WARNING")
        assert len(root.handlers) == 1
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        assert root.level == logging.WARNING
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


async def test_task_group_keeps_and_cancels() -> None:
    group = TaskGroup()
    done = asyncio.Event()

    async def quick() -> int:
        done.set()
        return 1

    task = group.spawn(quick(), name="quick")
    assert await task == 1
    await asyncio.sleep(0)
    assert len(group) == 0
    forever = group.spawn(asyncio.sleep(3600), name="forever")
    assert len(group) == 1
    await group.close()
    assert forever.cancelled()


def job(**kw: object) -> EditJob:
    base: dict[str, object] = {
        "operation": "edit", "provider": "p", "model": "m", "prompt": "x",
        "source": "json", "images": (StoredImage("image/png", 10, "a"),),
    }  # fmt: skip
    base.update(kw)
    return EditJob(**base)  # type: ignore[arg-type]


def check_capabilities(job: EditJob, caps: Capabilities, *, provider: str) -> None:
    check_job(job, caps, provider=provider)
    check_inputs(job, caps, provider=provider)


@pytest.mark.parametrize(
    ("caps", "kw", "param"),
    [
        (Capabilities(edit=False), {}, "model"),
        (Capabilities(generate=False), {"operation": "generate", "images": ()}, "model"),
        (Capabilities(max_images=1), {"images": (FileRef("a"), FileRef("b"))}, "images"),
        (Capabilities(mask=False), {"mask": FileRef("m")}, "mask"),
        (Capabilities(image_types=frozenset({"image/jpeg"})), {}, "images[0]"),
        (Capabilities(max_image_bytes=5), {}, "images[0]"),
        (Capabilities(max_image_bytes=5), {"images": (), "mask": StoredImage("image/png", 9, "")}, "mask"),
    ],
)  # fmt: skip
def test_capabilities_refuse_before_sending(
    caps: Capabilities, kw: dict[str, object], param: str
) -> None:
    with pytest.raises(InvalidRequest) as exc:
        check_capabilities(job(**kw), caps, provider="p")
    assert exc.value.param == param


def test_capabilities_accept() -> None:
    check_capabilities(job(mask=FileRef("m")), Capabilities(), provider="p")
