"""The metric names the proxy exposes, and the names a PromQL text refers to."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

from proxy.jobs.metrics import JobMetrics
from proxy.metrics import Metrics

_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}
# Raw series names; recording rules (with a colon) are not matched.
_NAME = re.compile(r"\b(imagegate_[a-z0-9_]+)\b")


def exposed_names() -> set[str]:
    metrics = Metrics(CollectorRegistry())
    JobMetrics(metrics.registry)  # the jobs' series, on the gateway's registry
    return {
        family.name + suffix
        for family in metrics.registry.collect()
        for suffix in _SUFFIXES[family.type]
    }


def referenced_names(promql: str) -> set[str]:
    return set(_NAME.findall(promql))
