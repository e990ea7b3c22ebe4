"""``Upstream``: one provider's pooled session, credentials, timeouts and metrics.

This is the only module that catches aiohttp client exceptions; it maps them to the
proxy's ``UpstreamError`` tree in one place (``proxy.upstream_reply.mapped``). Reply bodies are
read with a cap, so a misbehaving provider cannot exhaust memory. Authenticated calls
pass the provider's circuit breaker and retry what ``proxy.resilience`` calls safe; a
multipart ``Form`` makes a fresh payload for each try, reading its temp files again.

No call follows a redirect by itself: aiohttp would carry every credential header but
``Authorization`` to whatever host a ``Location`` names. A 3xx from a provider is a 502.
Credentials go only to the configured ``base_url``'s origin and the hosts its adapter
names (``KeyHosts``), checked here for every absolute URL, whoever built it. Result
files are fetched through ``bare_get`` (``proxy.downloads``), without credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import glob
import random
import time
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from typing import Any

import aiohttp

from proxy.context import add_upstream_time, trace_headers
from proxy.credentials import Auth, RequestSigner
from proxy.errors import (
    ProviderNotConfigured,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from proxy.formwriter import Form, Spliced, fresh_body
from proxy.hosts import host_allowed, origin
from proxy.metrics import Metrics, adder
from proxy.resilience import (
    RETRY_STATUSES,
    CircuitBreaker,
    RetryPolicy,
    backoff_s,
    retry_after_s,
)
from proxy.upstream_reply import (
    HELD_KWARG,
    UpstreamStream,
    map_errors,
    mapped,
    read_capped,
    read_whole,
)
from proxy.upstream_reply import (
    UpstreamResponse as UpstreamResponse,  # adapters import it from here
)

_NO_RETRY = RetryPolicy(attempts=1)


class Upstream:
    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        session: aiohttp.ClientSession,
        auth: Auth | None,
        key_env: str,
        metrics: Metrics,
        max_response_bytes: int,
        retry: RetryPolicy = _NO_RETRY,
        breaker: CircuitBreaker | None = None,
        key_hosts: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        # Where credentials may go: the API's own origin (as a literal pattern) and
        # the adapter's extra hosts (shell-style patterns of scheme://host[:port]).
        own = origin(self.base_url)
        self._key_hosts = [glob.escape(own)] if own else []
        self._key_hosts += key_hosts
        self.session = session
        self._auth = auth
        # Decided once: a runtime Protocol check per request is measurable CPU.
        self._signer = auth if isinstance(auth, RequestSigner) else None
        self._key_env = key_env
        self._metrics = metrics
        self.max_response_bytes = max_response_bytes
        self._duration = metrics.observe(metrics.upstream_duration, name)
        self._received = metrics.upstream_received_bytes.labels(name)
        self._received_add = adder(self._received)
        # Counted once the reply has begun: by then the whole body was sent.
        self._sent = metrics.add(metrics.upstream_sent_bytes, name)
        self._retries = metrics.retries.labels(name)
        self._retry = retry
        self._breaker = breaker
        self._rng = random.Random()

    def url(self, path: str) -> str:
        if path.startswith("/"):
            return f"{self.base_url}{path}"
        if path.startswith(("https://", "http://")):
            return path
        # "@host" or "evil.com" after the base URL would change the host itself.
        raise AssertionError(f"not a path or an http(s) URL: {path[:40]!r}")

    def _require_key_host(self, path: str) -> None:
        """Refuse to send credentials to an absolute URL off the provider's own hosts
        (a URL a provider's reply named, for instance)."""
        if path.startswith("/") or host_allowed(path, self._key_hosts):
            return
        raise UpstreamProtocolError(
            f"provider '{self.name}' pointed at a URL outside its allowed hosts",
            provider=self.name,
            code="upstream_protocol_error",
        )

    def _redirected(self, status: int) -> UpstreamUnavailable:
        # The Location is not echoed: it may name an internal host.
        return UpstreamUnavailable(
            f"provider '{self.name}' answered with a redirect (HTTP {status}), which "
            "the gateway does not follow",
            provider=self.name,
            code="upstream_error",
        )

    async def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        if self._auth is None:
            raise ProviderNotConfigured(
                f"provider '{self.name}' has no API key: the gateway operator must set "
                f"{self._key_env}",
                code="provider_not_configured",
            )
        headers = dict(extra or {})
        headers.update(trace_headers())
        # Credentials last, so nothing the client forwarded can replace them.
        headers.update(await self._auth.headers())
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        authenticated: bool = True,
        **kwargs: Any,
    ) -> UpstreamResponse:
        """Send one request and read the whole (capped) reply.

        Authenticated calls go through the circuit breaker and the retry policy.
        """
        if not authenticated:
            sent = {**(headers or {}), **trace_headers()}
            resp = await self._send(method, path, sent, kwargs)
        else:
            resp = await self._authenticated(method, path, headers, kwargs)
        assert isinstance(resp, UpstreamResponse)  # not held: read whole
        return resp

    def open(
        self,
        method: str,
        path: str,
        *,
        held: int,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, UpstreamResponse | UpstreamStream]:
        """``request``, but a 2xx reply that may be over ``held`` bytes comes back
        unread, to be relayed and then closed; retries and breaker as for any reply.
        (The call itself, to await: a coroutine of its own would only forward.)"""
        kwargs[HELD_KWARG] = held
        return self._authenticated(method, path, headers, kwargs)

    async def _authenticated(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None,
        kwargs: dict[str, Any],
    ) -> UpstreamResponse | UpstreamStream:
        self._require_key_host(path)
        sent = await self._headers(headers)
        if self._signer is not None:
            data = kwargs.get("data", b"")
            if isinstance(data, Spliced):  # the signature hashes the whole body
                # In a thread: bytes.join copies megabytes without the GIL.
                data = await asyncio.to_thread(data.joined)
            assert isinstance(data, bytes), "a signed request needs a bytes body"
            sent = dict(await self._signer.sign(method, self.url(path), sent, data))
        breaker = self._breaker
        if breaker is None:
            return await self._with_retries(method, path, sent, kwargs)
        breaker.before()
        # Every call let through settles: a cancelled one gives no verdict.
        settle = breaker.neutral
        try:
            resp = await self._with_retries(method, path, sent, kwargs)
        except (UpstreamUnavailable, UpstreamTimeout, UpstreamProtocolError):
            settle = breaker.failure
            raise
        else:
            if resp.status != 429:
                settle = breaker.failure if resp.status >= 500 else breaker.success
            return resp
        finally:
            settle()

    async def _with_retries(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        kwargs: dict[str, Any],
    ) -> UpstreamResponse | UpstreamStream:
        policy = self._retry
        # Every body sent is bytes, Spliced or a Form (a fresh payload per send):
        # resendable.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + policy.deadline_s
        for tries in range(1, policy.attempts + 1):
            try:
                resp = await self._send(method, path, headers, kwargs)
            except UpstreamError as exc:
                if not exc.unsent or await _last(tries, policy, kwargs):
                    raise
                wait = backoff_s(policy, tries - 1, self._rng)
                if loop.time() + wait > deadline:
                    raise
            else:
                later = self._retry_after(resp, policy)
                if later is None or await _last(tries, policy, kwargs):
                    return resp
                if loop.time() + later > deadline:
                    return resp
                if isinstance(resp, UpstreamStream):  # pragma: no cover - 2xx only
                    await resp.close()
                wait = later
            self._retries.inc()
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _retry_after(
        self, resp: UpstreamResponse | UpstreamStream, policy: RetryPolicy
    ) -> float | None:
        """The wait before sending again after a 429/503 that says when; else None."""
        if resp.status not in RETRY_STATUSES:
            return None
        wait = retry_after_s(resp.headers.get("Retry-After"), now=time.time())
        if wait is None or wait > policy.max_retry_after_s:
            return None
        return wait + backoff_s(policy, 0, self._rng)

    async def _send(
        self, method: str, path: str, headers: dict[str, str], kwargs: dict[str, Any]
    ) -> UpstreamResponse | UpstreamStream:
        start = time.perf_counter()
        outcome = "error"
        form, sent = kwargs.get("data"), dict(kwargs)  # a copy: kwargs serves each try
        held = sent.pop(HELD_KWARG, None)
        kwargs, size = fresh_body(sent)
        r: aiohttp.ClientResponse | None = None
        try:
            # Not ``async with``: a relayed reply outlives this call.
            r = await self.session.request(
                method, self.url(path), headers=headers, allow_redirects=False, **kwargs
            )
            if isinstance(form, Form) and form.live:
                await form.replied(r)  # no reply is used before the client's body ends
                size = form.forwarded()
            self._sent(size)
            if 300 <= r.status < 400:
                outcome = "3xx"
                raise self._redirected(r.status)
            if held is not None and 200 <= r.status < 300 and not read_whole(r, held):
                stream = UpstreamStream(
                    self.name, r, self.max_response_bytes, self._received,
                    on_close=functools.partial(self._record, start),
                )  # fmt: skip
                r, outcome = None, ""  # the stream records when it is closed
                return stream
            body = await read_capped(r, self.max_response_bytes, self.name)
            self._received_add(len(body))
            outcome = f"{r.status // 100}xx"
            return UpstreamResponse(r.status, r.headers, body)
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Inline rather than map_errors (a generator context manager per call is
            # measurable). A body the gateway cut off raises why it did (a client's
            # failed check, or its leaving): not a provider failure.
            why = form.aborted() if isinstance(form, Form) else None
            if r is not None and r.connection and (sock := r.connection.transport):
                sock.abort()  # its unsent body would hold it open while unread
            raise why or mapped(self.name, exc) from exc
        finally:
            if r is not None:
                r.release()
            if outcome:
                self._record(start, outcome)

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[UpstreamStream]:
        """Send one request and hand out its reply unread, to be relayed as it arrives.

        Leaving the block before the reply ended closes the connection rather than
        returning it to the pool, so a client that went away frees the upstream.
        """
        self._require_key_host(path)
        sent = await self._headers(headers)
        kwargs, size = fresh_body(kwargs)
        breaker = self._breaker
        if breaker is not None:
            breaker.before()
        start = time.perf_counter()
        reply: UpstreamStream | None = None
        try:
            async with (
                map_errors(self.name),
                self.session.request(
                    method,
                    self.url(path),
                    headers=sent,
                    allow_redirects=False,
                    **kwargs,
                ) as r,
            ):
                self._sent(size)
                if 300 <= r.status < 400:
                    raise self._redirected(r.status)
                reply = UpstreamStream(
                    self.name, r, self.max_response_bytes, self._received
                )
                yield reply
        finally:
            outcome = "error" if reply is None else reply.outcome
            self._record(start, outcome)
            if breaker is not None:
                # Not retried: a stream may have reached the client. The breaker
                # hears failures (no reply, 5xx, broken stream) and successes.
                if outcome == "error" or outcome == "5xx":
                    breaker.failure()
                elif outcome in ("2xx", "4xx"):
                    breaker.success()
                else:
                    breaker.neutral()

    async def post(self, path: str, **kwargs: Any) -> UpstreamResponse:
        return await self.request("POST", path, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> UpstreamResponse:
        return await self.request("GET", path, **kwargs)

    @contextlib.asynccontextmanager
    async def bare_get(
        self, url: str, headers: Mapping[str, str]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One GET without credentials or redirect following, timed, counted and with
        its aiohttp errors mapped (``proxy.downloads`` reads result files with it)."""
        start = time.perf_counter()
        outcome = "error"
        try:
            async with (
                map_errors(self.name),
                self.session.get(url, headers=headers, allow_redirects=False) as r,
            ):
                outcome = f"{r.status // 100}xx"
                yield r
        finally:
            self._record(start, outcome)

    def _record(self, start: float, outcome: str) -> None:
        """One call's time (request total, histogram) and outcome counter."""
        elapsed = time.perf_counter() - start
        add_upstream_time(elapsed)
        self._duration(elapsed)
        metrics = self._metrics
        metrics.add(metrics.upstream_requests, self.name, outcome)(1)

    def received(self, size: int) -> None:
        self._received_add(size)


async def _last(tries: int, policy: RetryPolicy, kwargs: dict[str, Any]) -> bool:
    """No try after this one: the policy's last, or a forwarded image's form that
    cannot be sent again (the client's body, once it ended, is spooled: it can)."""
    data = kwargs.get("data")
    if isinstance(data, Form) and data.live:
        await data.settled(over=True)  # the client's error, if its body had one
    return tries == policy.attempts or (isinstance(data, Form) and not data.resendable)
