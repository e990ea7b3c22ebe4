"""Fetching a client's ``image_url`` for providers that need the bytes, SSRF-safely.

For every hop (the URL and each redirect, up to ``max_redirects``) the gateway checks
the scheme, refuses credentials in the URL, resolves the name itself and checks every
answer against the address policy (``proxy.addresses``); the connection then goes to
the checked answers only, through a resolver pinned to them, so a second DNS answer
cannot redirect it (no rebinding window). Size and time are capped, compressed
encodings are not requested, and the first bytes must be an image. Every refusal is a
400 naming the image and the reason, raised before any byte is sent to the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from proxy.addresses import (
    Allowlist,
    BadHost,
    IPAddress,
    literal_address,
    refusal,
)
from proxy.config import Fetch
from proxy.errors import InvalidRequest
from proxy.images import SNIFF_BYTES, require_image
from proxy.models import StoredImage
from proxy.tempfiles import UploadSet

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 256 * 1024


def _refused(param: str, reason: str) -> InvalidRequest:
    return InvalidRequest(
        f"'{param}' was refused: {reason}", param=param, code="image_url_refused"
    )


@contextlib.asynccontextmanager
async def fetch_errors(param: str) -> AsyncIterator[None]:
    """aiohttp errors while fetching a client's ``image_url``: a 400 naming the image.

    The client chose the URL, so a host that cannot be reached is the client's problem,
    not the gateway's; the message says what failed without echoing any reply body.
    """
    try:
        yield
    except (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch) as exc:
        raise InvalidRequest(
            f"'{param}' could not be fetched: TLS verification failed",
            param=param,
            code="image_url_unreachable",
        ) from exc
    except aiohttp.ClientError as exc:
        raise InvalidRequest(
            f"'{param}' could not be fetched ({type(exc).__name__})",
            param=param,
            code="image_url_unreachable",
        ) from exc


def _parse(url: str | URL, param: str) -> URL:
    try:
        return URL(url)
    except (ValueError, TypeError):
        raise _refused(param, "it is not a valid URL") from None


class _Pinned(AbstractResolver):
    """Answers only with addresses the fetcher has already checked."""

    def __init__(self) -> None:
        self.answers: dict[str, list[ResolveResult]] = {}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = self.answers.get(host)
        if not answers:
            raise OSError(f"{host} was not checked")
        return [{**a, "port": port} for a in answers]

    async def close(self) -> None:
        return None


async def make_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """The system trust store, plus ``ca_file`` (loaded off the event loop)."""

    def build() -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        if ca_file:
            ctx.load_verify_locations(cafile=ca_file)
        return ctx

    return await asyncio.to_thread(build)


class Fetcher:
    def __init__(
        self, config: Fetch, *, resolver: AbstractResolver, ssl_context: ssl.SSLContext
    ) -> None:
        self.config = config
        self._resolver = resolver
        self._ssl = ssl_context
        self._allow = Allowlist(config.allow_hosts, config.allow_networks)

    async def fetch(
        self, url: str, *, param: str, uploads: UploadSet, mask: bool = False
    ) -> StoredImage:
        """Fetch ``url`` into a temp file of ``uploads``, or raise a 400 naming ``param``."""
        try:
            async with asyncio.timeout(self.config.timeout_s):
                return await self._fetch(url, param, uploads, mask)
        except TimeoutError:
            raise _refused(
                param, f"it did not arrive within {self.config.timeout_s:g} s"
            ) from None

    async def _fetch(
        self, url: str, param: str, uploads: UploadSet, mask: bool
    ) -> StoredImage:
        pinned = _Pinned()
        connector = aiohttp.TCPConnector(
            resolver=pinned, ssl=self._ssl, use_dns_cache=False, force_close=True
        )
        timeout = aiohttp.ClientTimeout(sock_connect=self.config.connect_timeout_s)
        target = _parse(url, param)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        ) as session:
            for _ in range(self.config.max_redirects + 1):
                await self._check(target, param, pinned)
                async with (
                    fetch_errors(param),
                    session.get(
                        target,
                        allow_redirects=False,
                        headers={"Accept": "image/*", "Accept-Encoding": "identity"},
                    ) as resp,
                ):
                    location = resp.headers.get("Location")
                    if resp.status in _REDIRECTS and location:
                        target = target.join(_parse(location, param))
                        continue
                    if resp.status != 200:
                        raise _refused(param, f"the server answered HTTP {resp.status}")
                    return await self._save(resp, param, uploads, mask)
        raise _refused(param, f"more than {self.config.max_redirects} redirects")

    async def connector(self, url: str, *, param: str) -> aiohttp.TCPConnector:
        """A connector that reaches ``url``'s host only at the addresses the policy
        let through, for a URL the gateway calls itself (a webhook); a 400 naming
        ``param`` if the policy refuses it."""
        pinned = _Pinned()
        await self._check(_parse(url, param), param, pinned)
        return aiohttp.TCPConnector(
            resolver=pinned, ssl=self._ssl, use_dns_cache=False, force_close=True
        )

    def check_scheme(self, url: str | URL, *, param: str) -> None:
        """https, or http where the operator allowed it; for passed-through URLs too."""
        scheme = _parse(url, param).scheme
        if scheme == "http" and not self.config.allow_http:
            raise _refused(param, "only https URLs are allowed")
        if scheme not in ("https", "http"):
            raise _refused(param, f"the scheme '{scheme}' is not fetched")

    async def _check(self, url: URL, param: str, pinned: _Pinned) -> None:
        """Refuse a URL the policy forbids; otherwise pin its checked addresses."""
        self.check_scheme(url, param=param)
        if url.user is not None or url.password is not None:
            raise _refused(param, "URLs with credentials are not fetched")
        host = url.raw_host
        if not host or url.port is None:
            raise _refused(param, "the URL has no host")
        allowed = self._allow.host(host)
        try:
            literal = literal_address(host)
        except BadHost:
            raise _refused(param, f"'{host}' is not a valid address") from None
        if literal is not None:
            ips = [literal]
        else:
            ips = await self._resolve(host, url.port, param)
        for ip in ips:
            reason = refusal(ip, host_allowed=allowed, allow=self._allow)
            if reason is not None:
                what = host if literal is None else "the host"
                raise _refused(param, f"{what} is {reason} ({ip})")
        pinned.answers[host] = [
            {
                "hostname": host,
                "host": str(ip),
                "port": url.port,
                "family": socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for ip in ips
        ]

    async def _resolve(self, host: str, port: int, param: str) -> list[IPAddress]:
        try:
            answers = await self._resolver.resolve(host, port, family=socket.AF_UNSPEC)
            ips = [ipaddress.ip_address(a["host"]) for a in answers]
        except (OSError, ValueError):
            ips = []
        if not ips:
            raise _refused(param, f"the name '{host}' does not resolve")
        return ips

    async def _save(
        self,
        resp: aiohttp.ClientResponse,
        param: str,
        uploads: UploadSet,
        mask: bool,
    ) -> StoredImage:
        cap = self.config.max_bytes
        too_big = f"the image is larger than {cap} bytes"
        if resp.content_length is not None and resp.content_length > cap:
            raise _refused(param, too_big)
        chunks = _chunks(resp)
        head = b""
        async with fetch_errors(param):
            async for chunk in chunks:
                head += chunk
                if len(head) >= SNIFF_BYTES:
                    break
            kind = require_image(head[:SNIFF_BYTES], param=param, mask=mask)
            path, f = await uploads.new_file()
            size = 0
            try:
                chunk = head
                while chunk:
                    size += len(chunk)
                    if size > cap:
                        raise _refused(param, too_big)
                    await f.write(chunk)
                    uploads.wrote(len(chunk))
                    chunk = await anext(chunks, b"")
            finally:
                await asyncio.shield(f.close())
        name = resp.url.name[:255]
        return StoredImage(content_type=kind, size=size, filename=name, path=path)


async def _chunks(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    async for chunk in resp.content.iter_chunked(_CHUNK):
        yield chunk
