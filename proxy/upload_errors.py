"""The upload store's refusals, one wording for every backend (local or S3)."""

from __future__ import annotations

from proxy.config_storage import UploadStoreConfig
from proxy.errors import InsufficientStorage, InvalidRequest, PayloadTooLarge


def file_too_large(config: UploadStoreConfig) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the file is larger than the upload limit of {config.max_file_bytes} bytes",
        param="file",
        code="payload_too_large",
    )


def share_full(config: UploadStoreConfig) -> InsufficientStorage:
    return InsufficientStorage(
        "this key's share of the upload store is full "
        f"(files.max_bytes_per_key = {config.key_bytes} bytes); "
        "delete files or try later",
        param="file",
        code="upload_quota_exceeded",
    )


def too_many_files(config: UploadStoreConfig) -> InsufficientStorage:
    return InsufficientStorage(
        "this key holds the most files it may "
        f"(files.max_files_per_key = {config.max_files_per_key}); delete some first",
        param="file",
        code="upload_quota_exceeded",
    )


def unknown_cursor(after: str) -> InvalidRequest:
    return InvalidRequest(
        f"'after' names no file of yours ({after!r}); use the last_id of the "
        "previous page",
        param="after",
    )
