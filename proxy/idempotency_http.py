"""``Idempotency-Key`` on the web layer: the header checked, the caller's scope, the
handler's answer captured and kept (``proxy.idempotency``), a repeat answered from the
store with ``Idempotent-Replayed: true``; and the ``Keeper``'s lifetime (``keeper_ctx``).

The capture is of the buffered answer ``handlers._answer`` builds (JSON bytes), or of
the error envelope the middleware would render; an idempotent request therefore stays
on the buffered reply path. A replay makes no upstream call and bills nothing; the
guard's admission (rpm, concurrency) still counts it as a request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from proxy.context import CONTEXT
from proxy.errors import InvalidRequest, ProxyError
from proxy.held import WHOLE, HeldResponse, joined
from proxy.idempotency import (
    HEADER,
    KEPT_HEADERS,
    Answer,
    Keeper,
    Store,
    Ticket,
    check_key,
    request_digest,
)
from proxy.idempotency_memory import MemoryStore
from proxy.middleware import render
from proxy.s3 import S3Client
from proxy.state import (
    CLIENT_KEYS,
    CONFIG,
    IDEMPOTENCY,
    LIFECYCLE,
    METRICS,
    REDACTOR,
    UPLOAD_STORE,
)
from proxy.upload_objects import ObjectStore

REPLAYED = "Idempotent-Replayed"


@dataclass(frozen=True, slots=True)
class Idem:
    """A request's checked key and its fingerprint (``idempotency.request_digest``)."""

    key: str
    fingerprint: str


def bound(
    request: web.Request, key: str | None, kind: str, canonical: Any
) -> Idem | None:
    """``key`` bound to the request's fingerprint (``kind``: "json" or "form", and the
    body's canonical form); None without a key."""
    if key is None:
        return None
    return Idem(key, request_digest(request.method, request.path, kind, canonical))


def requested(request: web.Request) -> str | None:
    """The request's checked ``Idempotency-Key``; None without one, or when
    ``idempotency.enabled`` is off (the header is then ignored)."""
    if IDEMPOTENCY not in request.app:
        return None
    return check_key(request.headers.get(HEADER))


def scope(request: web.Request) -> str:
    """Whose keys these are: the client key's name; without client keys the client's
    address (``request.remote``, as backpressure counts it: behind a proxy, one for
    all clients)."""
    if request.app[CLIENT_KEYS]:
        return f"key {request[CONTEXT].key}"
    return f"address {request.remote}"


def _captured(resp: web.StreamResponse, body: bytes | None = None) -> Answer:
    if body is None:
        assert isinstance(resp, web.Response)
        assert isinstance(resp.body, bytes)
        body = resp.body
    headers = [
        (str(k), v) for k, v in resp.headers.items() if k.lower() in KEPT_HEADERS
    ]
    return Answer(resp.status, headers, body)


async def _finish(keeper: Keeper, ticket: Ticket, resp: web.StreamResponse) -> None:
    if not isinstance(resp, HeldResponse):
        await keeper.finish(ticket, _captured(resp))
    elif keeper.keeps(resp.size):  # joined in a worker thread
        await keeper.finish(ticket, _captured(resp, await joined(resp.pieces)))
    else:  # not kept: its body is not needed, only its size
        await keeper.finish(ticket, _captured(resp, b""), size=resp.size)


def _replay(answer: Answer) -> web.StreamResponse:
    resp: web.StreamResponse
    if len(answer.body) > WHOLE:  # a large one from the bucket: written in pieces
        resp = HeldResponse(
            (answer.body,),
            status=answer.status,
            content_type="application/octet-stream",  # web.Response's default
        )
    else:
        resp = web.Response(status=answer.status, body=answer.body)
    for name, value in answer.headers:
        resp.headers[name] = value
    resp.headers[REPLAYED] = "true"
    return resp


async def answer(
    request: web.Request,
    idem: Idem,
    stream: bool,
    run: Callable[[], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """``run()``'s answer, kept under the key; or the answer kept for a repeat."""
    if stream:
        raise InvalidRequest(
            f"the {HEADER} header is not supported with 'stream': true; send the "
            "request without it, or without streaming",
            param=HEADER,
            code="idempotency_stream_unsupported",
        )
    keeper = request.app[IDEMPOTENCY]
    got = await keeper.begin(scope(request), idem.key, idem.fingerprint)
    if isinstance(got, Answer):
        return _replay(got)
    lifecycle = request.app[LIFECYCLE]
    work = _first(request, keeper, got, run)
    return await keeper.to_the_end(work, lambda: lifecycle.draining)


async def _first(
    request: web.Request,
    keeper: Keeper,
    ticket: Ticket,
    run: Callable[[], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    async with keeper.running(ticket):
        try:
            resp = await run()
        except ProxyError as exc:
            # Kept as the middleware renders it, which it still does.
            await keeper.finish(ticket, _captured(render(exc, request.app[REDACTOR])))
            raise
        await _finish(keeper, ticket, resp)
        return resp


class ObjectSpill:
    """Large answers in the upload store's bucket (``idempotency.object_prefix``)."""

    def __init__(self, client: S3Client) -> None:
        self._client = client

    async def put(self, key: str, body: bytes) -> None:
        await self._client.put(key, body, {"Content-Type": "application/vnd.msgpack"})

    async def get(self, key: str) -> bytes | None:
        return await self._client.read(key)


async def keeper_ctx(app: web.Application) -> AsyncIterator[None]:
    """The ``Keeper`` (``state.IDEMPOTENCY``): Redis when ``redis_url`` is set, else memory.
    Registered after the upload store's context, whose bucket it may use."""
    config = app[CONFIG]
    settings = config.idempotency
    if not settings.enabled:
        yield
        return
    store: Store
    if config.redis_url is not None:
        from proxy.idempotency_redis import RedisKeys

        store = RedisKeys(config.redis_url, config.redis, settings, app[METRICS])
    else:
        store = MemoryStore(settings)
    uploads = app.get(UPLOAD_STORE)
    spill = ObjectSpill(uploads.client) if isinstance(uploads, ObjectStore) else None
    keeper = Keeper(settings, store, app[METRICS], spill)
    app[IDEMPOTENCY] = keeper
    try:
        yield
    finally:
        await keeper.close()
