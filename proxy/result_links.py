"""Results as links: with ``files.backend: s3``, ``response_format: "url"`` works for
every provider and model (gpt-image included, which answer base64 only).

The job goes to the provider asking for base64 (``as_base64``); once the answer is in
and billed, each ``b64_json`` image is stored once under ``results.prefix`` and replaced
by a presigned GET URL valid ``results.url_ttl_s``. The bucket's lifecycle rule on that
prefix deletes them (README). Should the store fail at that point, the images the
client has paid for are not lost: they go as ``data:`` URLs, as without a store.

With ``results.keep: true`` every result is stored, ``b64_json`` answers too (their
answer unchanged), each with its owner (client key name), provider and model as
object metadata, under ``<prefix>/<UTC day>/``; the lifecycle rule
(``imagegate lifecycle-rules``) deletes them after ``results.retention_days``. A result
the store refuses is still answered (it is logged as not kept). Streams relayed from
the provider as they arrive are not kept.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgspec
from prometheus_client import Counter

from proxy.config_storage import Results
from proxy.errors import StorageUnavailable
from proxy.images import sniff
from proxy.models import EditJob, EditResult
from proxy.s3 import S3Client

log = logging.getLogger("imagegate")
_SAFE = "-_.~/:@+ "
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass(frozen=True, slots=True)
class Origin:
    """Who asked and who answered: the metadata a kept result carries."""

    owner: str | None
    provider: str
    model: str

    def headers(self) -> dict[str, str]:
        # Header values: ASCII only, so anything else is percent-encoded.
        return {
            "x-amz-meta-owner": quote(self.owner or "anonymous", safe=_SAFE),
            "x-amz-meta-provider": quote(self.provider, safe=_SAFE),
            "x-amz-meta-model": quote(self.model, safe=_SAFE),
        }


class ResultLinks:
    def __init__(self, client: S3Client, settings: Results, counted: Counter) -> None:
        self._client = client
        self._settings = settings
        self._counted = counted  # Metrics.results_stored

    @property
    def keeps(self) -> bool:
        """Every result is stored (``results.keep``), linked or not."""
        return self._settings.keep

    def wanted(self, job: EditJob) -> bool:
        return job.response_format == "url" and not job.stream

    @staticmethod
    def as_base64(job: EditJob) -> EditJob:
        return msgspec.structs.replace(job, response_format="b64_json")

    def _key(self, kind: str) -> str:
        prefix = self._settings.prefix.strip("/")
        if self._settings.keep:
            prefix += dt.datetime.now(dt.UTC).strftime("/%Y-%m-%d")
        return f"{prefix}/{uuid.uuid4()}.{_EXT.get(kind, 'bin')}"

    async def store(self, data: bytes, origin: Origin | None = None) -> str:
        """Stores one image; its key."""
        kind = sniff(data[:12]) or "application/octet-stream"
        key = self._key(kind)
        headers = {"Content-Type": kind}
        if origin is not None and self._settings.keep:
            headers.update(origin.headers())
        await self._client.put(key, data, headers)
        return key

    async def link(self, data: bytes, origin: Origin | None = None) -> str:
        key = await self.store(data, origin)
        return await self._client.presign(key, self._settings.url_ttl_s)

    async def convert(
        self, result: EditResult, origin: Origin | None = None, *, linking: bool = True
    ) -> EditResult:
        """``result`` with its images as links (``linking``); with ``results.keep``
        its images stored in any case."""
        if not linking and not self._settings.keep:
            return result
        body: dict[str, Any] = msgspec.json.decode(result.body)
        items = [i for i in body.get("data") or () if isinstance(i, dict)]
        encoded = [i for i in items if isinstance(i.get("b64_json"), str)]
        if not encoded:
            return result
        images = [base64.b64decode(i["b64_json"]) for i in encoded]
        purpose = "link" if linking else "keep"
        if not linking:
            try:
                await asyncio.gather(*(self.store(d, origin) for d in images))
            except StorageUnavailable:
                self._counted.labels(purpose, "failed").inc(len(images))
                log.error("results.keep: store unavailable, a result was not kept")
            else:
                self._counted.labels(purpose, "stored").inc(len(images))
            return result
        try:
            urls = await asyncio.gather(*(self.link(d, origin) for d in images))
        except StorageUnavailable:
            self._counted.labels(purpose, "failed").inc(len(images))
            log.warning("result links: store unavailable, answering data: URLs")
            urls = [
                f"data:{sniff(d[:12]) or 'image/png'};base64,{i['b64_json']}"
                for d, i in zip(images, encoded, strict=True)
            ]
        else:
            self._counted.labels(purpose, "stored").inc(len(images))
        for item, url in zip(encoded, urls, strict=True):
            del item["b64_json"]
            item["url"] = url
        return msgspec.structs.replace(result, body=msgspec.json.encode(body))
