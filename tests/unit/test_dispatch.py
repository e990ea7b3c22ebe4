"""``dispatch.plan``: what running a job takes on a provider, decided without I/O."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.dispatch import Plan, plan
from proxy.models import EditJob, FileRef, RemoteImage, StoredImage
from proxy.providers.base import Capabilities

STORED = StoredImage("image/png", 10, "/tmp/a")


def job(**kw: Any) -> EditJob:
    base: dict[str, Any] = {
        "operation": "edit", "provider": "p", "model": "m", "prompt": "x",
        "source": "json", "images": (STORED,),
    }  # fmt: skip
    base.update(kw)
    return EditJob(**base)


def test_plain_job_is_one_call_with_nothing_to_resolve() -> None:
    assert plan(job(), Capabilities()) == Plan(stream=False, fan_out=False, resolve=())


@pytest.mark.parametrize(
    ("stream", "streaming", "want"),
    [(True, True, True), (True, False, False), (False, True, False)],
)
def test_stream_only_when_asked_and_the_provider_streams(
    stream: bool, streaming: bool, want: bool
) -> None:
    assert plan(job(stream=stream), Capabilities(streaming=streaming)).stream is want


@pytest.mark.parametrize(
    ("n", "native_n", "want"),
    [(4, False, True), (4, True, False), (1, False, False), (None, False, False)],
)
def test_fan_out_when_the_provider_makes_one_image_per_call(
    n: int | None, native_n: bool, want: bool
) -> None:
    assert plan(job(n=n), Capabilities(native_n=native_n)).fan_out is want


def test_references_are_resolved_urls_and_file_ids_alike() -> None:
    refs = job(
        images=(STORED, FileRef("file-1"), RemoteImage("https://x.test/a.png")),
        mask=FileRef("file-2"),
    )
    want = ("images[1]", "images[2]", "mask")
    assert plan(refs, Capabilities()).resolve == want
    # A provider that fetches URLs itself still has them checked (their scheme).
    assert plan(refs, Capabilities(image_urls=True, file_ids=True)).resolve == want


def test_multipart_uploads_need_no_resolving() -> None:
    assert plan(job(source="multipart"), Capabilities()).resolve == ()
