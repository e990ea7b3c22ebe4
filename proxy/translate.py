"""Results every adapter shares: OpenAI-shaped bodies from image bytes or URLs, and the
``n`` fan-out for providers that make one image per call.

``data[]`` always holds what the client's ``response_format`` asks for (``b64_json`` by
default, as OpenAI): raw bytes are base64-encoded, a provider URL is fetched through the
provider's own ``Upstream`` when the client wants base64 (``proxy.downloads``: only on
the provider's allowed hosts, no credentials, and only an image). A client asking for ``url``
from a provider that only answers bytes gets a ``data:`` URL (the gateway stores
nothing, so it has no URL of its own to hand out).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NamedTuple, TypeVar

import msgspec

from proxy.downloads import download
from proxy.errors import ProxyError
from proxy.images import b64, require_stored, sniff
from proxy.models import (
    EditJob,
    EditResult,
    ImageInput,
    TokenDetails,
    Usage,
)
from proxy.upstream import Upstream


class Encoded(NamedTuple):
    """An image the provider already sent as base64: passed on without re-encoding."""

    b64: str
    content_type: str = "image/png"


# One produced image: its bytes, base64 from the provider, or a URL where it left it.
Output = bytes | Encoded | str

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


class _Shape(msgspec.Struct):
    data: list[msgspec.Raw]
    created: int | None = None


_shape = msgspec.json.Decoder(_Shape)


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None and b is None else (a or 0) + (b or 0)


def _add_details(a: TokenDetails | None, b: TokenDetails | None) -> TokenDetails | None:
    if a is None or b is None:
        return a or b
    return TokenDetails(
        text_tokens=_add(a.text_tokens, b.text_tokens),
        image_tokens=_add(a.image_tokens, b.image_tokens),
    )


def sum_usage(usages: Sequence[Usage | None]) -> Usage | None:
    """Token counts added field by field; ``None`` if any call reported none."""
    if not usages or any(u is None for u in usages):
        return None
    total = Usage()
    for u in usages:
        assert u is not None
        total = Usage(
            input_tokens=_add(total.input_tokens, u.input_tokens),
            output_tokens=_add(total.output_tokens, u.output_tokens),
            total_tokens=_add(total.total_tokens, u.total_tokens),
            input_tokens_details=_add_details(
                total.input_tokens_details, u.input_tokens_details
            ),
            output_tokens_details=_add_details(
                total.output_tokens_details, u.output_tokens_details
            ),
        )
    return total


def merge_results(results: Sequence[EditResult]) -> EditResult:
    """One result holding every image of ``results``; usage and cost summed."""
    shapes = [_shape.decode(r.body) for r in results]
    usage = sum_usage([r.usage for r in results])
    costs = [r.cost for r in results if r.cost is not None]
    body: dict[str, Any] = {
        "created": shapes[0].created or int(time.time()),
        "data": [raw for s in shapes for raw in s.data],
    }
    if usage is not None:
        body["usage"] = usage
    return EditResult(
        body=_encode(body),
        images=sum(r.images for r in results),
        usage=usage,
        cost=round(sum(costs), 8) if len(costs) == len(results) else None,
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


async def fan_out(
    job: EditJob, call: Callable[[EditJob], Coroutine[Any, Any, EditResult]]
) -> EditResult:
    """``n`` parallel single-image calls merged into one result.

    A failure is raised once every call has ended, not by cancelling the others: a call
    already sent is billed whether or not the proxy waits for it, and waiting lets the
    key's budget be charged for exactly the calls that made an image (``proxy.budget``).
    """
    single = msgspec.structs.replace(job, n=None)
    outcomes = await asyncio.gather(
        *(call(single) for _ in range(job.n or 1)), return_exceptions=True
    )
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures:
        raise next((f for f in failures if isinstance(f, ProxyError)), failures[0])
    return merge_results([o for o in outcomes if not isinstance(o, BaseException)])


def _first_error(eg: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in eg.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if isinstance(exc, ProxyError):
            return exc
    return eg.exceptions[0]


async def inline_base64(image: ImageInput, *, provider: str, param: str) -> str:
    """An input image as base64 for JSON upstreams; a client's data URL is reused."""
    image = require_stored(image, provider=provider, param=param)
    if image.data_url is not None:
        return image.data_url.partition(",")[2]
    return b64(await image.read())
