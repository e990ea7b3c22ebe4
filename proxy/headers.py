"""Validation of client-supplied ``extra_headers`` before they are forwarded upstream.

Credential headers are refused (a client must never pick the credential the proxy sends,
nor smuggle one past it), and so are headers that choose who is billed for the
gateway's key or take part in a request signature, and headers that would break
framing or routing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from proxy.errors import InvalidRequest

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Visible ASCII, obs-text, space and tab; no CR, LF, NUL or other controls.
_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")

CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "x-goog-api-key",
        "x-key",
        "cookie",
        "set-cookie",
        "ocp-apim-subscription-key",
    }
)
_CREDENTIAL_WORDS = ("api-key", "apikey", "api_key", "token", "secret", "auth")
# The account, organization or project the gateway's key is billed to, or the
# throughput tier it pays for: OpenAI (and OpenAI-compatible) headers pick the org and
# project, Google's the quota project and request routing, Vertex's provisioned
# throughput.
BILLING_HEADERS = frozenset(
    {"openai-organization", "openai-project", "x-goog-user-project"}
)
# Whole families, by prefix: SigV4 (x-amz-credential, -signature, -signedheaders,
# -target, -expires, -date, -security-token ...) is computed by the gateway over its
# own headers; Google's x-goog-* carry keys, quota projects and routing params.
_BILLING_PREFIXES = ("x-amz-", "x-goog-", "x-vertex-ai-")
FRAMING_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "content-type",
        "content-encoding",
        # The gateway decodes what the provider sends; it must not ask for a coding
        # (br, zstd) it cannot read.
        "accept-encoding",
        "proxy-connection",
        # Who the client is, as proxies and the provider's abuse controls read it; the
        # gateway is the provider's client, and says nothing about its own.
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-real-ip",
        "via",
    }
)

MAX_HEADERS = 32
MAX_VALUE_LENGTH = 4096


def is_credential(name: str) -> bool:
    lowered = name.lower()
    return lowered in CREDENTIAL_HEADERS or any(
        word in lowered for word in _CREDENTIAL_WORDS
    )


def selects_billing(name: str) -> bool:
    """True for a header that picks who pays, or that a request signature covers."""
    lowered = name.lower()
    return lowered in BILLING_HEADERS or lowered.startswith(_BILLING_PREFIXES)


def validate_extra_headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """Return the headers to forward, or raise a 400 naming the offending one."""
    if not headers:
        return {}
    if len(headers) > MAX_HEADERS:
        raise InvalidRequest(
            f"at most {MAX_HEADERS} extra_headers are allowed", param="extra_headers"
        )
    clean: dict[str, str] = {}
    for name, value in headers.items():
        param = f"extra_headers.{name}"
        # CGI/WSGI-style servers read `_` as `-`: judge the name as they would.
        canon = name.replace("_", "-")
        if not isinstance(value, str):
            raise InvalidRequest(
                f"extra header '{name}' must have a string value", param=param
            )
        if not _TOKEN.match(name):
            raise InvalidRequest(
                f"extra header name {name!r} is not a valid HTTP token", param=param
            )
        if not _VALUE.match(value) or len(value) > MAX_VALUE_LENGTH:
            raise InvalidRequest(
                f"extra header '{name}' has a value HTTP cannot carry: control "
                "characters (CR, LF, NUL, ...) or characters beyond Latin-1, or over "
                f"{MAX_VALUE_LENGTH} characters",
                param=param,
            )
        if is_credential(canon):
            raise InvalidRequest(
                f"extra header '{name}' would carry credentials; the gateway sends "
                "its own provider credentials",
                param=param,
                code="forbidden_header",
            )
        if selects_billing(canon):
            raise InvalidRequest(
                f"extra header '{name}' picks the account or project billed for the "
                "gateway's credentials, or signs the request; the gateway sets these "
                "from its config",
                param=param,
                code="forbidden_header",
            )
        if canon.lower() in FRAMING_HEADERS:
            raise InvalidRequest(
                f"extra header '{name}' controls HTTP framing or routing and cannot "
                "be forwarded",
                param=param,
                code="forbidden_header",
            )
        clean[name] = value
    return clean
