"""Validation of client-supplied ``extra_headers`` before they are forwarded upstream.

Credential headers are refused (a client must never pick the credential the proxy sends,
nor smuggle one past it), and so are headers that would break framing or routing.
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
        "x-amz-security-token",
        "x-amz-date",
        "x-amz-content-sha256",
    }
)
_CREDENTIAL_WORDS = ("api-key", "apikey", "api_key", "token", "secret", "auth")
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
    }
)

MAX_HEADERS = 32
MAX_VALUE_LENGTH = 4096


def is_credential(name: str) -> bool:
    lowered = name.lower()
    return lowered in CREDENTIAL_HEADERS or any(
        word in lowered for word in _CREDENTIAL_WORDS
    )


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
        if is_credential(name):
            raise InvalidRequest(
                f"extra header '{name}' would carry credentials; the gateway sends "
                "its own provider credentials",
                param=param,
                code="forbidden_header",
            )
        if name.lower() in FRAMING_HEADERS:
            raise InvalidRequest(
                f"extra header '{name}' controls HTTP framing or routing and cannot "
                "be forwarded",
                param=param,
                code="forbidden_header",
            )
        clean[name] = value
    return clean
