"""The bucket lifecycle rules ``files.backend: s3`` relies on, as S3's JSON
(``imagegate lifecycle-rules``), for the operator to apply.

The gateway does not set them itself: PutBucketLifecycleConfiguration replaces every
rule of the bucket (other teams' too) and its permission covers the whole bucket, far
more than the gateway's own prefixes need. Two rules:

- under ``files.s3.prefix``: abort multipart uploads left incomplete a day (a replica
  killed mid-upload; S3 never lists them, but stores and bills their parts);
- under ``results.prefix``: expire results after ``results.expire_days``: the days a
  link lives, or ``results.retention_days`` with ``results.keep: true``.

Uploads themselves expire by the gateway's sweeper (``files.retention_s``), not here.
"""

from __future__ import annotations

from typing import Any

from proxy.config import Config

UPLOADS_RULE = "imagegate-uploads-abort-incomplete"
RESULTS_RULE = "imagegate-results-expire"


def rules(config: Config) -> dict[str, Any]:
    """The lifecycle configuration for ``config``'s bucket; ValueError without one."""
    s3 = config.files.s3
    if config.files.backend != "s3" or s3 is None:
        raise ValueError("files.backend is not s3: there is no bucket to configure")
    uploads = s3.prefix.strip("/") + "/"
    results = config.results.prefix.strip("/") + "/"
    return {
        "Rules": [
            {
                "ID": UPLOADS_RULE,
                "Status": "Enabled",
                "Filter": {"Prefix": uploads},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            },
            {
                "ID": RESULTS_RULE,
                "Status": "Enabled",
                "Filter": {"Prefix": results},
                "Expiration": {"Days": config.results.expire_days},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            },
        ]
    }
