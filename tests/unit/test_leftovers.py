"""Process tags: a dead process's leftovers are recognised, a live one's never."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy import leftovers


def _child_tag() -> str:
    # A real process that has exited and been reaped: its pid names nothing now.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        tag = leftovers.process_tag()
        assert tag is not None
        boot, namespace, _, _ = tag.split(".")
        start = leftovers._start_time(child.pid)
        assert start is not None
        return f"{boot}.{namespace}.{child.pid}.{start}"
    finally:
        child.kill()
        child.wait()


def test_a_tag_says_whether_its_process_is_gone() -> None:
    mine = leftovers.process_tag()
    assert mine is not None
    assert not leftovers.is_dead(mine)
    assert leftovers.is_dead(_child_tag())
    boot, namespace, pid, start = mine.split(".")
    # The same pid started at another time: a reused pid, so the tag's process died.
    assert leftovers.is_dead(f"{boot}.{namespace}.{pid}.{int(start) + 1}")
    # Another boot or pid namespace (another host or container): not ours to judge.
    assert not leftovers.is_dead(f"{'0' * 32}.{namespace}.{pid}.{int(start) + 1}")
    assert not leftovers.is_dead(f"{boot}.1.{pid}.{int(start) + 1}")
    assert not leftovers.is_dead("not-a-tag")


def test_only_dead_processes_directories_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / f"imagegate-tmp.{_child_tag()}.abc"
    other = tmp_path / f"imagegate-metrics-{_child_tag()}"
    for path in (dead, other):
        path.mkdir()
        (path / "x.part").write_bytes(b"x")
    live = Path(leftovers.make_dir(str(tmp_path), "imagegate-tmp."))
    assert not dead.exists()
    assert other.exists()
    assert live.exists()
    assert leftovers.remove_dead_dirs(str(tmp_path), "imagegate-tmp.") == []
    assert live.exists()


def test_without_proc_nothing_is_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = leftovers.process_tag()
    assert tag is not None
    monkeypatch.setattr(leftovers, "_PROC", str(tmp_path / "no-proc"))
    assert leftovers.process_tag() is None
    assert not leftovers.is_dead(tag)
    path = Path(leftovers.make_dir(str(tmp_path), "imagegate-tmp."))
    assert path.parent == tmp_path
    assert leftovers.remove_dead_dirs(str(tmp_path / "absent"), "imagegate-") == []
