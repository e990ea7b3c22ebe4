"""Client keys: which configured key a request presents, and which models it may use.

The config holds only each key's SHA-256; the presented key is hashed and compared with
every configured hash in constant time, without stopping at a match, so neither the
comparison nor the number of comparisons says anything about a key. The key itself is
never stored, logged or forwarded: callers only ever see the key's configured name.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from fnmatch import fnmatchcase

from proxy.controls import ClientKey
from proxy.errors import Forbidden, Unauthorized

# Header names SDKs use for a key: OpenAI's (Bearer), Azure OpenAI's, Anthropic-style.
_KEY_HEADERS = ("api-key", "x-api-key")
_BEARER = "bearer "


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "igk-" + secrets.token_urlsafe(32)


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The one key the request presents, or None; Unauthorized if it presents two.

    Two different keys (two Authorization headers, or Authorization and x-api-key)
    leave it to chance which one a proxy in front or behind would honour: refused.
    """
    found: set[str] = set()
    getall = getattr(headers, "getall", None)
    for name in ("Authorization", *_KEY_HEADERS):
        values = getall(name, ()) if getall is not None else [headers.get(name, "")]
        for value in values:
            if name == "Authorization":
                if value[: len(_BEARER)].lower() != _BEARER:
                    continue
                value = value[len(_BEARER) :]
            if value := value.strip():
                found.add(value)
    if len(found) > 1:
        raise Unauthorized(
            "more than one API key presented: send exactly one, as "
            "'Authorization: Bearer <key>'",
            code="ambiguous_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return found.pop() if found else None


class KeyRing:
    """The configured client keys; empty means no authentication (loopback or none)."""

    def __init__(self, keys: Mapping[str, ClientKey]) -> None:
        self._keys = dict(keys)
        self._digests = [(name, bytes.fromhex(k.sha256)) for name, k in keys.items()]

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __getitem__(self, name: str) -> ClientKey:
        return self._keys[name]

    @property
    def names(self) -> list[str]:
        return sorted(self._keys)

    def authenticate(self, headers: Mapping[str, str]) -> str:
        """The name of the key the request presents; Unauthorized if none matches."""
        key = presented_key(headers)
        if key is None:
            raise Unauthorized(
                "missing API key: send 'Authorization: Bearer <key>'",
                code="missing_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            digest = hashlib.sha256(key.encode()).digest()
        except UnicodeEncodeError:
            # aiohttp keeps header bytes that are not UTF-8 as lone surrogates: no
            # configured key can be spelled that way.
            digest = b""
        found: str | None = None
        for name, expected in self._digests:
            if hmac.compare_digest(digest, expected):
                found = name
        if found is None:
            raise Unauthorized(
                "invalid API key",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return found

    def client_id(self, name: str) -> str:
        """A stable identifier for key ``name`` that says nothing about the key: the
        HMAC-SHA256 of its name under the key's configured SHA-256 (64 hex digits)."""
        digest = bytes.fromhex(self._keys[name].sha256)
        message = b"imagegate client id\x00" + name.encode()
        return hmac.new(digest, message, hashlib.sha256).hexdigest()

    def allows(self, name: str, model: str) -> bool:
        return any(fnmatchcase(model, p) for p in self._keys[name].models)

    def check_model(self, name: str, model: str) -> None:
        if not self.allows(name, model):
            raise Forbidden(
                f"key '{name}' may not use model '{model}'",
                param="model",
                code="model_not_allowed",
            )


class ScrapeToken:
    """The bearer token ``/metrics`` requires when ``metrics.token_env`` is set.

    ``None`` (the variable unset or empty) refuses every scrape: a configured token
    that is missing must not leave key names and spend open.
    """

    def __init__(self, token: str | None) -> None:
        self._digest = hashlib.sha256(token.encode()).digest() if token else None

    def check(self, headers: Mapping[str, str]) -> None:
        auth = headers.get("Authorization", "")
        presented = auth[len(_BEARER) :].strip()
        if auth[: len(_BEARER)].lower() != _BEARER or not presented:
            presented = ""
        try:
            digest = hashlib.sha256(presented.encode()).digest()
        except UnicodeEncodeError:
            # A byte that is not UTF-8 arrives as a lone surrogate: never the token.
            digest = b""
        if self._digest is None or not hmac.compare_digest(digest, self._digest):
            raise Unauthorized(
                "/metrics needs 'Authorization: Bearer <metrics token>'",
                code="invalid_metrics_token",
                headers={"WWW-Authenticate": "Bearer"},
            )
