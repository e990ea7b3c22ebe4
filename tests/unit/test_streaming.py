"""Event-stream pieces: the SSE decoder, and completed events for non-streaming
providers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from proxy.accounting import price
from proxy.metrics import Metrics
from proxy.models import EditJob, EditResult, Usage
from proxy.pricing import PriceTable
from proxy.providers.openai import Config as OpenAIConfig
from proxy.providers.openai import OpenAIAdapter
from proxy.routing import Route
from proxy.sse import SSEDecoder, _blank_line, _lines, parse_event
from proxy.streaming import completed_events as completed
from proxy.upstream import Upstream


def test_decoder_splits_events_across_any_chunking() -> None:
    stream = (
        b": comment\r\n\r\n"
        b'event: a\r\ndata: {"x":1}\r\n\r\n'
        b"data: line1\rdata: line2\r\r"
        b"event: b\ndata:no-space\n\n"
    )
    for size in (1, 2, 3, 7, len(stream)):
        decoder = SSEDecoder(1024)
        events = []
        for i in range(0, len(stream), size):
            events += decoder.feed(stream[i : i + size])
        assert [(e.name, e.data) for e in events] == [
            (None, b""),
            ("a", b'{"x":1}'),
            (None, b"line1\nline2"),
            ("b", b"no-space"),
        ], size


def test_decoder_caps_an_event() -> None:
    decoder = SSEDecoder(16)
    assert decoder.feed(b"data: 0123456789") == []
    with pytest.raises(ValueError, match="larger than 16"):
        decoder.feed(b"0123456789")


def test_parse_event_keeps_raw_block() -> None:
    event = parse_event(b"event: x\nid: 7\ndata: 1\n")
    assert event.name == "x"
    assert event.data == b"1"
    assert event.raw == b"event: x\nid: 7\ndata: 1"


@pytest.fixture
async def route() -> AsyncIterator[Route]:
    metrics = Metrics(CollectorRegistry())
    async with aiohttp.ClientSession() as session:
        upstream = Upstream(
            "openai",
            base_url="http://127.0.0.1:9",
            session=session,
            auth=None,
            key_env="X",
            metrics=metrics,
            max_response_bytes=1024,
        )
        adapter = OpenAIAdapter(OpenAIConfig())
        yield Route("openai", "gpt-image-2", adapter, upstream, "openai/gpt-image-2")


def _events(body: bytes) -> list[tuple[str | None, dict[str, object]]]:
    out = []
    for block in body.decode().strip().split("\n\n"):
        event = parse_event(block.encode())
        out.append((event.name, msgspec.json.decode(event.data)))
    return out


@pytest.mark.parametrize("operation", ["edit", "generate"])
async def test_completed_events_from_a_normal_result(
    route: Route, operation: str
) -> None:
    prices = await asyncio.to_thread(PriceTable.load_default)
    usage = Usage(input_tokens=0, output_tokens=1000)
    body = msgspec.json.encode(
        {
            "created": 5,
            "data": [{"b64_json": "AAA"}, {"b64_json": "BBB"}],
            "size": "1024x1024",
            "usage": {"input_tokens": 0, "output_tokens": 1000},
        }
    )
    job = EditJob(
        operation=operation,  # type: ignore[arg-type]
        provider="openai",
        model="gpt-image-2",
        prompt="p",
        source="json",
        stream=True,
    )
    cost = price(prices, route, usage=usage, images=2)
    resp = completed(route, job, EditResult(body=body, images=2, usage=usage), cost)
    assert resp.content_type == "text/event-stream"
    assert isinstance(resp.body, bytes)
    events = _events(resp.body)
    prefix = "image_edit" if operation == "edit" else "image_generation"
    assert [name for name, _ in events] == [f"{prefix}.completed"] * 2
    first, last = events[0][1], events[1][1]
    assert first["b64_json"] == "AAA"
    assert first["created_at"] == 5
    assert first["size"] == "1024x1024"
    assert "cost" not in first
    # Usage and cost cover the whole request, so only the last event carries them.
    assert last["b64_json"] == "BBB"
    assert last["provider"] == "openai"
    assert last["cost"] == pytest.approx(0.03)
    assert last["usage"] == {"input_tokens": 0, "output_tokens": 1000}


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200)
    | st.lists(st.sampled_from([b"a", b"\n", b":", b" "])).map(b"".join)
)
def test_event_lines_are_split_as_split_does(block: bytes) -> None:
    assert _lines(block) == block.split(b"\n")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [b"event: x\n", b"data: {}\n", b": c\n", b"\n", b"\r\n", b"data:1"]
        )
    ),
    st.integers(min_value=1, max_value=7),
)
def test_decoded_events_do_not_depend_on_the_chunking(
    pieces: list[bytes], size: int
) -> None:
    stream = b"".join(pieces) + b"\n\n"
    whole = SSEDecoder(1 << 20).feed(stream)
    decoder = SSEDecoder(1 << 20)
    chunked = [
        e
        for i in range(0, len(stream), size)
        for e in decoder.feed(stream[i : i + size])
    ]
    assert chunked == whole


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"a", b"\n", b"bc"])).map(b"".join), st.integers(0, 12)
)
def test_blank_lines_are_found_as_find_does(data: bytes, at: int) -> None:
    assert _blank_line(bytearray(data), at) == bytearray(data).find(b"\n\n", at)


def _reference_parse_event(block: bytes) -> tuple[str | None, bytes, bytes]:
    # The definition, line by line.
    name: str | None = None
    data: list[bytes] = []
    for line in block.strip(b"\n").split(b"\n"):
        if line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        value = value.removeprefix(b" ")
        if field == b"event":
            name = value.decode("utf-8", "replace")
        elif field == b"data":
            data.append(value)
    return name, b"\n".join(data), block.strip(b"\n")


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [b"event", b"data", b":", b" ", b"\n", b"x", b"\xff", b"id", b"data: {}"]
        )
    ).map(b"".join)
)
def test_parse_event_as_defined(block: bytes) -> None:
    event = parse_event(block)
    assert (event.name, event.data, event.raw) == _reference_parse_event(block)
