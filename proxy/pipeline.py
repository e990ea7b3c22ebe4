"""The synchronous pipeline between a validated job and its JSON answer, without the
web request (its caller hands it the app's ``Resources``): resolve the route,
dispatch (``proxy.dispatch``), bill (``proxy.accounting``), redact, links, and the
answer's bytes.

``proxy.handlers`` runs it for a request and ``proxy.jobs.runner`` for an async job,
so a job's result is byte for byte what the synchronous call answers.
"""

from __future__ import annotations

import msgspec

from proxy import dispatch, retirements
from proxy.accounting import bill, bill_answered, splice, splice_parts
from proxy.budget import Hold
from proxy.context import RequestContext
from proxy.errors import ProxyError
from proxy.guard import authorize
from proxy.held import WHOLE
from proxy.models import EditJob, EditResult
from proxy.passthrough import Relay
from proxy.result_links import Origin, ResultLinks
from proxy.routing import Route
from proxy.state import Resources
from proxy.tempfiles import UploadSet

_encode = msgspec.json.encode


def route_for(res: Resources, ctx: RequestContext, model: str) -> Route:
    """The route of ``model`` for the context's key: 403 if the key may not use it,
    410 (or the replacement) if it was retired; labels the context."""
    ctx.model = model  # logged even when it names nothing served
    route = res.router.resolve(model)
    authorize(res.keys, ctx, f"{route.provider}/{route.model}")  # an alias's
    ctx.provider = route.provider
    route = retirements.apply(
        route,
        res.prices.catalogue,
        mode=res.config.lifecycle,
        ctx=ctx,
        metrics=res.metrics,
    )
    if route.price_key in res.prices:
        ctx.model_label = route.price_key
    return route


def prepare(
    res: Resources, job: EditJob, key: str | None
) -> tuple[EditJob, ResultLinks | None]:
    """The job as it is sent (results asked as base64 when they become links, the
    key's hashed client id) and the links, when the answer's images become links."""
    links = res.links
    if links is not None and not links.wanted(job):
        links = None
    elif links is not None:
        job = links.as_base64(job)  # then stored and linked, whatever the model
    if key is not None:
        job = msgspec.structs.replace(job, client_id=res.keys.client_id(key))
    return job, links


def keeps(res: Resources, links: ResultLinks | None) -> bool:
    """The answer's images are stored (links, or ``results.keep``): it is held whole."""
    kept = res.links
    return links is not None or (kept is not None and kept.keeps)


async def run(
    res: Resources,
    route: Route,
    job: EditJob,
    *,
    key: str | None,
    hold: Hold | None,
    uploads: UploadSet | None,
    ctx: RequestContext,
    relay: Relay | None = None,
) -> dispatch.Answer:
    """The dispatch's answer; when it fails after some fanned-out calls answered,
    what those cost is accounted on ``ctx`` and in the metrics before the error
    goes on (the provider bills them whatever the request's outcome)."""
    mine = dispatch.Request(uploads=uploads, key=key, hold=hold, relay=relay)
    try:
        return await dispatch.run(res.services, mine, route, job)
    except ProxyError:
        if mine.answered:
            bill_answered(res.metrics, res.prices, ctx, mine.answered)
        raise


async def finish(
    res: Resources,
    ctx: RequestContext,
    route: Route,
    job: EditJob,
    answer: dispatch.Answer,
    links: ResultLinks | None,
) -> tuple[Route, EditResult, float | None]:
    """A whole (not relayed) answer billed, redacted and linked: the route that
    answered, the result, its cost."""
    answered, result = answer.route, answer.result
    assert result is not None
    if answered is not route:
        # Labelled and logged as the fallback that answered.
        route_for(res, ctx, f"{answered.provider}/{answered.model}")
    cost = bill(res.metrics, res.prices, ctx, answered, result, job)
    # A success reply may echo our credentials too (a debug member, a fingerprint):
    # the provider's own members are relayed, so they are redacted like an error's.
    redactor = res.redactor
    if len(result.body) > WHOLE:  # the scan in a worker thread (it drops the GIL)
        body = await redactor.data_off_loop(result.body)
    else:
        body = redactor.data(result.body)
    result = msgspec.structs.replace(result, body=body)
    kept = res.links
    if kept is not None and (links is not None or kept.keeps):
        # Links when asked for; with results.keep the images are stored in any case.
        owner = ctx.key if res.keys else None
        origin = Origin(owner, answered.provider, answered.model)
        result = await kept.convert(result, origin, linking=links is not None)
    return answered, result, cost


def json_body(answered: Route, result: EditResult, cost: float | None) -> bytes:
    """The JSON answer: the provider's object plus ``provider`` and ``cost``."""
    members = b'"provider":' + _encode(answered.provider) + b',"cost":' + _encode(cost)
    return splice(result.body, members)


def json_parts(
    answered: Route, result: EditResult, cost: float | None
) -> tuple[memoryview, bytes]:
    """``json_body`` as pieces (the provider's object a view, then the members): a
    large answer is written piece by piece, never joined (``proxy.held``)."""
    members = b'"provider":' + _encode(answered.provider) + b',"cost":' + _encode(cost)
    return splice_parts(result.body, members)
