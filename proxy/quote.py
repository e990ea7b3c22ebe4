"""``POST /v3/images/quote``: what an edit or a generation would cost, without sending
it and without spending budget.

The body is an edit's (JSON or multipart) or a generation's (JSON). Which one: the
``operation`` member (``"edit"`` or ``"generate"``) when given; otherwise a body with
``images`` (or any multipart body, as only edits are multipart) is an edit, any other
a generation. It is validated as that request would be (the same 400s naming the
field, the model's route, key permissions, retirements) and checked against what the
provider takes; nothing goes upstream.

The answer's ``min_cost`` and ``max_cost`` come from ``proxy.catalogue.bound``, the
function the budget reserves with, so ``max_cost`` is what a budgeted key needs room
for. Both are null, with the reason in ``notes``, when the model's price (or a tier
the request may land on) is not published; ``notes`` also names charges known only
from the reply (input image tokens, thinking) that the range leaves out.

A multipart quote does not keep its files: each image part is read up to its header
(its type and pixel size, for prices per input megapixel) and the rest is counted
and dropped. A JSON quote reads the size of its ``data:`` images; files and URLs are
not fetched, so their sizes are not known.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import msgspec
from aiohttp import hdrs, web

from proxy.bodystream import request_body
from proxy.catalogue.bound import ask_of, bounds
from proxy.catalogue.cost import usd
from proxy.catalogue.measure import HEAD_BYTES, input_sizes
from proxy.catalogue.schema import Price, TokensPerImage, Verdict
from proxy.config import Limits
from proxy.dispatch import check_job
from proxy.errors import InvalidRequest
from proxy.formreader import FormReader, Part, boundary_of
from proxy.handlers import _job as job_of
from proxy.handlers import _route as route_of
from proxy.images import SNIFF_BYTES, require_image
from proxy.models import (
    EDIT_FIELDS,
    GENERATE_FIELDS,
    EditJob,
    EditRequest,
    GenerateRequest,
    StoredImage,
)
from proxy.parsing import (
    Chunks,
    check_file,
    convert,
    read_form,
    read_json,
    require_json_or_multipart,
    split_known,
)
from proxy.providers.base import capabilities_of
from proxy.refs import resolve_ref
from proxy.routing import Route
from proxy.state import CONFIG, PRICES

_encode = msgspec.json.encode


class QuotePricing(msgspec.Struct, frozen=True, omit_defaults=True):
    """The catalogue row the quote comes from: its price in the provider's shape."""

    shape: str | None
    price: Price | None
    tokens_per_image: TokensPerImage | None = None
    verdict: Verdict | None = None
    note: str | None = None
    source: list[str] = []
    checked: dt.date | None = None


class Quote(msgspec.Struct, frozen=True):
    model: str
    operation: Literal["edit", "generate"]
    min_cost: float | None
    max_cost: float | None
    pricing: QuotePricing | None
    notes: list[str]
    currency: str = "USD"
    object: str = "image.quote"


def _operation(raw: dict[str, Any]) -> Literal["edit", "generate"]:
    op = raw.pop("operation", None)
    if op is None:
        return "edit" if "images" in raw else "generate"
    if op not in ("edit", "generate"):
        raise InvalidRequest(
            "'operation' must be 'edit' or 'generate'", param="operation"
        )
    return "edit" if op == "edit" else "generate"


async def _json(request: web.Request, limits: Limits) -> tuple[Route, EditJob]:
    raw = await read_json(request, limits)
    op = _operation(raw)
    if op == "generate":
        fields, extra = split_known(raw, GENERATE_FIELDS)
        gen = convert(fields, GenerateRequest)
        route = route_of(request, gen.model)
        return route, job_of(
            gen, route, operation="generate", source="json", extra=extra
        )
    fields, extra = split_known(raw, EDIT_FIELDS)
    body = convert(fields, EditRequest)
    route = route_of(request, body.model)
    images = tuple(
        resolve_ref(ref, param=f"images[{i}]") for i, ref in enumerate(body.images)
    )
    mask = resolve_ref(body.mask, param="mask", mask=True) if body.mask else None
    job = job_of(
        body, route, operation="edit", source="json", extra=extra,
        images=images, mask=mask,
    )  # fmt: skip
    return route, job


async def _multipart(request: web.Request, limits: Limits) -> tuple[Route, EditJob]:
    async def peek(reader: Chunks, part: Part, name: str) -> StoredImage:
        """The part's type and header kept, the rest counted and dropped."""
        param = "mask" if name == "mask" else "image"
        head = b""
        size = 0
        while chunk := await reader.read():
            size += len(chunk)
            check_file(name, size, limits)
            if len(head) < HEAD_BYTES:
                head += bytes(chunk[: HEAD_BYTES - len(head)])
        if not head:
            raise InvalidRequest(f"file part '{name}' is empty", param=param)
        kind = require_image(head[:SNIFF_BYTES], param=param, mask=param == "mask")
        return StoredImage(
            content_type=kind, size=size, filename=part.filename or "",
            data=head, field=name,
        )  # fmt: skip

    timeout, cap = limits.client_idle_timeout_s, limits.body_cap
    async with request_body(request, timeout, cap) as body:
        boundary = boundary_of(request.headers.get(hdrs.CONTENT_TYPE, ""))
        form = await read_form(FormReader(body, boundary), limits, peek)
    route = route_of(request, form.form.model)
    job = job_of(
        form.form, route, operation="edit", source="multipart", extra=form.extra,
        images=tuple(form.images), mask=form.mask,
    )  # fmt: skip
    return route, job


def quote(request: web.Request, route: Route, job: EditJob) -> Quote:
    caps = capabilities_of(route.adapter, route.model)
    check_job(job, caps, provider=route.provider)
    catalogue = request.app[PRICES].catalogue
    entry = None if catalogue is None else catalogue.get(route.price_key)
    ask = ask_of(job, native_n=caps.native_n)._replace(input_sizes=input_sizes(job))
    got = bounds(entry, ask)
    notes = [got.reason] if got.reason else []
    notes += [f"not included: {n}" for n in got.notes]
    pricing = None
    if entry is not None:
        pricing = QuotePricing(
            shape=None if entry.price is None else entry.price.shape(),
            price=entry.price,
            tokens_per_image=entry.tokens_per_image,
            verdict=entry.price_verdict,
            note=entry.price_note,
            source=entry.source,
            checked=entry.checked,
        )
    return Quote(
        model=f"{route.provider}/{route.model}",
        operation=job.operation,
        min_cost=None if got.low is None else usd(got.low),
        max_cost=None if got.high is None else usd(got.high),
        pricing=pricing,
        notes=notes,
    )


async def images_quote(request: web.Request) -> web.Response:
    limits = request.app[CONFIG].limits
    kind = require_json_or_multipart(request, multipart=True)
    if kind == "application/json":
        route, job = await _json(request, limits)
    else:
        route, job = await _multipart(request, limits)
    body = _encode(quote(request, route, job))
    return web.Response(body=body, content_type="application/json")
