"""Merging single-image results (the n fan-out) and summing usage."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from proxy.errors import UpstreamRateLimited
from proxy.models import EditJob, EditResult, TokenDetails, Usage
from proxy.translate import fan_out, merge_results, sum_usage


def _result(
    tag: str, *, usage: Usage | None = None, cost: float | None = None
) -> EditResult:
    body = msgspec.json.encode({"created": 7, "data": [{"b64_json": tag}]})
    return EditResult(body=body, images=1, usage=usage, cost=cost)


def _job(n: int | None) -> EditJob:
    return EditJob(
        operation="generate", provider="p", model="m", prompt="x", source="json", n=n
    )


def test_sum_usage_adds_field_by_field() -> None:
    a = Usage(
        input_tokens=10,
        output_tokens=100,
        total_tokens=110,
        input_tokens_details=TokenDetails(text_tokens=4, image_tokens=6),
    )
    b = Usage(
        input_tokens=10,
        output_tokens=50,
        total_tokens=60,
        input_tokens_details=TokenDetails(text_tokens=4, image_tokens=6),
        output_tokens_details=TokenDetails(image_tokens=50),
    )
    total = sum_usage([a, b])
    assert total == Usage(
        input_tokens=20,
        output_tokens=150,
        total_tokens=170,
        input_tokens_details=TokenDetails(text_tokens=8, image_tokens=12),
        output_tokens_details=TokenDetails(image_tokens=50),
    )
    assert sum_usage([a, None]) is None
    assert sum_usage([]) is None


def test_merge_results_keeps_every_image_and_sums_cost() -> None:
    merged = merge_results([_result("a", cost=0.04), _result("b", cost=0.02)])
    body = msgspec.json.decode(merged.body)
    assert body["data"] == [{"b64_json": "a"}, {"b64_json": "b"}]
    assert body["created"] == 7
    assert merged.images == 2
    assert merged.cost == pytest.approx(0.06)
    assert "usage" not in body


def test_merge_results_without_cost_leaves_pricing_to_the_table() -> None:
    usage = Usage(input_tokens=1, output_tokens=2, total_tokens=3)
    merged = merge_results([_result("a", usage=usage), _result("b", usage=usage)])
    assert merged.cost is None
    assert merged.usage == Usage(input_tokens=2, output_tokens=4, total_tokens=6)
    assert msgspec.json.decode(merged.body)["usage"]["output_tokens"] == 4


async def test_fan_out_makes_n_single_calls() -> None:
    seen: list[int | None] = []

    async def call(job: EditJob) -> EditResult:
        seen.append(job.n)
        return _result(str(len(seen)), cost=0.01)

    merged = await fan_out(_job(3), call)
    assert seen == [None, None, None]
    assert merged.images == 3
    assert merged.cost == pytest.approx(0.03)


async def test_fan_out_raises_the_failure_once_the_others_have_ended() -> None:
    calls, finished = 0, 0

    async def call(job: EditJob) -> EditResult:
        nonlocal calls, finished
        calls += 1
        if calls == 1:
            raise UpstreamRateLimited("slow down", provider="p")
        # The others were sent and will be billed: they run to their end.
        await asyncio.sleep(0.01)
        finished += 1
        return _result(str(calls), cost=0.01)

    with pytest.raises(UpstreamRateLimited):
        await fan_out(_job(3), call)
    assert finished == 2


async def test_fan_out_passes_other_exceptions_through() -> None:
    async def call(job: EditJob) -> EditResult:
        raise ValueError("bug")

    with pytest.raises(ValueError, match="bug"):
        await fan_out(_job(2), call)
