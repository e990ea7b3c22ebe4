"""The pure parts behind ``/ui`` and ``/v3/usage``: when the page is on, the page's
own origin, the pricing member, the usage report, and the memory store's reading."""

from __future__ import annotations

import msgspec
import pytest

from proxy.config import parse_config
from proxy.controls import ClientKey
from proxy.listed_prices import ModelPricing, pricing_of
from proxy.origins import own_page
from proxy.pricing import Price, PriceTable
from proxy.quotas import DAY_S, KeyUsage, MemoryQuotas, micro_usd
from proxy.ui import ui_enabled
from proxy.usage import build_report

SHA = "0" * 64


@pytest.mark.parametrize(
    ("host", "on"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("gateway.internal", False),
    ],
)
def test_auto_serves_the_page_on_loopback_listeners_only(host: str, on: bool) -> None:
    raw = {"providers": {"openai": {}}, "server": {"host": host}}
    assert ui_enabled(parse_config(msgspec.json.encode(raw))) is on


@pytest.mark.parametrize("enabled", [True, False])
def test_an_explicit_setting_wins(enabled: bool) -> None:
    raw = {"providers": {"openai": {}}, "server": {"host": "0.0.0.0"},
           "ui": {"enabled": enabled}}  # fmt: skip
    assert ui_enabled(parse_config(msgspec.json.encode(raw))) is enabled


@pytest.mark.parametrize(
    ("origin", "site", "host", "own"),
    [
        ("http://127.0.0.1:8080", "same-origin", "127.0.0.1:8080", True),
        ("HTTP://LOCALHOST:8080/", "same-origin", "localhost:8080", True),
        ("https://gw.example", "same-origin", "gw.example", True),
        ("http://127.0.0.1:8080", "same-site", "127.0.0.1:8080", False),
        ("http://127.0.0.1:8080", None, "127.0.0.1:8080", False),
        ("http://127.0.0.1:9999", "same-origin", "127.0.0.1:8080", False),
        ("null", "same-origin", "null", False),
        (None, "same-origin", "127.0.0.1:8080", False),
        ("http://127.0.0.1:8080", "same-origin", None, False),
    ],
)
def test_own_page(
    origin: str | None, site: str | None, host: str | None, own: bool
) -> None:
    assert own_page(origin, site, host) is own


def test_pricing_member_by_row_kind() -> None:
    table = PriceTable({
        "a/per": Price(per_image=0.04),
        "a/text": Price(text_input=5),
    })  # fmt: skip
    assert pricing_of(table, "a/per") == ModelPricing("per_image", per_image_usd=0.04)
    assert pricing_of(table, "a/text") is msgspec.UNSET
    assert pricing_of(table, "a/none") is msgspec.UNSET
    listed = PriceTable.load_default()
    tok = pricing_of(listed, "openai/gpt-image-2")
    assert isinstance(tok, ModelPricing)
    # 196, 1756 and 7024 output tokens of a 1024x1024 image at $30/1M.
    assert tok.image_1024_usd == {"low": 0.00588, "medium": 0.05268, "high": 0.21072}
    # No published output tokens per image: rates only, no per-image estimate.
    rates = pricing_of(listed, "openai/gpt-image-2.6-sunburst")
    assert isinstance(rates, ModelPricing)
    assert (rates.image_output_per_1m, rates.image_1024_usd) == (30.0, None)


async def test_memory_store_reads_without_changing() -> None:
    now = [10 * DAY_S + 100.0]
    store = MemoryQuotas(clock=lambda: now[0])
    rule = ClientKey(sha256=SHA, rpm=10, concurrency=2, budget_usd_day=1)
    assert await store.usage("nobody") == KeyUsage(0, 0, 0, 0)
    assert await store.admit("a", rule, "l1") is None
    await store.add_spend("a", 0.25)
    assert await store.usage("a") == KeyUsage(micro_usd(0.25), micro_usd(0.25), 1, 1)
    now[0] += 61  # the hit leaves the window
    assert (await store.usage("a")).requests_last_minute == 0
    now[0] += DAY_S  # a new day; the same month
    used = await store.usage("a")
    assert used.spent_day == 0
    assert used.spent_month == micro_usd(0.25)
    assert await store.usage("nobody") == KeyUsage(0, 0, 0, 0)


def test_report_counts_only_what_is_tracked() -> None:
    now = 20000 * DAY_S + 5.0
    rule = ClientKey(sha256=SHA, concurrency=2, budget_usd_month=10)
    report = build_report("a", rule, KeyUsage(300_000, 2_000_000, 7, 1), now)
    assert report.day.spent_usd == 0.3
    assert report.day.budget_usd is None
    assert report.day.remaining_usd is None
    assert report.month.remaining_usd == 8.0
    assert report.rpm.in_use is None  # no rpm limit: not counted
    assert report.concurrency.in_use == 0  # this request's own slot is left out
    unbudgeted = build_report("b", ClientKey(sha256=SHA), KeyUsage(0, 0, 0, 0), now)
    assert unbudgeted.day.spent_usd is None
    anonymous = build_report(None, None, None, now)
    assert anonymous.key is None
    assert anonymous.day.resets_at == "2024-10-05T00:00:00Z"
