"""The pure parts of async jobs: the Prefer header, webhook secrets and signatures
(checked against the Standard Webhooks reference library), the job view, and the
in-process store and queue bounds."""

from __future__ import annotations

import base64
import logging
import time

import msgspec
import pytest
from standardwebhooks import Webhook

from proxy.errors import Overloaded
from proxy.jobs.config import KeyWebhook, Webhooks
from proxy.jobs.prefer import preferences
from proxy.jobs.queue import Delivery, MemoryQueue
from proxy.jobs.records import (
    Input,
    JobRecord,
    accepted,
    reference,
    view,
)
from proxy.jobs.store import MemoryJobs
from proxy.jobs.webhooks import headers, parse_secret, secrets_from
from proxy.models import FileRef, RemoteImage, StoredImage

KEY = b"k" * 24
SECRET = "whsec_" + base64.b64encode(KEY).decode()


@pytest.mark.parametrize(
    ("header", "names"),
    [
        ("respond-async", {"respond-async"}),
        ("Respond-Async, wait=10", {"respond-async", "wait"}),
        ('return=minimal; foo="a,b"', {"return", 'b"'}),
        ("handling=lenient,respond-async ;x=1", {"handling", "respond-async"}),
        (" , ", set()),
    ],
)
def test_preference_names(header: str, names: set[str]) -> None:
    assert preferences(header) == names


def test_secrets_parse_and_malformed_ones_are_refused() -> None:
    assert parse_secret(SECRET) == KEY
    assert parse_secret(base64.b64encode(KEY).decode()) == KEY  # prefix optional
    for bad in ("whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(ValueError, match=r"base64|shorter"):
            parse_secret(bad)


def test_secrets_come_from_the_environment_and_gaps_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = Webhooks(
        keys={
            "a": KeyWebhook(secret_env="A_SECRET"),
            "b": KeyWebhook(secret_env="B_SECRET"),
            "c": KeyWebhook(secret_env="C_SECRET"),
            "d": KeyWebhook(url="https://example.com/hook"),
        }
    )
    with caplog.at_level(logging.WARNING):
        found = secrets_from(config, {"A_SECRET": SECRET, "C_SECRET": "whsec_???"})
    assert found == {"a": KEY}
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "B_SECRET is not set" in logged
    assert "C_SECRET is not whsec_" in logged
    assert SECRET not in logged


def test_signatures_verify_with_the_reference_library() -> None:
    body = b'{"id":"imgjob_1","status":"succeeded"}'
    now = int(time.time())
    sent = headers(KEY, "msg_imgjob_1", now, body)
    assert Webhook(SECRET).verify(body, sent) == msgspec.json.decode(body)
    assert sent["webhook-signature"].startswith("v1,")


def _record(**fields: object) -> JobRecord:
    base: dict[str, object] = {
        "id": "imgjob_1",
        "key": None,
        "created_at": 1,
        "model": "openai/gpt-image-2",
        "fields": {},
    }
    return msgspec.convert({**base, **fields}, JobRecord)


def test_the_view_holds_the_result_bytes_unchanged() -> None:
    result = b'{"data":[{"b64_json":"QUJD"}],"provider":"openai","cost":0.01}'
    shown = view(_record(state="succeeded", status_code=200), result)
    assert shown.endswith(b',"result":' + result + b"}")
    assert msgspec.json.decode(shown)["result"] == msgspec.json.decode(result)
    assert msgspec.json.decode(accepted(_record())) == {
        "id": "imgjob_1",
        "object": "image.job",
        "status": "queued",
        "created_at": 1,
    }
    assert _record().owner == "anonymous"
    assert _record(key="team-a").owner == "team-a"


def test_inputs_are_kept_as_references() -> None:
    assert reference(RemoteImage("https://x/a.png")) == Input(
        "remote", url="https://x/a.png"
    )
    assert reference(FileRef("file-1")) == Input("file", file_id="file-1")
    image = StoredImage("image/png", 3, "a.png", data=b"abc", b64=b"", field="image")
    assert reference(image, "f-9") == Input(
        "stored", file_id="f-9", content_type="image/png", size=3,
        filename="a.png", field="image", data_url=True,
    )  # fmt: skip


async def test_the_memory_store_keeps_at_most_max_kept_dropping_ended_ones() -> None:
    store = MemoryJobs(ttl_s=3600, max_kept=2)
    now = int(time.time())
    first = _record(id="j1", created_at=now, state="succeeded")
    await store.create(first, max_open=100)
    await store.create(_record(id="j2", created_at=now), max_open=100)
    await store.create(_record(id="j3", created_at=now), max_open=100)
    assert await store.get("j1") is None  # ended: dropped first
    await store.create(_record(id="j4", created_at=now), max_open=100)
    assert [r.id for r in (await store.page("anonymous", limit=10, after=None))[0]] == [
        "j4",
        "j3",
        "j2",
    ]  # none ended: kept (queued jobs are bounded by max_queued)
    assert await store.page("anonymous", limit=10, after="gone") == ([], False)
    assert not await store.transition(_record(id="gone"), ("queued",))
    old = MemoryJobs(ttl_s=10, max_kept=10)
    await old.create(_record(id="old", created_at=now - 60), max_open=100)
    assert await old.get("old") is None
    await old.create(_record(id="new", created_at=now), max_open=100)
    assert await old.result("old") is None


async def test_the_memory_queue_is_bounded() -> None:
    queue = MemoryQueue(max_queued=1)
    await queue.put("a")
    with pytest.raises(Overloaded) as refused:
        await queue.put("b")
    assert refused.value.code == "job_queue_full"
    assert refused.value.headers["Retry-After"]
    taken = await queue.receive()
    assert taken == Delivery("a", "")
    depth, age = await queue.depth()
    assert depth == 1
    assert age >= 0
    await queue.renew(taken)
    await queue.ack(taken)
    assert await queue.depth() == (0, 0.0)
