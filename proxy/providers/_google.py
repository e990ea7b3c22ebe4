"""What the Gemini API and Vertex AI share: Google's error envelope.

``{"error": {"code": 400, "message": "...", "status": "INVALID_ARGUMENT",
"details": [{"@type": "...ErrorInfo", "reason": "API_KEY_INVALID"}]}}``
"""

from __future__ import annotations

import contextlib

import msgspec

from proxy.errors import UpstreamError, from_upstream_status
from proxy.upstream import UpstreamResponse

# Google answers a bad or expired key with HTTP 400; these reasons mean our credentials.
_CREDENTIAL_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})


class _Detail(msgspec.Struct):
    reason: str | None = None


class _Error(msgspec.Struct):
    message: str | None = None
    status: str | None = None
    details: list[_Detail] = []


class _Envelope(msgspec.Struct):
    error: _Error | None = None


_envelope = msgspec.json.Decoder(_Envelope)


def error_for(provider: str, resp: UpstreamResponse) -> UpstreamError:
    """Map a non-2xx Google reply, keeping its message and status name for 4xx."""
    err = _Error()
    with contextlib.suppress(msgspec.DecodeError):
        err = _envelope.decode(resp.body).error or err
    status = resp.status
    if any(d.reason in _CREDENTIAL_REASONS for d in err.details):
        status = 401
    return from_upstream_status(
        provider,
        status,
        message=err.message,
        retry_after=resp.headers.get("Retry-After"),
        code=err.status,
    )
