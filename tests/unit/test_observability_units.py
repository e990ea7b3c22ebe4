"""Pure functions behind the metrics and tracing: usage split into token kinds, error
classes into closed label sets, ``traceparent``/``tracestate`` parsing."""

from __future__ import annotations

import pytest

from proxy.context import trace_headers
from proxy.errors import (
    CircuitOpen,
    InvalidRequest,
    Overloaded,
    PayloadTooLarge,
    ProxyError,
    UnknownModel,
    UpstreamError,
    UpstreamTimeout,
)
from proxy.metrics import token_counts
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
    # The label is the class's own (errors.py); a subclass inherits its parent's.
    assert UnknownModel("x").metric_label == "unknown_model"
    assert InvalidRequest("x").metric_label == "invalid_request"
    assert PayloadTooLarge("x").metric_label == "too_large"
    assert Overloaded("x").metric_label == "overloaded"
    assert ProxyError("x").metric_label == "other"
    assert UpstreamTimeout("x", provider="p").metric_label == "timeout"
    assert CircuitOpen("x", provider="p").metric_label == "unavailable"
    assert UpstreamError("x", provider="p").metric_label == "other"


def _subclasses(cls: type[ProxyError]) -> list[type[ProxyError]]:
    return [cls, *(s for sub in cls.__subclasses__() for s in _subclasses(sub))]


def test_every_error_class_has_a_snake_case_label() -> None:
    for cls in _subclasses(ProxyError):
        assert cls.metric_label.isidentifier()
        assert cls.metric_label == cls.metric_label.lower()


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
