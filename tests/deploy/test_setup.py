"""The README's set-up on a fresh machine: `make test` provides the system tools the
suite starts, and a tool that is missing fails the suite with one line, never a skip."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.observability.procs import REPO, require_binary

SCRIPT = REPO / "scripts/system-deps"


def test_a_missing_tool_fails_saying_how_to_get_it() -> None:
    with pytest.raises(pytest.fail.Exception) as failed:
        require_binary("imagegate-no-such-tool")
    assert str(failed.value) == (
        "imagegate-no-such-tool is not installed: run scripts/system-deps"
    )


def test_make_test_installs_the_tools_before_pytest() -> None:
    # A dry run: make prints the recipes it would run, in order.
    done = subprocess.run(
        ["make", "-n", "-W", "pyproject.toml", "test"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    deps = lines.index("scripts/system-deps")
    assert deps < next(i for i, line in enumerate(lines) if "pytest" in line)
    assert "scripts/system-deps" in (REPO / ".ci/run").read_text()


def test_system_deps_is_silent_when_everything_is_there() -> None:
    done = subprocess.run([SCRIPT], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_system_deps_without_root_names_the_apt_command(tmp_path: Path) -> None:
    # An empty PATH: every tool is missing.
    bash = shutil.which("bash")
    assert bash
    argv = [bash, str(SCRIPT)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) drops root for this test"
        argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    done = subprocess.run(
        argv, env={"PATH": str(tmp_path)}, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        "the test suite needs: sudo apt-get install -y "
        "redis-server wrk nginx prometheus kubernetes-client curl chromium strace valgrind\n"
    )
