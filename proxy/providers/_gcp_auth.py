"""Google Cloud OAuth access tokens from a service-account key file.

The JWT-bearer grant (RFC 7523, Google's "OAuth 2.0 for server to server
applications"): a JWT signed RS256 with the key file's private key is exchanged at the
key file's ``token_uri`` for an access token, cached until shortly before it expires.
The token request goes through the provider's ``Upstream`` (its session, timeouts and
error mapping); only one refresh runs at a time. The key file is read on first use, off
the event loop, and never logged. ``cryptography`` is imported then too: it is ~7 MiB of
every process otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import aiofiles
import msgspec

from proxy.errors import (
    ProviderNotConfigured,
    UpstreamProtocolError,
    from_upstream_status,
)
from proxy.upstream import Upstream

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_LIFETIME_S = 3600
# Refresh this long before expiry, so a token never expires mid-request.
_MARGIN_S = 60.0


class KeyFile(msgspec.Struct):
    client_email: str
    private_key: str
    token_uri: str = "https://oauth2.googleapis.com/token"
    private_key_id: str | None = None


class _Token(msgspec.Struct):
    access_token: str
    expires_in: int = _LIFETIME_S


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def signed_assertion(key: KeyFile, private: rsa.RSAPrivateKey, now: int) -> str:
    """The JWT asking for a cloud-platform token, signed RS256."""
    header: dict[str, str] = {"alg": "RS256", "typ": "JWT"}
    if key.private_key_id:
        header["kid"] = key.private_key_id
    claims = {
        "iss": key.client_email,
        "scope": CLOUD_PLATFORM,
        "aud": key.token_uri,
        "iat": now,
        "exp": now + _LIFETIME_S,
    }
    signing_input = (
        f"{_b64url(msgspec.json.encode(header))}.{_b64url(msgspec.json.encode(claims))}"
    )
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signature = private.sign(
        signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
    )
    return f"{signing_input}.{_b64url(signature)}"


def _load(raw: bytes) -> tuple[KeyFile, rsa.RSAPrivateKey]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = msgspec.json.decode(raw, type=KeyFile)
    private = serialization.load_pem_private_key(key.private_key.encode(), None)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ValueError("not an RSA key")
    return key, private


class ServiceAccountAuth:
    """``Authorization: Bearer <access token>`` for a service-account key file.

    ``refresh(upstream)`` must run before a request; ``headers()`` then hands out the
    cached token.
    """

    def __init__(self, key_file: str, *, key_env: str) -> None:
        self._key_file = key_file
        self._key_env = key_env
        self._key: tuple[KeyFile, rsa.RSAPrivateKey] | None = None
        self._token: str | None = None
        # The last few tokens minted: a provider may still echo one just replaced.
        self._minted: deque[str] = deque(maxlen=4)
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return self._token is not None and time.monotonic() < self._expires

    async def refresh(self, upstream: Upstream) -> None:
        if self._fresh():
            return
        async with self._lock:
            if self._fresh():  # another request refreshed it while we waited
                return
            key, private = await self._read_key(upstream.name)
            assertion = await asyncio.to_thread(
                signed_assertion, key, private, int(time.time())
            )
            started = time.monotonic()
            resp = await upstream.post(
                key.token_uri,
                authenticated=False,
                data=urlencode({"grant_type": _GRANT, "assertion": assertion}),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            if not resp.ok:
                # Any refusal of the grant is our credentials' fault, not the client's.
                status = (
                    401
                    if 400 <= resp.status < 500 and resp.status != 429
                    else resp.status
                )
                raise from_upstream_status(
                    upstream.name,
                    status,
                    message=None,
                    retry_after=resp.headers.get("Retry-After"),
                )
            try:
                token = msgspec.json.decode(resp.body, type=_Token)
            except msgspec.DecodeError as exc:
                raise UpstreamProtocolError(
                    f"provider '{upstream.name}' token endpoint sent an unexpected reply",
                    provider=upstream.name,
                    code="upstream_protocol_error",
                ) from exc
            self._token = token.access_token
            self._minted.append(token.access_token)
            self._expires = started + token.expires_in - _MARGIN_S

    async def _read_key(self, provider: str) -> tuple[KeyFile, rsa.RSAPrivateKey]:
        if self._key is None:
            try:
                async with aiofiles.open(self._key_file, "rb") as f:
                    raw = await f.read()
                self._key = await asyncio.to_thread(_load, raw)
            except (OSError, ValueError, TypeError, msgspec.DecodeError) as exc:
                raise ProviderNotConfigured(
                    f"provider '{provider}' cannot use the service-account key file "
                    f"named by {self._key_env}: the gateway operator must fix it",
                    code="provider_not_configured",
                ) from exc
        return self._key

    def secrets(self) -> Sequence[str]:
        return tuple(self._minted)

    async def headers(self) -> Mapping[str, str]:
        # refresh() ran first; a missing token here would be a bug, not a 4xx.
        assert self._token is not None
        return {"Authorization": f"Bearer {self._token}"}
