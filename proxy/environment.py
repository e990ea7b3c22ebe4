"""What the config takes from the environment, and the checks a start (and
``imagegate check-config``) makes of it.

A Kubernetes Deployment fills these from Secrets and the pod's identity, so the
ConfigMap holds names only: the Redis URL (it may carry a password) from the variable
``redis_url_env`` names; the object store's endpoint and region, when the config leaves
them out, from the AWS SDKs' own variables (``AWS_ENDPOINT_URL_S3``,
``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_DEFAULT_REGION``), which EKS' IRSA sets for
the region and a Secret can set for MinIO, Ceph RGW or SeaweedFS.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

import msgspec

from proxy.config import Config
from proxy.config_storage import S3Settings

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
# Set for every worker when ``--workers`` > 1 (``proxy.workers``): prometheus_client's
# shared directory, and the sign that several processes serve one port.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DEFAULT_REGION = "us-east-1"
# botocore's own names and order (AWS SDKs' "service-specific endpoints").
ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
IGNORE_ENDPOINTS_ENV = "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"
REGION_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION")


def redis_url(config: Config, environ: Mapping[str, str]) -> str | None:
    """``redis_url``, else the value of the variable ``redis_url_env`` names."""
    if config.redis_url_env is not None:
        return environ.get(config.redis_url_env) or None
    return config.redis_url


def _endpoint_from_env(environ: Mapping[str, str]) -> tuple[str, str] | None:
    if environ.get(IGNORE_ENDPOINTS_ENV, "").lower() == "true":
        return None
    for name in ENDPOINT_ENV:
        if environ.get(name):
            return name, environ[name]
    return None


def s3_settings(settings: S3Settings, environ: Mapping[str, str]) -> S3Settings:
    """``settings`` with the endpoint, region and addressing style decided: the
    config's own values first, then the AWS variables, then AWS S3 in us-east-1.
    ``auto`` addressing is virtual-hosted on AWS S3 and path-style elsewhere (MinIO,
    Ceph RGW and SeaweedFS answer on one host name, with no wildcard DNS)."""
    endpoint = settings.endpoint_url
    if endpoint is None:
        found = _endpoint_from_env(environ)
        endpoint = found[1] if found is not None else None
    region = settings.region
    if region is None:
        region = next(
            (environ[n] for n in REGION_ENV if environ.get(n)), DEFAULT_REGION
        )
    style = settings.addressing_style
    if style == "auto":
        host = (urlsplit(endpoint).hostname or "") if endpoint else "amazonaws.com"
        on_aws = host == "amazonaws.com" or host.endswith(".amazonaws.com")
        style = "virtual" if on_aws else "path"
    return msgspec.structs.replace(
        settings, endpoint_url=endpoint, region=region, addressing_style=style
    )


def problems(config: Config, environ: Mapping[str, str]) -> list[str]:
    """What the environment lacks for this config, one line each (naming the
    variable, never its value). A start is refused while any is left."""
    found: list[str] = []
    env = config.redis_url_env
    if env is not None:
        value = environ.get(env) or ""
        if not value:
            found.append(f"redis_url_env names {env}, which is empty")
        elif not value.startswith(REDIS_SCHEMES):
            found.append(
                f"redis_url_env: {env} must start with redis://, rediss:// or unix://"
            )
    token_env = config.metrics.token_env
    if token_env is not None and not environ.get(token_env):
        found.append(f"metrics.token_env names {token_env}, which is empty")
    s3 = config.files.s3
    if config.files.backend == "s3" and s3 is not None and s3.endpoint_url is None:
        named = _endpoint_from_env(environ)
        if named is not None:
            parts = urlsplit(named[1])
            if parts.scheme not in ("http", "https") or not parts.hostname:
                found.append(f"{named[0]} must be an http(s) URL")
    return found
