"""The job and webhook metrics, on the gateway's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

STATES = ("queued", "in_progress", "succeeded", "failed", "cancelled")
OUTCOMES = ("delivered", "retried", "failed")


class JobMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.jobs = Counter(
            "imagegate_jobs",
            "Async jobs entering each state (queued, in_progress: each run, "
            "succeeded, failed, cancelled).",
            ["state"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "imagegate_job_queue_depth",
            "Jobs waiting or running (with Redis: every replica's, the shared queue).",
            registry=registry,
            multiprocess_mode="max",
        )
        self.queue_age = Gauge(
            "imagegate_job_queue_oldest_age_seconds",
            "Age of the oldest job waiting or running.",
            registry=registry,
            multiprocess_mode="max",
        )
        self.webhooks = Counter(
            "imagegate_webhook_deliveries",
            "Webhook attempts by outcome: delivered (2xx), retried (an attempt "
            "failed, another follows), failed (given up).",
            ["outcome"],
            registry=registry,
        )
        for state in STATES:
            self.jobs.labels(state)
        for outcome in OUTCOMES:
            self.webhooks.labels(outcome)
