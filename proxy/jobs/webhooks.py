"""Signed webhooks: a job's terminal state POSTed, as GET shows it, to the URL the
request named, signed per the Standard Webhooks specification.

Each attempt carries ``webhook-id`` (``msg_<job id>``, the same on every attempt, for
the receiver's deduplication), ``webhook-timestamp`` (seconds, at that attempt) and
``webhook-signature`` (``v1,`` + base64 of HMAC-SHA256 over ``id.timestamp.body``
with the key's secret, configured as ``whsec_`` + base64). A 2xx ends it; anything
else is retried with exponential backoff (with jitter) for ``retry_for_s``. The URL
passes the image-URL SSRF policy (``Fetcher.connector``) at each attempt, redirects
are not followed, and nothing of the gateway's (credentials, cookies) is sent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Mapping

import aiohttp

from proxy.errors import InvalidRequest, ProxyError
from proxy.fetch import Fetcher
from proxy.jobs.config import Webhooks
from proxy.jobs.metrics import JobMetrics

log = logging.getLogger("imagegate")
PARAM = "webhook_url"
_PREFIX = "whsec_"


def parse_secret(text: str) -> bytes:
    """The key bytes of a ``whsec_``-prefixed base64 secret; ValueError if it is not
    one."""
    encoded = text.removeprefix(_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not whsec_ followed by base64") from None
    if len(key) < 16:
        raise ValueError("shorter than 16 bytes")
    return key


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return (
        "v1,"
        + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    )


def headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "imagegate-webhooks",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, msg_id, timestamp, body),
    }


def secrets_from(config: Webhooks, environ: Mapping[str, str]) -> dict[str, bytes]:
    """Each key's signing secret from the environment; a missing or malformed one is
    logged (that key's requests naming a webhook get a 400)."""
    found: dict[str, bytes] = {}
    for name, entry in config.keys.items():
        if entry.secret_env is None:
            continue
        text = environ.get(entry.secret_env)
        if not text:
            log.warning(
                "jobs.webhooks.keys.%s: %s is not set; its webhooks are refused",
                name,
                entry.secret_env,
            )
            continue
        try:
            found[name] = parse_secret(text)
        except ValueError as exc:
            log.warning(
                "jobs.webhooks.keys.%s: %s is %s; its webhooks are refused",
                name,
                entry.secret_env,
                exc,
            )
    return found


class Sender:
    def __init__(
        self,
        config: Webhooks,
        secrets: Mapping[str, bytes],
        fetcher: Fetcher,
        metrics: JobMetrics,
    ) -> None:
        self._config = config
        self._secrets = secrets
        self._fetcher = fetcher
        self._metrics = metrics
        self.slots = asyncio.Semaphore(config.max_pending)

    def default_url(self, owner: str) -> str | None:
        entry = self._config.keys.get(owner)
        return None if entry is None else entry.url

    async def check(self, url: str, owner: str) -> None:
        """A 400 naming ``webhook_url`` unless deliveries to ``url`` can be signed for
        ``owner`` and the SSRF policy lets it through."""
        if owner not in self._secrets:
            raise InvalidRequest(
                f"'{PARAM}' needs a signing secret, and none is configured for key "
                f"'{owner}' (jobs.webhooks.keys.{owner}.secret_env)",
                param=PARAM,
                code="webhook_unsigned",
            )
        connector = await self._connector(url)
        await connector.close()

    async def _connector(self, url: str) -> aiohttp.TCPConnector:
        try:
            return await self._fetcher.connector(url, param=PARAM)
        except InvalidRequest as exc:
            exc.code = "webhook_url_refused"
            raise

    async def deliver(self, url: str, owner: str, job_id: str, body: bytes) -> bool:
        """Deliver until a 2xx or ``retry_for_s`` passed; whether it was delivered."""
        key = self._secrets.get(owner)
        if key is None:  # the secret went away since the job was accepted
            self._metrics.webhooks.labels("failed").inc()
            return False
        msg_id = f"msg_{job_id}"
        deadline = time.monotonic() + self._config.retry_for_s
        attempt = 0
        while True:
            outcome = await self._attempt(url, key, msg_id, body)
            if outcome == "delivered":
                self._metrics.webhooks.labels("delivered").inc()
                return True
            attempt += 1
            wait = min(
                self._config.backoff_max_s,
                self._config.backoff_base_s * 2 ** (attempt - 1),
            )
            wait *= 0.5 + random.random() / 2
            if time.monotonic() + wait > deadline:
                self._metrics.webhooks.labels("failed").inc()
                log.warning(
                    "webhook not delivered; giving up",
                    extra={"fields": {"job": job_id, "attempts": attempt}},
                )
                return False
            self._metrics.webhooks.labels("retried").inc()
            await asyncio.sleep(wait)

    async def _attempt(self, url: str, key: bytes, msg_id: str, body: bytes) -> str:
        try:
            connector = await self._connector(url)
        except ProxyError:
            return "refused"
        timeout = aiohttp.ClientTimeout(total=self._config.timeout_s)
        sent = headers(key, msg_id, int(time.time()), body)
        try:
            async with (
                aiohttp.ClientSession(
                    connector=connector,
                    timeout=timeout,
                    cookie_jar=aiohttp.DummyCookieJar(),
                ) as session,
                session.post(url, data=body, headers=sent, allow_redirects=False) as r,
            ):
                return "delivered" if 200 <= r.status < 300 else "rejected"
        except (aiohttp.ClientError, TimeoutError):
            return "unreachable"
