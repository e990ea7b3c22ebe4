"""What a provider's ``parse`` hands back, and how it becomes the client's body.

``parse`` (pure) turns a reply into ``Outputs``: the images as the provider sent them
(bytes, base64 or a URL), its usage, or a whole OpenAI-shaped reply to relay as is.
``finish`` (I/O) makes the OpenAI ``ImagesResponse`` from them. ``data[]`` always holds
what the client's ``response_format`` asks for (``b64_json`` by default, as OpenAI):
raw bytes are base64-encoded, a provider URL is fetched through the provider's own
``Upstream`` when the client wants base64 (``proxy.downloads``: only on the provider's
allowed hosts, no credentials, and only an image). A client asking for ``url`` from a
provider that only answers bytes gets a ``data:`` URL (the gateway stores nothing, so
it has no URL of its own to hand out).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import msgspec

from proxy.downloads import download
from proxy.errors import ProxyError
from proxy.images import b64, sniff
from proxy.models import EditJob, EditResult, Usage

if TYPE_CHECKING:
    from proxy.upstream import Upstream


class Encoded(NamedTuple):
    """An image the provider already sent as base64: passed on without re-encoding."""

    b64: str
    content_type: str = "image/png"


# One produced image: its bytes, base64 from the provider, or a URL where it left it.
Output = bytes | Encoded | str


class Outputs(NamedTuple):
    """What ``parse`` found in a reply."""

    images: Sequence[Output] = ()
    usage: Usage | None = None
    # An OpenAI-shaped reply, validated and relayed without re-encoding its images.
    passthrough: EditResult | None = None


_encode = msgspec.json.encode
T = TypeVar("T")


async def _entry(
    item: Output, job: EditJob, upstream: Upstream, hosts: Sequence[str]
) -> dict[str, str]:
    want_url = job.response_format == "url"
    if isinstance(item, Encoded):
        if want_url:
            return {"url": f"data:{item.content_type};base64,{item.b64}"}
        return {"b64_json": item.b64}
    if isinstance(item, str):
        if want_url:
            return {"url": item}
        return {"b64_json": b64(await download(upstream, item, hosts=hosts))}
    if want_url:
        kind = sniff(item[:12]) or "image/png"
        return {"url": f"data:{kind};base64,{b64(item)}"}
    return {"b64_json": b64(item)}


async def images_result(
    outputs: Sequence[Output],
    *,
    job: EditJob,
    upstream: Upstream,
    usage: Usage | None = None,
    cost: float | None = None,
    extra: dict[str, Any] | None = None,
    hosts: Sequence[str] = (),
) -> EditResult:
    """An OpenAI ``ImagesResponse`` body from produced images, plus what pricing needs.

    ``hosts``: the ``scheme://host[:port]`` patterns URL outputs may be fetched from.
    """
    data = await _gather([_entry(item, job, upstream, hosts) for item in outputs])
    body: dict[str, Any] = {"created": int(time.time()), "data": data}
    if usage is not None:
        body["usage"] = usage
    if extra:
        body.update(extra)
    return EditResult(body=_encode(body), images=len(data), usage=usage, cost=cost)


async def finish(
    outputs: Outputs, *, job: EditJob, upstream: Upstream, hosts: Sequence[str] = ()
) -> EditResult:
    """The client's result from what ``parse`` found (downloads URL outputs if asked)."""
    if outputs.passthrough is not None:
        return outputs.passthrough
    return await images_result(
        outputs.images, job=job, upstream=upstream, usage=outputs.usage, hosts=hosts
    )


async def _gather(coros: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently (URL downloads); the first failure cancels the rest and is
    raised as is, so the client sees what a single call would have given."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]
    except BaseExceptionGroup as eg:
        raise _first_error(eg) from None
    return [t.result() for t in tasks]


def _first_error(eg: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in eg.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if isinstance(exc, ProxyError):
            return exc
    return eg.exceptions[0]
