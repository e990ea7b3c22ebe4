"""The catalogue file (proxy/catalog.yaml): it loads, every row says where its facts
come from, aliases share their row, and operator overrides replace or add rows."""

from __future__ import annotations

import datetime as dt
import typing

import msgspec
import pytest

from proxy.catalogue.load import Catalogue, decode_rows
from proxy.catalogue.schema import Entry, Lifecycle, Price, Tokens
from proxy.config import ConfigError, parse_config
from proxy.pricing import PriceTable
from proxy.providers.registry import ProviderConfig

DAY = dt.date(2026, 12, 6)


def test_every_row_cites_and_explains() -> None:
    cat = Catalogue.load_default()
    types = {c.__struct_config__.tag for c in typing.get_args(ProviderConfig)}
    assert len(cat.items()) > 50
    for key, row in cat.items():
        assert key.split("/", 1)[0] in types, key
        assert row.checked is not None, key
        unpriced = row.price is None or row.price.shape() is None
        if unpriced or row.price_verdict not in ("primary", None):
            assert row.price_note, f"{key}: a null or non-primary price needs a note"
        if row.price_verdict != "not_found":
            assert row.source, f"{key}: a price needs a source"


def test_aliases_share_their_row() -> None:
    cat = Catalogue.load_default()
    snap = cat.get("openai/gpt-image-2-2026-04-21")
    base = cat.get("openai/gpt-image-2")
    assert snap is not None
    assert base is not None
    assert snap.price == base.price
    assert snap.capabilities is not None
    assert snap.capabilities.streaming


@pytest.mark.parametrize(
    ("key", "status"),
    [
        ("openai/gpt-image-1", "shutdown"),  # retired-id: lifecycle test
        ("openai/gpt-image-1.5", "shutdown"),  # retired-id: lifecycle test
        ("google/gemini-2.5-flash-image", "shutdown"),  # retired-id: lifecycle test
        ("vertex/imagen-4.0-generate-001", "shutdown"),  # retired-id: lifecycle test
        ("amazon/amazon.nova-canvas-v1:0", "shutdown"),  # retired-id: lifecycle test
        ("xai/grok-imagine-image-quality", "shutdown"),  # retired-id: lifecycle test
        ("google/gemini-3.1-flash-image", "active"),  # GA, shutdown unconfirmed
        ("google/gemini-3-pro-image", "active"),
        ("openai/gpt-image-2.5-flare", "active"),
    ],
)
def test_status_follows_the_dates(key: str, status: str) -> None:
    assert Catalogue.load_default().status(key, DAY) == status


def test_lifecycle_status() -> None:
    life = Lifecycle(deprecated=dt.date(2026, 6, 1), shutdown=dt.date(2026, 12, 1))
    assert life.status(dt.date(2026, 5, 1)) == "deprecated"  # announced dates count
    assert life.status(dt.date(2026, 11, 30)) == "deprecated"
    assert life.status(dt.date(2026, 12, 1)) == "shutdown"
    assert Lifecycle().status(DAY) == "unknown"
    assert Lifecycle(released=DAY).status(DAY) == "active"


def test_listing_leaves_out_retired_and_uncallable_models() -> None:
    cat = Catalogue.load_default()
    openai = cat.models("openai", DAY)
    assert "gpt-image-2" in openai
    assert "gpt-image-1" not in openai  # retired-id: lifecycle test
    assert "gemini-3.1-flash-image" in cat.models("google", DAY)
    # The same day seen from before the shutdown still lists it.
    assert "gpt-image-1.5" in cat.models(
        "openai", dt.date(2026, 11, 30)
    )  # retired-id: lifecycle test


def test_overrides_replace_fields_and_add_models() -> None:
    negotiated = Price(tokens=Tokens(text_in=4, image_in=6, image_out=24))
    overrides = {
        "openai": {
            "gpt-image-2": Entry(price=negotiated),
            "gpt-image-9": Entry(price=negotiated, lifecycle=Lifecycle(released=DAY)),
        }
    }
    cat = Catalogue.load_default(overrides)
    row = cat.get("openai/gpt-image-2")
    assert row is not None
    assert row.price == negotiated
    assert row.lifecycle is not None
    assert row.lifecycle.released == dt.date(2026, 4, 21)
    assert row.source  # fields the override does not name are kept
    # A snapshot alias follows its overridden target.
    snap = cat.get("openai/gpt-image-2-2026-04-21")
    assert snap is not None
    assert snap.price == negotiated
    assert "gpt-image-9" in cat.models("openai", DAY)
    table = PriceTable.from_catalogue(cat)
    row9 = table.row("openai/gpt-image-9")
    assert row9 is not None
    assert row9.image_output == 24


def test_overrides_come_from_config_with_full_paths() -> None:
    text = """
providers: {openai: {}}
catalogue:
  openai:
    gpt-image-2: {price: {tokens: {text_in: 4, image_in: 6, image_out: 24}}}
"""
    config = parse_config(text)
    table = PriceTable.load_default(config.catalogue)
    row = table.row("openai/gpt-image-2")
    assert row is not None
    assert row.image_output == 24
    bad = (
        "providers: {openai: {}}\ncatalogue: {xai: {m: {price: {per_image: {by: x}}}}}"
    )
    with pytest.raises(ConfigError, match=r"catalogue\.xai\.m\.price\.per_image"):
        parse_config(bad)
    with pytest.raises(ConfigError, match=r"catalogue\.openai\.m\.lifecycle\.shutdown"):
        parse_config(
            "providers: {openai: {}}\ncatalogue: {openai: {m: {lifecycle: {shutdown: soon}}}}"
        )


def test_unknown_field_in_the_file_is_an_error() -> None:
    with pytest.raises(msgspec.ValidationError, match="pricee"):
        decode_rows({"openai": {"m": {"pricee": None}}})


def test_start_up_warns_of_names_that_point_only_at_retired_models() -> None:
    from proxy.retirements import startup_warnings

    text = """
providers: {openai: {}, google: {}}
models: {old: openai/gpt-image-1, new: openai/gpt-image-2}  # retired-id: lifecycle test
fallbacks:
  openai/gpt-image-1: [openai/gpt-image-1.5]  # retired-id: lifecycle test
  openai/gpt-image-2: [openai/gpt-image-1]  # retired-id: lifecycle test
allowed_models: ["openai/gpt-image-1*", "openai/gpt-image-2*", "google/*2.5*"]
"""
    warnings = startup_warnings(parse_config(text), Catalogue.load_default(), DAY)
    assert (
        warnings
        == [
            "models.old: 'openai/gpt-image-1' is retired "  # retired-id: lifecycle test
            "(shut down 2026-10-23; use gpt-image-2.5-sunburst)",
            "fallbacks.openai/gpt-image-1: every model of the chain is retired",  # retired-id: lifecycle test
            "allowed_models: 'openai/gpt-image-1*' matches only retired models",  # retired-id: lifecycle test
            "allowed_models: 'google/*2.5*' matches only retired models",
        ]
    )
