"""W3C Trace Context (``traceparent``): accept a client's, or start a trace, and hand
providers a child.

The proxy records no spans of its own; it keeps the trace id so the access log can be
joined with the client's and the provider's traces, and gives each upstream call a fresh
parent id under the same trace (https://www.w3.org/TR/trace-context/).
"""

from __future__ import annotations

import os
import re

import msgspec

# version-traceid-parentid-flags, lowercase hex. Future versions may append fields
# after another '-', which a version-00 parser reads past (spec section 3.2.4).
_TRACEPARENT = re.compile(
    r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$"
)
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_MAX_TRACESTATE = 512


# A Struct: made per request, msgspec's __init__ is C; only strings (no cycle).
class Trace(msgspec.Struct, frozen=True, gc=False):
    trace_id: str
    parent_id: str | None  # the client's span, when it sent one
    flags: str
    tracestate: str | None = None

    def child(self) -> dict[str, str]:
        """Headers for one upstream call: same trace, a new parent id."""
        headers = {"traceparent": f"00-{self.trace_id}-{new_span_id()}-{self.flags}"}
        if self.tracestate:
            headers["tracestate"] = self.tracestate
        return headers


# os.urandom, where secrets.token_hex draws its bytes from too, without its three
# Python calls on the way.
def new_span_id() -> str:
    return os.urandom(8).hex()


def parse_traceparent(value: str | None) -> Trace | None:
    """The client's trace, or None when the header is absent or invalid."""
    if not value:
        return None
    m = _TRACEPARENT.match(value.strip())
    if m is None:
        return None
    version, trace_id, parent_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return Trace(trace_id, parent_id, flags)


def start_trace(traceparent: str | None, tracestate: str | None) -> Trace:
    """Continue the client's trace when its header is valid, else begin a new one."""
    trace = parse_traceparent(traceparent)
    if trace is None:
        # Not sampled: the proxy records nothing, so it makes no sampling decision.
        return Trace(os.urandom(16).hex(), None, "00")
    state = tracestate.strip() if tracestate else None
    if state and len(state) <= _MAX_TRACESTATE and state.isprintable():
        return Trace(trace.trace_id, trace.parent_id, trace.flags, state)
    return trace
