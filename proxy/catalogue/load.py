"""Reading the catalogue file and merging operator overrides into it.

An override row (config ``catalogue:``) replaces each top-level field it names in the
packaged row (``price``, ``lifecycle``, ``capabilities``, ...) and may add a model the
file does not know. A row with ``alias_of`` takes every field it does not name from
the row it names (snapshot ids).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from importlib import resources
from typing import Any

import msgspec

from proxy.catalogue.schema import Entry, Lifecycle, Status

Rows = Mapping[str, Mapping[str, Entry]]
_TOP = ("schema_version", "checked")


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def decode_rows(
    raw: Mapping[str, Any], *, path: str = "$"
) -> dict[str, dict[str, Entry]]:
    """Rows from decoded YAML; ``msgspec.ValidationError`` names the bad field."""
    return msgspec.convert(
        {k: v for k, v in raw.items() if k not in _TOP},
        dict[str, dict[str, Entry]],
    )


def _merge(base: Entry, over: Entry) -> Entry:
    fields = msgspec.to_builtins(over)  # omit_defaults: only what ``over`` names
    return msgspec.structs.replace(
        base, **{k: getattr(over, k) for k in fields if k != "alias_of"}
    )


class Catalogue:
    """Rows keyed ``<provider type>/<model id>``, aliases resolved, overrides merged."""

    def __init__(
        self, rows: Rows, *, checked: dt.date, overrides: Rows | None = None
    ) -> None:
        merged: dict[str, Entry] = {}
        for ptype, models in rows.items():
            for model, entry in models.items():
                merged[f"{ptype}/{model}"] = entry
        for ptype, models in (overrides or {}).items():
            for model, entry in models.items():
                key = f"{ptype}/{model}"
                old = merged.get(key)
                merged[key] = entry if old is None else _merge(old, entry)
        resolved: dict[str, Entry] = {}
        for key, entry in merged.items():
            if entry.alias_of is not None:
                ptype = key.split("/", 1)[0]
                target = merged.get(f"{ptype}/{entry.alias_of}")
                if target is not None:
                    entry = _merge(target, entry)
            if entry.checked is None:
                entry = msgspec.structs.replace(entry, checked=checked)
            resolved[key] = entry
        self._rows = resolved
        self.checked = checked

    @classmethod
    def load_default(cls, overrides: Rows | None = None) -> Catalogue:
        text = resources.files("proxy").joinpath("catalog.yaml").read_bytes()
        raw = msgspec.yaml.decode(text)
        checked = msgspec.convert(raw["checked"], dt.date)
        return cls(decode_rows(raw), checked=checked, overrides=overrides)

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def get(self, key: str) -> Entry | None:
        return self._rows.get(key)

    def items(self) -> list[tuple[str, Entry]]:
        return sorted(self._rows.items())

    def lifecycle(self, key: str) -> Lifecycle:
        entry = self._rows.get(key)
        if entry is None or entry.lifecycle is None:
            return Lifecycle()
        return entry.lifecycle

    def status(self, key: str, on: dt.date | None = None) -> Status:
        return self.lifecycle(key).status(on or today())

    def models(self, provider_type: str, on: dt.date | None = None) -> list[str]:
        """Model ids a provider type serves today: not shut down, callable by the
        adapter, sorted."""
        prefix = f"{provider_type}/"
        day = on or today()
        out = []
        for key, entry in self._rows.items():
            if not key.startswith(prefix):
                continue
            caps = entry.capabilities
            if caps is not None and not caps.adapter_supported:
                continue
            if (entry.lifecycle or Lifecycle()).status(day) == "shutdown":
                continue
            out.append(key[len(prefix) :])
        return sorted(out)
