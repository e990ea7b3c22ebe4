"""The arena cap is applied on glibc and leaves an operator's own setting alone."""

from __future__ import annotations

import platform

import pytest

from proxy.__main__ import limit_malloc_arenas


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_applied_on_glibc() -> None:
    assert limit_malloc_arenas({}) is True


def test_an_explicit_setting_wins() -> None:
    assert limit_malloc_arenas({"MALLOC_ARENA_MAX": "8"}) is False
