"""The module size budget: a module that grows past its cap is split before it lands.

Caps are in lines (``wc -l``): 400 for a module of ``proxy/``, 250 for a provider
module under ``proxy/providers/``. Small modules are what let a reader hold one in mind.
"""

from __future__ import annotations

from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "proxy"
CAP = 400
PROVIDER_CAP = 250


def cap_of(path: Path) -> int:
    return PROVIDER_CAP if path.parent.name == "providers" else CAP


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize(
    "path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE.parent))
)
def test_module_within_its_size_cap(path: Path) -> None:
    lines = len(path.read_bytes().splitlines())
    assert lines <= cap_of(path), f"{path.name}: {lines} lines, cap {cap_of(path)}"
