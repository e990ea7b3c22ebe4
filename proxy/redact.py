"""Provider secrets kept out of everything the gateway relays from a provider or logs.

A provider may echo what it was sent: a 400 quoting a request header, a URL with the key
in it, an error event in its stream. ``envelope`` is the one place a ``ProxyError``
becomes what a client reads, for JSON answers and stream error events alike, and every text member passes the ``Redactor`` there, whatever adapter
built the error and at whatever status. Events relayed from a provider's stream that
are errors (or not JSON at all) pass it too.

The redactor asks each provider's ``Auth`` for its secrets when it runs, so credentials
minted at runtime (GCP access tokens, refreshed AWS credentials) are covered as well as
static keys. Each secret is also looked for URL-encoded (``%2d`` as well as ``%2D``, and
with every character but letters and digits escaped), form-encoded, JSON-escaped and
base64-encoded (at each of the three offsets it can start at inside a longer base64
text, as in a ``Basic`` header), the forms it takes in an echoed URL, form body, JSON
string or credential header.

Success replies and every streamed event pass it too, so it must be cheap on a body of
megabytes of base64: all the forms are looked for in one pass of an Aho-Corasick
automaton (``ahocorasick_rs``, whose SIMD prefilter scans a 1.5 MB reply for 20 forms
in about 0.3 ms, where one ``bytes.find`` per form took 4 to 7 ms: ``bench/redact.py``),
and the body is only copied when a form is found. The forms and the automaton are
built once per set of secrets.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Sequence
from typing import overload
from urllib.parse import quote, quote_plus

import msgspec
from ahocorasick_rs import BytesAhoCorasick, MatchKind

from proxy.credentials import Auth, StaticKey
from proxy.errors import ProxyError, UpstreamRejected
from proxy.models import ErrorBody, ErrorDetail

REDACTED = "[redacted]"
_REDACTED_BYTES = REDACTED.encode()
# Shorter "secrets" would turn ordinary words into [redacted]; no real key is this short.
MIN_SECRET_CHARS = 8


_ESCAPE = re.compile(r"%[0-9A-F]{2}")


def _lower_escapes(text: str) -> str:
    return _ESCAPE.sub(lambda m: m.group().lower(), text)


def _base64_cores(secret: bytes) -> set[str]:
    """The base64 characters that depend on ``secret`` alone, for each offset (mod 3)
    it may start at in a longer encoded text: character ``i`` carries bits
    ``6i .. 6i+6`` of the bytes, so the edge characters it shares with its neighbours
    are left out."""
    cores = set()
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + secret).decode()
        start, end = -(-8 * offset // 6), 8 * (offset + len(secret)) // 6
        core = encoded[start:end]
        for text in (core, core.translate(_URLSAFE)):
            if len(text) >= MIN_SECRET_CHARS:
                cores.add(text)
    return cores


_URLSAFE = str.maketrans("+/", "-_")


def _forms(secret: str) -> set[str]:
    json_escaped = msgspec.json.encode(secret).decode()[1:-1]
    every = "".join(
        c if c.isascii() and c.isalnum() else "".join(f"%{b:02X}" for b in c.encode())
        for c in secret
    )
    escaped = {quote(secret, safe=""), quote_plus(secret), every}
    escaped |= {_lower_escapes(e) for e in escaped}
    return {secret, json_escaped, *escaped, *_base64_cores(secret.encode())}


class Redactor:
    """Replaces every current provider secret in a text with ``[redacted]``."""

    def __init__(self, auths: Sequence[Auth] = ()) -> None:
        self._auths = list(auths)
        # Fixed keys never change: with nothing else, their secrets are read once
        # rather than on every answer (``needles`` runs for each one).
        self._fixed: tuple[str, ...] | None = None
        if all(type(auth) is StaticKey for auth in self._auths):
            self._fixed = self._current()
        self._secrets: tuple[str, ...] = ()
        self._texts: list[str] = []
        self._matcher: BytesAhoCorasick | None = None
        self._longest = 0  # bytes of the longest form

    def needles(self) -> list[str]:
        """Every form of every current secret, longest first (a secret that contains
        another is replaced whole); recomputed only when the secrets change."""
        secrets = self._fixed
        if secrets is None:
            secrets = self._current()
        if secrets != self._secrets:
            forms: set[str] = set()
            for secret in secrets:
                forms |= _forms(secret)
            self._texts = sorted(forms, key=len, reverse=True)
            self._longest = max((len(f.encode()) for f in forms), default=0)
            self._matcher = None
            if forms:
                self._matcher = BytesAhoCorasick(
                    [f.encode() for f in self._texts],
                    matchkind=MatchKind.LeftmostLongest,
                )
            self._secrets = secrets
        return self._texts

    def _current(self) -> tuple[str, ...]:
        return tuple(
            s
            for auth in self._auths
            for s in auth.secrets()
            if len(s) >= MIN_SECRET_CHARS
        )

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
        """``data`` with every secret replaced; the same object when none is in it."""
        self.needles()
        if self._matcher is None:
            return data
        return _redacted(self._matcher, data)

    async def data_off_loop(self, data: bytes) -> bytes:
        """``data`` for a large body: the scan and join in a worker thread, where
        they drop the GIL (an adversarial 256 MiB body scans for over a second)."""
        self.needles()  # on the loop: it may rebuild the matcher
        if self._matcher is None:
            return data
        return await asyncio.to_thread(_redacted, self._matcher, data)

    def stream(self) -> RedactingStream:
        """A redactor for a body relayed in pieces, with the secrets of now."""
        self.needles()
        return RedactingStream(self._matcher, self._longest)


class RedactingStream:
    """Redacts a body written in pieces: a secret split between two pieces is found,
    because the last (longest form - 1) bytes of each piece are held back until the
    next one (or ``flush``); a form starting before that tail fits in what was seen."""

    def __init__(self, matcher: BytesAhoCorasick | None, longest: int) -> None:
        self._matcher = matcher
        self._keep = max(longest - 1, 0)
        self._held = b""

    def feed(self, data: bytes) -> bytes | memoryview:
        """What can be sent of ``data`` (after what was held), redacted."""
        if self._matcher is None:
            return data
        buf = self._held + data if self._held else data
        cut = len(buf) - self._keep
        if cut <= 0:
            self._held = buf
            return b""
        view, last, end = memoryview(buf), 0, cut
        parts: list[bytes | memoryview] = []
        for _, start, stop in self._matcher.find_matches_as_indexes(buf):
            if start >= cut:
                break
            parts += (view[last:start], _REDACTED_BYTES)
            end, last = max(end, stop), stop
        self._held = bytes(view[end:])
        if not parts:
            return view[:end]  # not copied
        parts.append(view[last:end])
        return b"".join(parts)

    def flush(self) -> bytes:
        """The held tail, redacted."""
        held, self._held = self._held, b""
        if self._matcher is None or not held:
            return held
        return _redacted(self._matcher, held)


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


def _redacted(matcher: BytesAhoCorasick, data: bytes) -> bytes:
    found = matcher.find_matches_as_indexes(data)
    if not found:
        return data
    view, last = memoryview(data), 0
    parts: list[bytes | memoryview] = []
    for _, start, end in found:
        parts += (view[last:start], _REDACTED_BYTES)
        last = end
    parts.append(view[last:])
    return b"".join(parts)
