"""All Prometheus metrics of the proxy, built on an injected registry.

Label values come from closed sets (route names, configured provider names, outcomes);
never from caller-supplied strings.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Overhead is the proxy's own time: buckets start at 0.1 ms.
_OVERHEAD_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
_LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300,
)  # fmt: skip


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "imagegate_requests",
            "Requests answered, by route, provider and status class.",
            ["route", "provider", "code_class"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "imagegate_request_duration_seconds",
            "Time from request start to response, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.overhead = Histogram(
            "imagegate_overhead_seconds",
            "Request time minus time spent waiting on the provider, by route.",
            ["route"],
            buckets=_OVERHEAD_BUCKETS,
            registry=registry,
        )
        self.inflight = Gauge(
            "imagegate_inflight_requests",
            "Requests being handled.",
            registry=registry,
        )
        self.upstream_requests = Counter(
            "imagegate_upstream_requests",
            "Requests sent to providers, by provider and outcome.",
            ["provider", "outcome"],
            registry=registry,
        )
        self.upstream_duration = Histogram(
            "imagegate_upstream_duration_seconds",
            "Time spent waiting on the provider, by provider.",
            ["provider"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_connections = Counter(
            "imagegate_upstream_connections",
            "Upstream connections used, by provider and kind (created or reused).",
            ["provider", "kind"],
            registry=registry,
        )
        self.cost = Counter(
            "imagegate_cost_usd",
            "Cost of answered requests in US dollars, by provider and model.",
            ["provider", "model"],
            registry=registry,
        )
        self.unpriced = Counter(
            "imagegate_unpriced_responses",
            "Answered requests whose cost is unknown (no price for the model or usage).",
            ["provider", "model"],
            registry=registry,
        )
        self.images = Counter(
            "imagegate_images_returned",
            "Images returned to clients, by provider.",
            ["provider"],
            registry=registry,
        )
        self.upload_bytes = Counter(
            "imagegate_upload_bytes",
            "Bytes of image files received from clients.",
            registry=registry,
        )
        self.rejected = Counter(
            "imagegate_rejected_requests",
            "Requests refused by the proxy before any upstream call, by reason.",
            ["reason"],
            registry=registry,
        )
        # Gateway controls. `key` is a configured client key name or "anonymous".
        self.key_requests = Counter(
            "imagegate_key_requests",
            "Requests answered, by client key name and status class.",
            ["key", "code_class"],
            registry=registry,
        )
        self.key_cost = Counter(
            "imagegate_key_cost_usd",
            "Cost of answered requests in US dollars, by client key name.",
            ["key"],
            registry=registry,
        )
        self.upstream_retries = Counter(
            "imagegate_upstream_retries",
            "Requests sent again to a provider, by provider and reason.",
            ["provider", "reason"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "imagegate_fallbacks",
            "Requests passed to a fallback provider, by failed and next provider.",
            ["from_provider", "to_provider"],
            registry=registry,
        )
        self.circuit_state = Gauge(
            "imagegate_circuit_state",
            "Circuit breaker state by provider: 0 closed, 1 open, 2 half-open.",
            ["provider"],
            registry=registry,
        )
        self.limit_store_errors = Counter(
            "imagegate_limit_store_errors",
            "Failed operations on the shared limits store (Redis), by operation.",
            ["operation"],
            registry=registry,
        )
        self.temp_reserved_bytes = Gauge(
            "imagegate_temp_reserved_bytes",
            "Multipart body bytes admitted for spooling to temp files.",
            registry=registry,
        )
