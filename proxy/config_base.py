"""The building blocks every config section shares: the Struct base and the numeric
types with their bounds.

A leaf module (it imports nothing of ours): ``proxy.config``, ``proxy.controls`` and
each provider's ``Config`` build on it without importing one another.
"""

from __future__ import annotations

from typing import Annotated

import msgspec


class ConfigBase(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Frozen, and an unknown key is an error: a typo in YAML must not pass silently."""


PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
NonNegSeconds = Annotated[float, msgspec.Meta(ge=0)]
