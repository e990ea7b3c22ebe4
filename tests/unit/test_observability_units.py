"""Pure functions behind the metrics and tracing: usage split into token kinds, error
classes into closed label sets, ``traceparent``/``tracestate`` parsing."""

from __future__ import annotations

import pytest

from proxy.context import trace_headers
from proxy.errors import (
    InvalidRequest,
    Overloaded,
    PayloadTooLarge,
    ProxyError,
    UnknownModel,
    UpstreamError,
    UpstreamTimeout,
)
from proxy.metrics import (
    REJECT_REASONS,
    UPSTREAM_ERROR_KINDS,
    reject_reason,
    token_counts,
    upstream_error_kind,
)
from proxy.models import TokenDetails, Usage
from proxy.tracing import parse_traceparent, start_trace

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("usage", "want"),
    [
        (None, {}),
        (Usage(input_tokens=7, output_tokens=9), {"input": 7, "output_image": 9}),
        (
            Usage(
                input_tokens=5,
                input_tokens_details=TokenDetails(text_tokens=2, image_tokens=3),
                output_tokens=11,
                output_tokens_details=TokenDetails(text_tokens=1, image_tokens=10),
            ),
            {"input_text": 2, "input_image": 3, "output_text": 1, "output_image": 10},
        ),
        (Usage(input_tokens=0, output_tokens=0), {}),
    ],
)
def test_token_counts(usage: Usage | None, want: dict[str, int]) -> None:
    assert token_counts(usage) == want


def test_reasons_and_kinds_are_closed_sets() -> None:
    assert reject_reason(UnknownModel("x")) == "unknown_model"
    assert reject_reason(InvalidRequest("x")) == "invalid_request"
    assert reject_reason(PayloadTooLarge("x")) == "too_large"
    assert reject_reason(Overloaded("x")) == "overloaded"
    assert reject_reason(ProxyError("x")) == "other"
    assert upstream_error_kind(UpstreamTimeout("x", provider="p")) == "timeout"
    assert upstream_error_kind(UpstreamError("x", provider="p")) == "other"
    assert "other" in REJECT_REASONS
    assert "other" in UPSTREAM_ERROR_KINDS


def test_traceparent_parsing() -> None:
    trace = parse_traceparent(f" 00-{TRACE}-{PARENT}-01 ")
    assert trace is not None
    assert (trace.trace_id, trace.parent_id, trace.flags) == (TRACE, PARENT, "01")
    assert parse_traceparent(None) is None
    assert parse_traceparent("") is None


def test_tracestate_kept_only_when_sane() -> None:
    header = f"00-{TRACE}-{PARENT}-01"
    assert start_trace(header, "a=1,b=2").tracestate == "a=1,b=2"
    assert start_trace(header, "x" * 600).tracestate is None
    assert start_trace(header, "a=\x01").tracestate is None
    assert start_trace(header, None).tracestate is None
    fresh = start_trace(None, "a=1")
    assert fresh.tracestate is None
    assert fresh.parent_id is None
    assert len(fresh.trace_id) == 32
    child = fresh.child()
    assert child["traceparent"].startswith(f"00-{fresh.trace_id}-")
    assert "tracestate" not in child


def test_no_trace_headers_outside_a_request() -> None:
    assert trace_headers() == {}
