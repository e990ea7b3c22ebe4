"""A small S3 client: botocore's SigV4 signer over the gateway's aiohttp.

Why not aiobotocore: botocore is already here (the Bedrock adapter signs with it, and
its credential chain covers environment, profiles, web identity / IRSA and instance
roles); the upload store needs eight calls (put, get, list, delete, multipart
create / part / complete / abort) plus presigning, and aiobotocore pins botocore to a
narrow range, which would hold back the Bedrock adapter's. Bodies are signed with
their SHA-256 (parts are at most ``part_bytes``, hashed in a worker thread).

Every failure to reach the store (connection, timeout, 5xx, a refusal of our
credentials) is ``StorageUnavailable``: a retryable 503 for the client, the cause in
the log without secrets.
"""

from __future__ import annotations

import asyncio
import io
import logging
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

import aiohttp
from yarl import URL

from proxy.config_storage import S3Settings
from proxy.errors import StorageUnavailable
from proxy.freeing import LARGE, joined_freeing
from proxy.providers._aws import Resolver

if TYPE_CHECKING:
    from botocore.credentials import Credentials, ReadOnlyCredentials

log = logging.getLogger("imagegate")
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    size: int


def _q(value: str) -> str:
    return quote(value, safe="-_.~")


def _unavailable(what: str) -> StorageUnavailable:
    return StorageUnavailable(
        f"the upload store is unavailable ({what}); try again shortly"
    )


class S3Client:
    def __init__(
        self, settings: S3Settings, session: aiohttp.ClientSession, resolve: Resolver
    ) -> None:
        self.settings = settings
        self.region = settings.region or "us-east-1"
        self._session = session
        self._resolve = resolve
        self._credentials: Credentials | None = None
        self._lock = asyncio.Lock()
        endpoint = settings.endpoint_url or (f"https://s3.{self.region}.amazonaws.com")
        parts = urlsplit(endpoint)
        # "auto" is decided by environment.s3_settings; unresolved, AWS S3 is virtual.
        style = settings.addressing_style
        if style == "virtual" or (style == "auto" and settings.endpoint_url is None):
            self._base = f"{parts.scheme}://{settings.bucket}.{parts.netloc}"
        else:
            self._base = f"{parts.scheme}://{parts.netloc}/{settings.bucket}"
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=settings.connect_timeout_s,
            sock_read=settings.timeout_s,
        )

    def url(self, key: str, query: Sequence[tuple[str, str]] = ()) -> str:
        url = f"{self._base}/{_q_key(key)}"
        if query:
            url += "?" + "&".join(f"{_q(k)}={_q(v)}" for k, v in query)
        return url

    async def _frozen(self) -> ReadOnlyCredentials:
        async with self._lock:
            if self._credentials is None:
                self._credentials = await asyncio.to_thread(self._resolve)
        if self._credentials is None:
            log.error("upload store: no AWS credentials in the standard chain")
            raise _unavailable("no credentials")
        return await asyncio.to_thread(self._credentials.get_frozen_credentials)

    async def _signed(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> dict[str, str]:
        frozen = await self._frozen()
        region = self.region
        return await asyncio.to_thread(
            _sign, frozen, region, method, url, headers, body
        )

    async def presign(self, key: str, ttl_s: int) -> str:
        """A GET URL for ``key`` anyone holding it may use for ``ttl_s`` seconds."""
        frozen = await self._frozen()
        region = self.region
        return await asyncio.to_thread(_presign, frozen, region, self.url(key), ttl_s)

    @asynccontextmanager
    async def call(
        self,
        method: str,
        key: str,
        query: Sequence[tuple[str, str]] = (),
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> AsyncIterator[aiohttp.ClientResponse | None]:
        """The response when its status is in ``ok``; None on 404 (when 404 is not an
        error for the caller: pass 404 in ``ok``); StorageUnavailable otherwise."""
        url = self.url(key, query)
        signed = await self._signed(method, url, headers or {}, body)
        try:
            async with self._session.request(
                method,
                URL(url, encoded=True),
                # A stream: aiohttp writes large raw bytes in one call on the loop.
                data=io.BytesIO(body) if body else None,
                headers=signed,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                if resp.status == 404 and 404 in ok:
                    yield None
                    return
                if resp.status not in ok:
                    detail = (await resp.content.read(512)).decode("utf-8", "replace")
                    log.warning(
                        "upload store: %s answered HTTP %s",
                        method,
                        resp.status,
                        extra={"s3_error": _code(detail)},
                    )
                    raise _unavailable(f"HTTP {resp.status}")
                yield resp
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("upload store unreachable: %s", type(exc).__name__)
            raise _unavailable(type(exc).__name__) from None

    async def put(self, key: str, body: bytes, headers: Mapping[str, str]) -> None:
        async with self.call("PUT", key, body=body, headers=headers):
            pass

    async def read(self, key: str) -> bytes | None:
        async with self.call("GET", key, ok=(200, 404)) as resp:
            if resp is None:
                return None
            length = resp.content_length
            if length is not None and length <= LARGE:
                return await resp.read()
            # aiohttp's read joins on the loop: 256 MiB (a spilled idempotent
            # answer) held it ~50 ms. The pieces as read, joined in a worker thread.
            pieces = [piece async for piece in resp.content.iter_any()]
            if sum(len(p) for p in pieces) <= LARGE:  # an unsized small one
                return b"".join(pieces)
            return await asyncio.to_thread(joined_freeing, pieces)

    async def delete(self, key: str) -> None:
        async with self.call("DELETE", key, ok=(200, 204, 404)):
            pass

    async def list(self, prefix: str) -> list[Entry]:
        """Every object under ``prefix`` (ListObjectsV2, page after page)."""
        found: list[Entry] = []
        token: str | None = None
        while True:
            query = [("list-type", "2"), ("prefix", prefix)]
            if token is not None:
                query.append(("continuation-token", token))
            async with self.call("GET", "", sorted(query)) as resp:
                assert resp is not None
                root = ET.fromstring(await resp.read())
            for item in root.iter(f"{_NS}Contents"):
                found.append(
                    Entry(
                        item.findtext(f"{_NS}Key", ""),
                        int(item.findtext(f"{_NS}Size", "0")),
                    )
                )
            token = root.findtext(f"{_NS}NextContinuationToken")
            if root.findtext(f"{_NS}IsTruncated") != "true" or not token:
                return found

    async def start_multipart(self, key: str, headers: Mapping[str, str]) -> str:
        async with self.call("POST", key, [("uploads", "")], headers=headers) as resp:
            assert resp is not None
            root = ET.fromstring(await resp.read())
        upload_id = root.findtext(f"{_NS}UploadId")
        if not upload_id:
            raise _unavailable("no upload id")
        return upload_id

    async def put_part(self, key: str, upload_id: str, number: int, body: bytes) -> str:
        query = [("partNumber", str(number)), ("uploadId", upload_id)]
        async with self.call("PUT", key, query, body=body) as resp:
            assert resp is not None
            return resp.headers.get("ETag", "")

    async def complete(self, key: str, upload_id: str, etags: Sequence[str]) -> None:
        parts = "".join(
            f"<Part><PartNumber>{i}</PartNumber><ETag>{_xml(etag)}</ETag></Part>"
            for i, etag in enumerate(etags, 1)
        )
        body = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()
        async with self.call("POST", key, [("uploadId", upload_id)], body=body) as resp:
            assert resp is not None
            # S3 may answer 200 with an error document once it has started.
            if b"<Error>" in await resp.read():
                raise _unavailable("multipart upload not completed")

    async def abort(self, key: str, upload_id: str) -> None:
        query = [("uploadId", upload_id)]
        async with self.call("DELETE", key, query, ok=(200, 204, 404)):
            pass


def _q_key(key: str) -> str:
    return quote(key, safe="-_.~/")


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


def _code(detail: str) -> str:
    """The S3 error code of an error document (never its message, which may quote
    request headers)."""
    start = detail.find("<Code>")
    end = detail.find("</Code>")
    return detail[start + 6 : end][:64] if 0 <= start < end else ""


def _credentials(frozen: ReadOnlyCredentials) -> Credentials:
    from botocore.credentials import Credentials

    assert frozen.access_key is not None
    assert frozen.secret_key is not None
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token)


def _sign(
    frozen: ReadOnlyCredentials,
    region: str,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
) -> dict[str, str]:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    S3SigV4Auth(_credentials(frozen), "s3", region).add_auth(request)
    return dict(request.headers.items())


def _presign(frozen: ReadOnlyCredentials, region: str, url: str, ttl_s: int) -> str:
    from botocore.auth import S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method="GET", url=url)
    S3SigV4QueryAuth(_credentials(frozen), "s3", region, expires=ttl_s).add_auth(
        request
    )
    return str(request.url)
