"""Provider secrets kept out of everything the gateway relays from a provider or logs.

A provider may echo what it was sent: a 400 quoting a request header, a URL with the key
in it, an error event in its stream. ``envelope`` is the one place a ``ProxyError``
becomes what a client reads, for JSON answers and stream error events alike, and every text member passes the ``Redactor`` there, whatever adapter
built the error and at whatever status. Events relayed from a provider's stream that
are errors (or not JSON at all) pass it too.

The redactor asks each provider's ``Auth`` for its secrets when it runs, so credentials
minted at runtime (GCP access tokens, refreshed AWS credentials) are covered as well as
static keys. Each secret is also looked for URL-encoded and JSON-escaped, the forms it
takes in an echoed URL, form body or JSON string.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload
from urllib.parse import quote, quote_plus

import msgspec

from proxy.credentials import Auth
from proxy.errors import ProxyError, UpstreamRejected
from proxy.models import ErrorBody, ErrorDetail

REDACTED = "[redacted]"
# Shorter "secrets" would turn ordinary words into [redacted]; no real key is this short.
MIN_SECRET_CHARS = 8


def _forms(secret: str) -> set[str]:
    json_escaped = msgspec.json.encode(secret).decode()[1:-1]
    return {secret, quote(secret, safe=""), quote_plus(secret), json_escaped}


class Redactor:
    """Replaces every current provider secret in a text with ``[redacted]``."""

    def __init__(self, auths: Sequence[Auth] = ()) -> None:
        self._auths = list(auths)

    def needles(self) -> list[str]:
        found: set[str] = set()
        for auth in self._auths:
            for secret in auth.secrets():
                if len(secret) >= MIN_SECRET_CHARS:
                    found |= _forms(secret)
        # Longest first: a secret that contains another is replaced whole.
        return sorted(found, key=len, reverse=True)

    @overload
    def text(self, text: str) -> str: ...
    @overload
    def text(self, text: str | None) -> str | None: ...
    def text(self, text: str | None) -> str | None:
        if not text:
            return text
        for needle in self.needles():
            if needle in text:
                text = text.replace(needle, REDACTED)
        return text

    def data(self, data: bytes) -> bytes:
        for needle in self.needles():
            raw = needle.encode()
            if raw in data:
                data = data.replace(raw, REDACTED.encode())
        return data


def error_detail(exc: ProxyError, redactor: Redactor) -> ErrorDetail:
    """The error envelope's members for ``exc``, every one redacted."""
    error_type = exc.error_type
    if isinstance(exc, UpstreamRejected) and exc.upstream_type:
        error_type = exc.upstream_type
    return ErrorDetail(
        message=redactor.text(exc.message),
        type=redactor.text(error_type),
        param=redactor.text(exc.param),
        code=redactor.text(exc.code),
    )


_encode = msgspec.json.Encoder().encode


def envelope(exc: ProxyError, redactor: Redactor) -> bytes:
    """OpenAI's ``{"error": {...}}`` for ``exc``, encoded: the body of an error answer
    and the data of a stream's ``error`` event."""
    return _encode(ErrorBody(error_detail(exc, redactor)))


def error_headers(exc: ProxyError, redactor: Redactor) -> dict[str, str]:
    """Headers the error carries (a provider's Retry-After), redacted likewise."""
    return {name: redactor.text(value) for name, value in exc.headers.items()}
