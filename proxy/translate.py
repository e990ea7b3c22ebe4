"""The ``n`` fan-out for providers that make one image per call: single-image results
merged into one, usage and cost summed.

What a provider's reply becomes (``Encoded``, ``images_result``) lives with the
providers, in ``proxy.providers._results``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import msgspec

from proxy.errors import ProxyError
from proxy.models import (
    EditJob,
    EditResult,
    TokenDetails,
    Usage,
)

_encode = msgspec.json.encode
T = TypeVar("T")


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
