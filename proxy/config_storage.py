"""Configuration of the stores that hold bytes: the upload store behind
``/v3/upload`` (``files:``), its S3-compatible backend, and results as links
(``results:``). Kept apart from ``proxy.config`` to keep each module small.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from proxy.config_base import ConfigBase, PositiveInt, Seconds

MiB = 1024 * 1024


class S3Settings(ConfigBase, frozen=True, forbid_unknown_fields=True):
    """An S3-compatible bucket for ``files.backend: s3`` (proxy/upload_objects.py).
    Credentials come from the standard AWS chain only (environment, profile, web
    identity / IRSA, container or instance role), never from this file."""

    bucket: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._/-]{0,200}$")] = (
        "imagegate/uploads"
    )
    # None: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL from the environment if set, else
    # AWS S3 in `region`; or MinIO, Ceph RGW, SeaweedFS, R2, GCS interoperability...
    endpoint_url: str | None = None
    # None: AWS_REGION or AWS_DEFAULT_REGION (IRSA sets both), else us-east-1.
    region: str | None = None
    # auto: virtual-hosted on AWS S3, path-style on any other endpoint.
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    profile: str | None = None
    # Multipart part size: the memory one upload in flight holds (S3's minimum: 5 MiB).
    part_bytes: Annotated[int, msgspec.Meta(ge=5 * MiB, le=512 * MiB)] = 8 * MiB
    timeout_s: Seconds = 30.0
    connect_timeout_s: Seconds = 5.0
    # Providers that fetch image URLs themselves (xAI, Replicate) get a stored file as a
    # presigned GET URL valid this long instead of its bytes (the bucket must be
    # reachable from the provider); null: the bytes.
    presign_inputs_s: Annotated[int, msgspec.Meta(ge=60, le=7 * 24 * 3600)] | None = (
        None
    )

    def __post_init__(self) -> None:
        if self.endpoint_url is not None and urlsplit(self.endpoint_url).scheme not in (
            "http",
            "https",
        ):
            raise ValueError("endpoint_url must be an http(s) URL")


class UploadStoreConfig(ConfigBase, frozen=True, forbid_unknown_fields=True):
    """The embedded upload store behind ``/v3/upload`` and ``file_id``."""

    # local: a directory (one process, or the workers of one host); s3: a bucket
    # every replica shares (files.s3).
    backend: Literal["local", "s3"] = "local"
    s3: S3Settings | None = None
    # None: a private directory under the temp dir, removed at shutdown.
    dir: str | None = None
    max_file_bytes: PositiveInt = 100 * MiB
    max_total_bytes: PositiveInt = 10 * 1024 * MiB
    # One client key's share, so no key can fill the store for the others (507).
    # None: a quarter of max_total_bytes. Without client keys there is one owner.
    max_bytes_per_key: PositiveInt | None = None
    max_files_per_key: PositiveInt = 10_000
    retention_s: Seconds = 7 * 24 * 3600.0
    sweep_interval_s: Seconds = 60.0

    def __post_init__(self) -> None:
        if self.key_bytes > self.max_total_bytes:
            raise ValueError("max_bytes_per_key must not be above max_total_bytes")
        if self.backend == "s3" and self.s3 is None:
            raise ValueError("backend s3 needs files.s3 (bucket, region, ...)")

    @property
    def key_bytes(self) -> int:
        if self.max_bytes_per_key is not None:
            return self.max_bytes_per_key
        return max(1, self.max_total_bytes // 4)


class Results(ConfigBase, frozen=True, forbid_unknown_fields=True):
    """Results as links (``response_format: "url"``), with ``files.backend: s3``: each
    image stored once under ``prefix`` in the upload bucket, answered as a presigned
    GET URL valid ``url_ttl_s`` (SigV4 allows at most 7 days)."""

    url_ttl_s: Annotated[int, msgspec.Meta(ge=1, le=7 * 24 * 3600)] = 3600
    prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._/-]{1,200}$")] = (
        "imagegate/results"
    )
    # Keep every result (b64_json answers too) under `prefix` for audit, each with
    # its owner, provider and model, for `retention_days`: the bucket's lifecycle
    # rule (`imagegate lifecycle-rules`) deletes them, not the gateway.
    keep: bool = False
    retention_days: Annotated[int, msgspec.Meta(ge=1, le=36500)] | None = None

    @property
    def expire_days(self) -> int:
        """How long the lifecycle rule keeps a result: its retention, or the days a
        link lives, rounded up (S3 counts lifecycle ages in whole days)."""
        link_days = max(1, -(-self.url_ttl_s // 86400))
        if self.keep and self.retention_days is not None:
            return max(self.retention_days, link_days)
        return link_days


def check_storage(files: UploadStoreConfig, results: Results) -> None:
    """Cross-section checks of ``files`` and ``results``; a one-line ValueError."""
    if results.keep and files.backend != "s3":
        raise ValueError("results.keep: needs files.backend: s3 (a bucket to keep in)")
    if results.keep and results.retention_days is None:
        raise ValueError("results.retention_days: needed with results.keep: true")
    if not results.keep and results.retention_days is not None:
        raise ValueError("results.retention_days: only used with results.keep: true")
    if files.s3 is not None:
        uploads = files.s3.prefix.strip("/") + "/"
        kept = results.prefix.strip("/") + "/"
        if uploads == "/" or uploads.startswith(kept) or kept.startswith(uploads):
            # One lifecycle rule would expire the other's objects.
            raise ValueError("results.prefix: must not overlap files.s3.prefix")
