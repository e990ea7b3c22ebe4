"""deploy/k8s: both Kustomize overlays render with ``kubectl kustomize``, every object
validates against the Kubernetes JSON schemas offline (kubernetes-validate, strict), and
the objects fit together (selectors, ports, probes, grace period, egress)."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import msgspec
import pytest

from proxy.config import parse_config
from proxy.controls import exposure_error
from tests.observability.procs import REPO, require_binary, run

Obj = dict[str, Any]
K8S_VERSION = "1.30.0"
CRDS = {"ServiceMonitor", "PrometheusRule"}
PRE_STOP_S = 5


def render(overlay: str) -> list[Obj]:
    kubectl = require_binary("kubectl")
    done = subprocess.run(
        [kubectl, "kustomize", f"deploy/k8s/{overlay}"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # kustomize separates documents with a bare '---' line.
    docs = re.split(r"^---$", done.stdout, flags=re.M)
    return [msgspec.yaml.decode(d) for d in docs if d.strip()]


def by_kind(objs: list[Obj]) -> dict[str, Obj]:
    kinds: dict[str, Obj] = {}
    for obj in objs:
        assert obj["kind"] not in kinds, f"two {obj['kind']} objects"
        kinds[obj["kind"]] = obj
    return kinds


@pytest.fixture(scope="module")
def gateway() -> list[Obj]:
    return render("gateway")


@pytest.fixture(scope="module")
def sidecar() -> list[Obj]:
    return render("sidecar")


def _validate(objs: list[Obj]) -> None:
    for obj in objs:
        if obj["kind"] in CRDS:
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            assert obj["metadata"]["name"]
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_gateway_objects_validate(gateway: list[Obj]) -> None:
    _validate(gateway)
    assert set(by_kind(gateway)) == {
        "ConfigMap", "Deployment", "Service", "ServiceAccount",
        "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
        "ServiceMonitor", "PrometheusRule",
    }  # fmt: skip
    assert {o["metadata"]["namespace"] for o in gateway} == {"imagegate"}


def test_sidecar_objects_validate(sidecar: list[Obj]) -> None:
    _validate(sidecar)
    assert set(by_kind(sidecar)) == {"ConfigMap", "Deployment"}


def test_schema_validation_catches_mistakes(gateway: list[Obj]) -> None:
    deploy = msgspec.json.decode(msgspec.json.encode(by_kind(gateway)["Deployment"]))
    deploy["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["bogus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deploy, K8S_VERSION, strict=True)


def _config(objs: list[Obj]) -> Any:
    cm = by_kind(objs)["ConfigMap"]
    return parse_config(cm["data"]["imagegate.yaml"], source="ConfigMap")


def _proxy(pod: Obj) -> Obj:
    (c,) = [c for c in pod["containers"] if c["name"] == "imagegate"]
    assert isinstance(c, dict)
    return c


def _probe_path(probe: Obj) -> str:
    if "httpGet" in probe:
        path: str = probe["httpGet"]["path"]
        return path
    # A loopback-only sidecar is probed from inside its container.
    script = probe["exec"]["command"][-1]
    found = re.search(r"http://127\.0\.0\.1:8080(/\w+)", script)
    assert found is not None, script
    return found.group(1)


def _check_proxy_container(pod: Obj, objs: list[Obj]) -> Obj:
    config = _config(objs)
    c = _proxy(pod)
    assert pod["terminationGracePeriodSeconds"] > (
        config.server.shutdown_timeout_s + PRE_STOP_S
    )
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRE_STOP_S)]
    assert _probe_path(c["readinessProbe"]) == "/readyz"
    assert _probe_path(c["livenessProbe"]) == "/healthz"
    assert c["resources"]["requests"]["cpu"]
    assert c["resources"]["limits"]["memory"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["envFrom"][0] == {"secretRef": {"name": "imagegate-provider-keys"}}
    # The temp dir is a writable volume; the config comes from the generated ConfigMap.
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert config.limits.temp_dir == "/tmp"
    assert "emptyDir" in volumes[mounts["/tmp"]]
    cm_name = by_kind(objs)["ConfigMap"]["metadata"]["name"]
    assert volumes[mounts["/etc/imagegate"]]["configMap"]["name"] == cm_name
    return c


def test_gateway_fits_together(gateway: list[Obj]) -> None:
    k = by_kind(gateway)
    deploy = k["Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    c = _check_proxy_container(pod, gateway)
    # The rendered config is the gateway's own: on the pod network, with client keys.
    config = _config(gateway)
    assert config.server.host == "0.0.0.0"
    assert "--host" not in c["args"]
    assert (
        exposure_error(host=config.server.host, auth=config.auth, keys=config.keys)
        is None
    )
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    for selector in (
        k["Service"]["spec"]["selector"],
        k["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        k["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"],
        deploy["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    sm = k["ServiceMonitor"]["spec"]
    assert (
        sm["selector"]["matchLabels"].items()
        <= k["Service"]["metadata"]["labels"].items()
    )
    assert sm["endpoints"][0]["port"] == k["Service"]["spec"]["ports"][0]["name"]
    assert sm["endpoints"][0]["path"] == "/metrics"
    hpa = k["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    assert hpa["minReplicas"] >= 2
    assert pod["serviceAccountName"] == k["ServiceAccount"]["metadata"]["name"]


def test_gateway_egress_is_dns_https_and_redis_only(gateway: list[Obj]) -> None:
    policy = by_kind(gateway)["NetworkPolicy"]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    ports = {
        (p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]
    }
    assert ports == {
        (53, "UDP"),
        (53, "TCP"),
        (443, "TCP"),
        (6379, "TCP"),
        (6380, "TCP"),
    }
    (https,) = [r for r in policy["egress"] if r["ports"][0]["port"] == 443]
    assert "10.0.0.0/8" in https["to"][0]["ipBlock"]["except"]


def test_prometheusrule_matches_rules_file(gateway: list[Obj], repo_root: Path) -> None:
    rules = msgspec.yaml.decode(
        (repo_root / "deploy/prometheus/rules.yaml").read_bytes()
    )
    assert by_kind(gateway)["PrometheusRule"]["spec"]["groups"] == rules["groups"]


def test_sidecar_proxy_on_loopback(sidecar: list[Obj]) -> None:
    pod = by_kind(sidecar)["Deployment"]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["app", "imagegate"]
    c = _check_proxy_container(pod, sidecar)
    assert "--host" not in c["args"]
    assert "ports" not in c  # nothing outside the pod reaches it
    assert "exec" in c["readinessProbe"]
    assert _config(sidecar).server.host == "127.0.0.1"
    app_env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert app_env["OPENAI_BASE_URL"] == "http://127.0.0.1:8080/v3"


async def test_prometheusrule_groups_pass_promtool(
    gateway: list[Obj], tmp_path: Path
) -> None:
    """The CRD's payload checked by Prometheus' own rule parser."""
    promtool = require_binary("promtool")
    spec = by_kind(gateway)["PrometheusRule"]["spec"]
    path = tmp_path / "rule.yaml"
    await asyncio.to_thread(path.write_bytes, msgspec.yaml.encode(spec))
    code, out, err = await run(promtool, "check", "rules", str(path))
    assert code == 0, out + err


CRD_DIR = REPO / "tests/deploy/crd"


@pytest.fixture(scope="module")
def crd_validator() -> list[str]:
    """``node validate.mjs`` with the pinned prometheus-operator models installed.

    Optional: the models are npm packages, and Node is not part of CI's base image, so
    without ``node`` and ``npm`` this check is skipped (the structural checks above and
    promtool on the rule payload still run).
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the prometheus-operator schemas")
    if not (CRD_DIR / "node_modules").exists():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CRD_DIR, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    return [node, str(CRD_DIR / "validate.mjs")]


def test_crds_validate_against_operator_schemas(
    gateway: list[Obj], crd_validator: list[str]
) -> None:
    done = subprocess.run(
        crd_validator, input=msgspec.json.encode(gateway),
        capture_output=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"checked 2, failed 0\n"


def test_crd_validator_catches_mistakes(crd_validator: list[str]) -> None:
    bad = [
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
         "metadata": {"name": "a"}, "spec": {"selector": {}, "endpoints": [{"port": 3}]}},
        {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
         "metadata": {"name": "b"}, "spec": {"groups": [{"name": "g", "rules": [{"alert": "A"}]}]}},
    ]  # fmt: skip
    done = subprocess.run(
        crd_validator, input=msgspec.json.encode(bad), capture_output=True, check=False
    )
    assert done.returncode == 1
    err = done.stderr.decode()
    assert "ServiceMonitor/a: data/spec/endpoints/0/port must be string" in err
    assert (
        "PrometheusRule/b: data/spec/groups/0/rules/0 must have required property expr"
        in err
    )
