"""The README's "Models and prices" table, rendered from the catalogue.

``python -m proxy.catalogue.table`` prints it; a test keeps the README's copy (between
its ``models-and-prices`` markers) equal to this rendering.
"""

from __future__ import annotations

import datetime as dt
import sys

from proxy.catalogue.load import Catalogue
from proxy.catalogue.schema import Entry, Price

START = "<!-- models-and-prices:start (generated: python -m proxy.catalogue.table) -->"
END = "<!-- models-and-prices:end -->"


def _n(value: float | None) -> str:
    return "?" if value is None else f"${value:g}"


def price_text(price: Price | None) -> str:
    if price is None or price.shape() is None:
        return "unpublished (cost null)"
    parts: list[str] = []
    if price.tokens is not None:
        t = price.tokens
        parts.append(
            f"per 1M tokens: text in {_n(t.text_in)}, image in {_n(t.image_in)}, "
            f"image out {_n(t.image_out)}, text out {_n(t.text_out)}"
        )
    if price.per_image is not None:
        cells = ", ".join(f"{k} {_n(v)}" for k, v in price.per_image.table.items())
        parts.append(f"per image by {price.per_image.by}: {cells}")
    if price.per_megapixel is not None:
        pm = price.per_megapixel
        parts.append(f"per MP: first {_n(pm.first)}, each extra {_n(pm.extra)}")
    if price.credits is not None:
        c = price.credits
        count = "?" if c.count is None else f"{c.count:g}"
        parts.append(f"{count} credits x {_n(c.usd_per_credit)} per image")
    if price.per_prediction is not None:
        parts.append(f"{_n(price.per_prediction)} per prediction")
    if price.per_second is not None:
        parts.append(f"{_n(price.per_second)} per second")
    for rate, unit in (
        (price.per_input_image, "input image"),
        (price.per_input_megapixel, "input MP"),
    ):
        if isinstance(rate, float):
            parts.append(f"+ {_n(rate)} per {unit}")
        elif rate is None:
            parts.append(f"+ an unpublished rate per {unit}")
    return "; ".join(parts)


def _status(entry: Entry, day: dt.date) -> str:
    life = entry.lifecycle
    if life is None:
        return "unknown"
    status = life.status(day)
    if status == "shutdown":
        use = ", ".join(life.replacements()) or "none named"
        return f"retired {life.shutdown} (use {use})"
    if status == "deprecated":
        return f"deprecated, shutdown {life.shutdown or '?'}"
    return status


def markdown(catalogue: Catalogue, day: dt.date) -> str:
    rows = [
        "| Model | Price | Verdict | Lifecycle |",
        "|---|---|---|---|",
    ]
    for key, entry in catalogue.items():
        if entry.alias_of is not None:
            continue
        if entry.lifecycle is not None and entry.lifecycle.status(day) == "shutdown":
            continue
        verdict = entry.price_verdict or "?"
        rows.append(
            f"| `{key}` | {price_text(entry.price)} | {verdict} | {_status(entry, day)} |"
        )
    return "\n".join([START, *rows, END])


if __name__ == "__main__":
    cat = Catalogue.load_default()
    sys.stdout.write(markdown(cat, cat.checked) + "\n")
