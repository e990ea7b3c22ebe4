"""The command line, run as a real process."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

PY = sys.executable


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        PY, "-m", "proxy", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_check_config_accepts_the_default(repo_root: Path) -> None:
    code, out, _ = await run("check-config", str(repo_root / "config/imagegate.yaml"))
    assert code == 0
    assert "ok" in out


async def test_invalid_config_is_one_line_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  openai: {}\nserver:\n  port: eighty\n")
    code, _, err = await run("--config", str(bad))
    assert code == 2
    assert err == (
        f"imagegate: invalid config: {bad}: server.port: expected `int`, got `str`\n"
    )


async def test_check_config_counts_in_sentences(tmp_path: Path) -> None:
    good = tmp_path / "one.yaml"
    good.write_text("providers:\n  openai: {}\n")
    code, out, _ = await run("check-config", str(good))
    assert (code, out) == (0, f"{good}: ok (1 provider)\n")
    good.write_text("providers:\n  openai: {}\n  google: {}\n")
    code, out, _ = await run("check-config", str(good))
    assert (code, out) == (0, f"{good}: ok (2 providers)\n")


async def test_check_config_refuses_what_cannot_work(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  openai:\n    base_url: 127.0.0.1:9911/v1\n")
    code, out, err = await run("check-config", str(bad))
    assert (code, out) == (2, "")
    assert "providers.openai.base_url: '127.0.0.1:9911/v1' is not an absolute" in err
    bad.write_text("")
    code, out, err = await run("check-config", str(bad))
    assert (code, out) == (2, "")
    assert "providers: no provider is configured" in err


@pytest.mark.parametrize(
    ("flag", "value", "reason"),
    [
        ("--port", "70000", "--port (server.port): expected `int` <= 65535"),
        ("--port", "-1", "--port (server.port): expected `int` >= 0"),
        ("--workers", "65", "--workers (server.workers): expected `int` <= 64"),
        ("--workers", "0", "--workers (server.workers): expected `int` >= 1"),
    ],
)
async def test_flags_are_checked_like_the_keys_they_override(
    repo_root: Path, flag: str, value: str, reason: str
) -> None:
    # Before: --port 70000 bound port 4464 and --workers 65 started 65 workers.
    config = str(repo_root / "config/imagegate.yaml")
    code, out, err = await run("--config", config, flag, value)
    assert (code, out, err) == (2, "", f"imagegate: {reason}\n")


async def test_unknown_key_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "providers:\n  openai:\n    base_url: https://x\n    api_key: sk-oops\n"
    )
    code, _, err = await run("check-config", str(bad))
    assert code == 2
    assert "api_key" in err
    assert "sk-oops" not in err
    code, _, err = await run("--config", str(tmp_path / "absent.yaml"))
    assert code == 2
    assert "cannot read" in err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serves_with_env_config_and_warns_on_missing_key(
    repo_root: Path, clean_env: dict[str, str]
) -> None:
    port = free_port()
    env = {**clean_env, "IMAGEGATE_CONFIG": str(repo_root / "config/imagegate.yaml")}
    proc = await asyncio.create_subprocess_exec(
        PY, "-m", "proxy", "--port", str(port),
        stderr=asyncio.subprocess.PIPE, env=env, cwd=repo_root,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(100):
                try:
                    async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                        assert r.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("the proxy did not start")
            async with s.post(
                f"http://127.0.0.1:{port}/v3/images/edits",
                json={"model": "openai/gpt-image-2", "prompt": "x",
                      "images": [{"file_id": "file-1"}]},
            ) as r:  # fmt: skip
                assert r.status == 503
    finally:
        proc.terminate()
        assert proc.stderr is not None
        err = (await asyncio.wait_for(proc.stderr.read(), 30)).decode()
        code = await proc.wait()
    assert code == 0
    assert "OPENAI_API_KEY" in err


def _running_block(repo_root: Path) -> list[str]:
    readme = (repo_root / "README.md").read_text()
    start = readme.index("## Running")
    block = readme[
        readme.index("```sh\n", start) + 6 : readme.index(
            "```", readme.index("```sh\n", start) + 6
        )
    ]
    return [line.partition("  #")[0].strip() for line in block.splitlines()]


async def test_readme_cli_examples_run_as_written(
    repo_root: Path, tmp_path: Path
) -> None:
    # Each line as a shell would run it, from a checkout after `make run` made .venv;
    # a line with [OPTIONAL] parts starts the server and is run with none of them.
    (tmp_path / ".venv").symlink_to(Path(PY).parent.parent)
    (tmp_path / "config").symlink_to(repo_root / "config")
    (tmp_path / "key.txt").write_text("sk-example\n")
    lines = _running_block(repo_root)
    assert lines[0] == ".venv/bin/imagegate --help"
    for line in lines:
        if "[" in line:
            assert line.split("[")[0].strip().endswith("config/imagegate.yaml")
            continue
        proc = await asyncio.create_subprocess_shell(
            line, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, (line, err.decode())
        assert out, line
