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

``imagegate prepare-bucket`` (``prepare``) is the operator's one-off: it creates the
bucket when it is missing and merges these two rules into the bucket's lifecycle
(the bucket's other rules are kept), with botocore's own S3 client and the same
environment and config as the gateway. It needs ``s3:CreateBucket``,
``s3:GetLifecycleConfiguration`` and ``s3:PutLifecycleConfiguration``, which the
gateway itself never uses: run it with an operator's credentials, or as the trial
component's Job does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.config import Config
from proxy.environment import s3_settings

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


def prepare(config: Config, environ: Mapping[str, str]) -> list[str]:
    """Creates the bucket if missing and merges ``rules(config)`` into its lifecycle;
    what it did, one line each. botocore's errors propagate (the CLI reports them)."""
    import botocore.session
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import ClientError

    assert config.files.s3 is not None
    wanted = rules(config)
    settings = s3_settings(config.files.s3, environ)
    session = botocore.session.Session(profile=settings.profile)
    client: Any = session.create_client(
        "s3",
        region_name=settings.region,
        endpoint_url=settings.endpoint_url,
        config=BotoConfig(s3={"addressing_style": settings.addressing_style}),
    )
    bucket, done = settings.bucket, []
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
            raise
        create: dict[str, Any] = {"Bucket": bucket}
        if settings.region != "us-east-1":
            create["CreateBucketConfiguration"] = {
                "LocationConstraint": settings.region
            }
        client.create_bucket(**create)
        done.append(f"created bucket {bucket}")
    try:
        current = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
            raise
        current = []
    ours = {rule["ID"] for rule in wanted["Rules"]}
    kept = [rule for rule in current if rule.get("ID") not in ours]
    client.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [*kept, *wanted["Rules"]]}
    )
    done.append(
        f"lifecycle of {bucket}: {', '.join(sorted(ours))} set, "
        f"{len(kept)} other rule(s) kept"
    )
    return done
