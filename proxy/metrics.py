"""All Prometheus metrics of the proxy, built on an injected registry.

Label values come from closed sets (route names, configured provider names, client key
names from config, models from the price table or ``other``, outcome and reason enums);
never from caller-supplied strings. Gauges name their multiprocess mode, so the same
definitions work when several worker processes share ``PROMETHEUS_MULTIPROC_DIR``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from proxy.errors import ProxyError, UpstreamError
from proxy.models import Usage

# Overhead is the proxy's own time: buckets start at 0.1 ms.
_OVERHEAD_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
_LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300,
)  # fmt: skip

CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}


def token_counts(usage: Usage | None) -> dict[str, int]:
    """Split a usage block into the ``kind`` label values the token counter uses."""
    if usage is None:
        return {}
    counts: dict[str, int] = {}
    inp, out = usage.input_tokens_details, usage.output_tokens_details
    if inp is not None and (
        inp.text_tokens is not None or inp.image_tokens is not None
    ):
        counts["input_text"] = inp.text_tokens or 0
        counts["input_image"] = inp.image_tokens or 0
    elif usage.input_tokens:
        counts["input"] = usage.input_tokens
    if out is not None and (
        out.text_tokens is not None or out.image_tokens is not None
    ):
        counts["output_text"] = out.text_tokens or 0
        counts["output_image"] = out.image_tokens or 0
    elif usage.output_tokens:
        # OpenAI reports image models' output as image tokens unless it splits them.
        counts["output_image"] = usage.output_tokens
    return {kind: n for kind, n in counts.items() if n}


_M = TypeVar("_M", Counter, Gauge, Histogram)

Add = Callable[[float], None]


def adder(child: Counter | Gauge) -> Add:
    """``child.inc``, bound to the child's value once: ``inc()`` checks on every call
    that the metric is labelled and the amount not negative (three Python calls and a
    lock around the one that counts). For the hot path's children, whose labels are
    bound and whose amounts are counts and sizes; a gauge's ``dec(n)`` is ``add(-n)``.
    Works the same on the multiprocess value class (``PROMETHEUS_MULTIPROC_DIR``)."""
    inc: Add = child._value.inc
    return inc


def setter(gauge: Gauge) -> Add:
    """``gauge.set``, bound the same way as ``adder`` (livesum and max gauges only:
    a ``mostrecent`` gauge's set also records the time)."""
    assert not gauge._is_most_recent
    value = gauge._value

    def set_to(amount: float) -> None:
        value.set(float(amount))

    return set_to


class Observer:
    """``histogram.observe`` for a labelled child, its bucket found by bisection
    rather than the library's scan of every bound, with no per-call checks."""

    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, child: Histogram) -> None:
        self._sum: Add = child._sum.inc
        # The last bound is +Inf: every amount but NaN has a bucket.
        self._bounds: Sequence[float] = child._upper_bounds
        self._buckets: list[Add] = [bucket.inc for bucket in child._buckets]

    def __call__(self, amount: float) -> None:
        self._sum(amount)
        self._buckets[bisect_left(self._bounds, amount)](1)


class Metrics:
    def __init__(
        self, registry: CollectorRegistry, *, multiproc_dir: str | None = None
    ) -> None:
        self.registry = registry
        # Set when worker processes share their values through files (see workers.py).
        self.multiproc_dir = multiproc_dir
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._adders: dict[tuple[int, tuple[str, ...]], Add] = {}
        self._observers: dict[tuple[int, tuple[str, ...]], Observer] = {}
        self.deprecated_requests = Counter(
            "imagegate_deprecated_model_requests",
            "Requests for a model its provider has deprecated or retired (remapped), "
            "by catalogue model.",
            ["model"],
            registry=registry,
        )
        self.requests = Counter(
            "imagegate_requests",
            "Requests answered, by route, provider, status class and client key name.",
            ["route", "provider", "code_class", "key"],
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
            multiprocess_mode="livesum",
        )
        self.inflight_add = adder(self.inflight)
        # The ceiling beside the count, so saturation alerts need no threshold
        # copied from the config (summed over workers like the count).
        self.inflight_limit = Gauge(
            "imagegate_inflight_limit",
            "Requests the process handles at once (backpressure.max_inflight).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._upstream(registry)
        self._accounting(registry)
        self._controls(registry)

    def _upstream(self, registry: CollectorRegistry) -> None:
        self.upstream_requests = Counter(
            "imagegate_upstream_requests",
            "Requests sent to providers, by provider and outcome (status class, error, aborted).",
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
        self.upstream_sent_bytes = Counter(
            "imagegate_upstream_sent_bytes",
            "Request body bytes sent to providers.",
            ["provider"],
            registry=registry,
        )
        self.upstream_received_bytes = Counter(
            "imagegate_upstream_received_bytes",
            "Reply body bytes received from providers.",
            ["provider"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "imagegate_upstream_errors",
            "Requests that failed because of the provider, by provider and kind.",
            ["provider", "kind"],
            registry=registry,
        )

    def _accounting(self, registry: CollectorRegistry) -> None:
        self.cost = Counter(
            "imagegate_cost_usd",
            "Cost of answered requests in US dollars, by provider, model and key name.",
            ["provider", "model", "key"],
            registry=registry,
        )
        self.unpriced = Counter(
            "imagegate_unpriced_responses",
            "Answered requests whose cost is unknown (no price for the model or usage).",
            ["provider", "model"],
            registry=registry,
        )
        self.tokens = Counter(
            "imagegate_tokens",
            "Tokens reported by providers, by provider, model and kind.",
            ["provider", "model", "kind"],
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
        self.upload_add = adder(self.upload_bytes)
        self.temp_bytes = Gauge(
            "imagegate_temp_file_bytes",
            "Bytes of request temp files on disk.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.spooled_bytes = Gauge(
            "imagegate_spooled_bytes",
            "Bytes of request file parts held in memory (limits.spool_total_bytes).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.rejected = Counter(
            "imagegate_rejected_requests",
            "Requests refused by the proxy itself, by reason.",
            ["reason"],
            registry=registry,
        )
        self.results_stored = Counter(
            "imagegate_result_images",
            "Result images written to the object store, by purpose (link: "
            "response_format url; keep: results.keep) and outcome (stored, failed).",
            ["purpose", "outcome"],
            registry=registry,
        )
        self.idempotency = Counter(
            "imagegate_idempotency_requests",
            "Requests with an Idempotency-Key, by outcome (stored, replayed, "
            "conflict, mismatch, not_kept).",
            ["outcome"],
            registry=registry,
        )

    def _controls(self, registry: CollectorRegistry) -> None:
        # Defined here so dashboards and alerts have stable names; the retry, fallback
        # and circuit-breaker controls increment and set them.
        self.retries = Counter(
            "imagegate_upstream_retries",
            "Upstream attempts repeated after a retryable failure, by provider.",
            ["provider"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "imagegate_fallbacks",
            "Requests moved to another provider, by the provider that failed.",
            ["provider"],
            registry=registry,
        )
        self.circuit_state = Gauge(
            "imagegate_circuit_state",
            "Circuit breaker state by provider: 0 closed, 1 half-open, 2 open.",
            ["provider"],
            registry=registry,
            multiprocess_mode="max",
        )
        self.limit_store_errors = Counter(
            "imagegate_limit_store_errors",
            "Shared limits store (Redis) calls failed or skipped, by operation.",
            ["operation"],
            registry=registry,
        )
        self.temp_reserved_bytes = Gauge(
            "imagegate_temp_reserved_bytes",
            "Multipart body bytes received by requests in flight.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.json_reserved_bytes = Gauge(
            "imagegate_json_reserved_bytes",
            "Memory reserved for JSON bodies of requests in flight (2x their bytes).",
            registry=registry,
            multiprocess_mode="livesum",
        )

    def add(self, metric: Counter | Gauge, *values: str) -> Add:
        """``adder`` of ``metric.labels(*values)``, kept like ``child``."""
        key = (id(metric), values)
        found: Add | None = self._adders.get(key)
        if found is None:
            found = self._adders[key] = adder(metric.labels(*values))
        return found

    def observe(self, metric: Histogram, *values: str) -> Observer:
        """An ``Observer`` of ``metric.labels(*values)``, kept like ``child``."""
        key = (id(metric), values)
        found = self._observers.get(key)
        if found is None:
            found = self._observers[key] = Observer(metric.labels(*values))
        return found

    def child(self, metric: _M, *values: str) -> _M:
        """``metric.labels(*values)``, kept: ``labels()`` validates and takes a lock on
        every call, about ten times a dict lookup. Label values come from closed sets
        (see the module's docstring), so what is kept is bounded."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def bind_providers(self, names: list[str]) -> None:
        """Create every per-provider series at zero, so rates and alerts see them."""
        for name in names:
            for kind in ("created", "reused"):
                self.upstream_connections.labels(name, kind)
            self.upstream_sent_bytes.labels(name)
            self.upstream_received_bytes.labels(name)
            self.retries.labels(name)
            self.fallbacks.labels(name)
            self.circuit_state.labels(name).set(CIRCUIT_STATES["closed"])
            self.images.labels(name)

    def record_result(
        self,
        provider: str,
        model: str,
        key: str,
        *,
        cost: float | None,
        usage: Usage | None,
        images: int,
    ) -> None:
        """Account one answered request: cost, tokens by kind, images returned."""
        if cost is None:
            self.add(self.unpriced, provider, model)(1)
        else:
            # The public inc: it refuses a negative amount (a cost is never one).
            self.child(self.cost, provider, model, key).inc(cost)
        for kind, count in token_counts(usage).items():
            self.add(self.tokens, provider, model, kind)(count)
        self.add(self.images, provider)(images)

    def record_error(self, exc: ProxyError) -> None:
        if isinstance(exc, UpstreamError):
            self.upstream_errors.labels(exc.provider, exc.metric_label).inc()
        else:
            self.rejected.labels(exc.metric_label).inc()


def exposition(registry: CollectorRegistry, multiproc_dir: str | None) -> bytes:
    """The text exposition: this process's registry, or every worker's when shared."""
    if multiproc_dir is None:
        return generate_latest(registry)
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, path=multiproc_dir)  # type: ignore[no-untyped-call]
    return generate_latest(merged)
