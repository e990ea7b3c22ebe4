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
    # None: AWS S3 in `region`; else MinIO, Ceph RGW, R2, GCS interoperability...
    endpoint_url: str | None = None
    region: str = "us-east-1"
    addressing_style: Literal["path", "virtual"] = "virtual"
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
