"""Result files a provider leaves at a URL (BFL's ``sample``, Replicate's outputs),
fetched when the client wants ``b64_json``.

The URL comes from a provider's reply, so it is treated like any other outside input.
No credentials go with it (result URLs are pre-signed, often on a CDN). Redirects are
followed by hand, at most ``MAX_REDIRECTS``, and every hop is checked against the
provider's allowed hosts before anything is sent to it. The body is capped at
``limits.max_response_bytes`` and must start as a PNG, JPEG or WebP image: anything
else (an internal JSON document, an HTML error page) is a 502 and never reaches the
client as an "image".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from yarl import URL

from proxy.errors import UpstreamProtocolError
from proxy.hosts import require_allowed
from proxy.images import SNIFF_BYTES, sniff

if TYPE_CHECKING:
    import aiohttp

    from proxy.upstream import Upstream

# Hops a download may take (a provider's file URL redirecting to its CDN).
MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Asked for as-is: the cap then counts the bytes as sent (it counts inflated ones too).
_HEADERS = {"Accept": "image/*", "Accept-Encoding": "identity"}
_CHUNK = 256 * 1024


async def download(upstream: Upstream, url: str, *, hosts: Sequence[str]) -> bytes:
    """The image at ``url``, or a 502 naming what was wrong with it."""
    target = url
    for _ in range(MAX_REDIRECTS + 1):
        require_allowed(target, hosts, provider=upstream.name)
        async with upstream.bare_get(target, _HEADERS) as resp:
            if resp.status == 200:
                body = await _read_image(upstream, resp)
                upstream.received(len(body))
                return body
            location = resp.headers.get("Location")
            if resp.status not in _REDIRECTS or location is None:
                raise _bad_file(upstream, f"answered HTTP {resp.status}")
        try:
            target = str(URL(target).join(URL(location)))
        except (ValueError, TypeError):
            raise _bad_file(upstream, "redirected to an invalid URL") from None
    raise _bad_file(upstream, f"redirected more than {MAX_REDIRECTS} times")


async def _read_image(upstream: Upstream, resp: aiohttp.ClientResponse) -> bytes:
    """The capped body, refused as soon as its first bytes are not an image."""
    cap = upstream.max_response_bytes
    if resp.content_length is not None and resp.content_length > cap:
        raise _too_large(upstream, cap)
    buf = bytearray()
    sniffed = False
    # Read in chunks even with a Content-Length: a compressed body inflates.
    async for chunk in resp.content.iter_chunked(_CHUNK):
        buf += chunk
        if len(buf) > cap:
            raise _too_large(upstream, cap)
        if not sniffed and len(buf) >= SNIFF_BYTES:
            _require_image(upstream, buf)
            sniffed = True
    if not sniffed:
        _require_image(upstream, buf)
    return bytes(buf)


def _require_image(upstream: Upstream, head: bytearray) -> None:
    if sniff(bytes(head[:SNIFF_BYTES])) is None:
        raise _bad_file(upstream, "is not a PNG, JPEG or WebP image")


def _bad_file(upstream: Upstream, what: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(
        f"provider '{upstream.name}' result file {what}",
        provider=upstream.name,
        code="upstream_protocol_error",
    )


def _too_large(upstream: Upstream, cap: int) -> UpstreamProtocolError:
    return UpstreamProtocolError(
        f"provider '{upstream.name}' sent a file over {cap} bytes",
        provider=upstream.name,
        code="upstream_reply_too_large",
    )
