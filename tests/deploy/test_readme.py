"""The README documents every metric and every foundation config key with its default."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from proxy.config import MetricsAccess, Server, Ui
from proxy.config_idempotency import IdempotencyConfig
from proxy.providers.base import Pool
from proxy.providers.openai import Config as OpenAIConfig
from tests.deploy.names import exposed_names

_SUFFIX = {"_bucket", "_sum", "_count"}


def _readme(repo_root: Path) -> str:
    return (repo_root / "README.md").read_text()


def test_every_metric_is_in_the_table(repo_root: Path) -> None:
    readme = _readme(repo_root)
    families = {
        name.removesuffix(s)
        for name in exposed_names()
        for s in _SUFFIX
        if name.endswith(s)
    } | {n for n in exposed_names() if not any(n.endswith(s) for s in _SUFFIX)}
    missing = [name for name in sorted(families) if f"| `{name}` |" not in readme]
    assert not missing


def _section(readme: str, heading: str) -> list[str]:
    """The lines under the heading that starts with ``heading``, up to the next one."""
    lines = readme.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith("#")),
        len(lines),
    )
    return lines[start + 1 : end]


@pytest.mark.parametrize(
    ("heading", "struct"),
    [
        ("### `server:`", Server),
        ("### `metrics:`", MetricsAccess),
        ("### `ui:`", Ui),
        ("#### `pool:`", Pool),
        ("#### `providers.openai`", OpenAIConfig),
        ("### `idempotency:`", IdempotencyConfig),
    ],
)
def test_config_keys_documented_with_defaults(
    repo_root: Path, heading: str, struct: type[msgspec.Struct]
) -> None:
    section = _section(_readme(repo_root), heading)
    for field in msgspec.structs.fields(struct):
        row = next(
            (line for line in section if line.startswith(f"| `{field.name}` |")), None
        )
        assert row is not None, field.name
        default = field.default
        if isinstance(default, bool):
            assert f"`{str(default).lower()}`" in row, row
        elif isinstance(default, int | float | str):
            assert f"`{default}`" in row, row
