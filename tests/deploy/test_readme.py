"""The README documents every metric and every foundation config key with its default."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from proxy.config import Server
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


@pytest.mark.parametrize("struct", [Server, Pool, OpenAIConfig])
def test_config_keys_documented_with_defaults(
    repo_root: Path, struct: type[msgspec.Struct]
) -> None:
    readme = _readme(repo_root)
    for field in msgspec.structs.fields(struct):
        row = next(
            (
                line
                for line in readme.splitlines()
                if line.startswith(f"| `{field.name}` |")
            ),
            None,
        )
        assert row is not None, field.name
        default = field.default
        if isinstance(default, bool):
            assert f"`{str(default).lower()}`" in row, row
        elif isinstance(default, int | float | str):
            assert f"`{default}`" in row, row
