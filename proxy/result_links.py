"""Results as links: with ``files.backend: s3``, ``response_format: "url"`` works for
every provider and model (gpt-image included, which answer base64 only).

The job goes to the provider asking for base64 (``as_base64``); once the answer is in
and billed, each ``b64_json`` image is stored once under ``results.prefix`` and replaced
by a presigned GET URL valid ``results.url_ttl_s``. The bucket's lifecycle rule on that
prefix deletes them (README). Should the store fail at that point, the images the
client has paid for are not lost: they go as ``data:`` URLs, as without a store.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from typing import Any

import msgspec

from proxy.config_storage import Results
from proxy.errors import StorageUnavailable
from proxy.images import sniff
from proxy.models import EditJob, EditResult
from proxy.s3 import S3Client

log = logging.getLogger("imagegate")
_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class ResultLinks:
    def __init__(self, client: S3Client, settings: Results) -> None:
        self._client = client
        self._settings = settings

    def wanted(self, job: EditJob) -> bool:
        return job.response_format == "url" and not job.stream

    @staticmethod
    def as_base64(job: EditJob) -> EditJob:
        return msgspec.structs.replace(job, response_format="b64_json")

    async def link(self, data: bytes) -> str:
        kind = sniff(data[:12]) or "application/octet-stream"
        key = (
            f"{self._settings.prefix.strip('/')}/{uuid.uuid4()}.{_EXT.get(kind, 'bin')}"
        )
        await self._client.put(key, data, {"Content-Type": kind})
        return await self._client.presign(key, self._settings.url_ttl_s)

    async def convert(self, result: EditResult) -> EditResult:
        body: dict[str, Any] = msgspec.json.decode(result.body)
        items = [i for i in body.get("data") or () if isinstance(i, dict)]
        encoded = [i for i in items if isinstance(i.get("b64_json"), str)]
        if not encoded:
            return result
        images = [base64.b64decode(i["b64_json"]) for i in encoded]
        try:
            urls = await asyncio.gather(*(self.link(data) for data in images))
        except StorageUnavailable:
            log.warning("result links: store unavailable, answering data: URLs")
            urls = [
                f"data:{sniff(d[:12]) or 'image/png'};base64,{i['b64_json']}"
                for d, i in zip(images, encoded, strict=True)
            ]
        for item, url in zip(encoded, urls, strict=True):
            del item["b64_json"]
            item["url"] = url
        return msgspec.structs.replace(result, body=msgspec.json.encode(body))
