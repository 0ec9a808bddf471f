"""deploy/k8s renders with ``kubectl kustomize`` and every document is a valid
Kubernetes object, checked against the ``kubernetes`` client's models strictly:
every key must be a field of the model (the models alone ignore unknown keys, so a
typo like ``readinessProbes`` would pass them), scalars must have the field's type,
and the models' own client-side validation (required fields, enums) runs on
deserialization. Then the fields that matter are asserted one by one.
"""

from __future__ import annotations

import datetime
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from kubernetes.client import ApiClient

ROOT = Path(__file__).resolve().parents[2]
KINDS = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "Secret"): "V1Secret",
    ("v1", "Service"): "V1Service",
    ("apps/v1", "StatefulSet"): "V1StatefulSet",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
}
_PRIMITIVE: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "float": (int, float),
    "object": (str, int, dict, list, bool),  # IntOrString and free-form fields
    "datetime": (str, datetime.datetime),
}


def _check(value: Any, type_name: str, where: str) -> None:
    """Raise AssertionError where ``value`` does not fit the model type ``type_name``."""
    if match := re.fullmatch(r"Optional\[(.+)\]", type_name):
        _check(value, match.group(1), where)
        return
    if match := re.fullmatch(r"(?:list|List)\[(.+)\]", type_name):
        assert isinstance(value, list), f"{where}: expected a list"
        for i, item in enumerate(value):
            _check(item, match.group(1), f"{where}[{i}]")
        return
    if match := re.fullmatch(r"(?:dict\(str, (.+)\)|Dict\[str, (.+)\])", type_name):
        assert isinstance(value, dict), f"{where}: expected a mapping"
        for key, item in value.items():
            _check(item, match.group(1) or match.group(2), f"{where}.{key}")
        return
    if type_name in _PRIMITIVE:
        ok = isinstance(value, _PRIMITIVE[type_name])
        if type_name == "int":
            ok = ok and not isinstance(value, bool)
        assert ok, f"{where}: {value!r} is not {type_name}"
        return
    model = getattr(kubernetes.client, type_name)
    assert isinstance(value, dict), f"{where}: expected a {type_name} mapping"
    fields = {wire: attr for attr, wire in model.attribute_map.items()}
    for key, item in value.items():
        assert key in fields, f"{where}: {key!r} is not a field of {type_name}"
        _check(item, model.openapi_types[fields[key]], f"{where}.{key}")


def _render() -> list[dict[str, Any]]:
    proc = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "deploy" / "k8s")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module")
def docs() -> dict[str, Any]:
    """Each rendered document, strictly checked, deserialized into its model."""
    client = ApiClient()
    out: dict[str, Any] = {}
    for doc in _render():
        model_name = KINDS[(doc["apiVersion"], doc["kind"])]
        _check(doc, model_name, doc["kind"])
        obj = client._ApiClient__deserialize(doc, model_name)  # type: ignore[attr-defined]
        assert type(obj).__name__ == model_name
        out[doc["kind"]] = obj
    return out


def test_every_kind_is_present(docs: dict[str, Any]) -> None:
    assert set(docs) == {kind for _, kind in KINDS}


def test_the_strict_check_rejects_a_misspelt_field() -> None:
    bad = {"apiVersion": "v1", "kind": "Service", "spec": {"clusterIp": "None"}}
    with pytest.raises(AssertionError, match="clusterIp"):
        _check(bad, "V1Service", "Service")
    with pytest.raises(AssertionError, match="not int"):
        _check({"spec": {"replicas": "4"}}, "V1StatefulSet", "StatefulSet")


def test_headless_service_selects_the_statefulset(docs: dict[str, Any]) -> None:
    svc, sts = docs["Service"], docs["StatefulSet"]
    assert svc.spec.cluster_ip == "None"
    assert sts.spec.service_name == svc.metadata.name
    assert svc.spec.selector == sts.spec.selector.match_labels
    labels = sts.spec.template.metadata.labels
    assert all(labels.get(k) == v for k, v in svc.spec.selector.items())
    assert docs["PodDisruptionBudget"].spec.selector.match_labels == svc.spec.selector
    assert docs["NetworkPolicy"].spec.pod_selector.match_labels == svc.spec.selector


def test_probes_listen_and_token_mount(docs: dict[str, Any]) -> None:
    sts = docs["StatefulSet"]
    pod = sts.spec.template.spec
    (container,) = pod.containers
    (port,) = container.ports
    assert (port.name, port.container_port) == ("ws", 8765)
    for probe in (container.readiness_probe, container.liveness_probe):
        assert probe.http_get.path == "/readyz"
        assert probe.http_get.port in ("ws", 8765)
    assert docs["Service"].spec.ports[0].target_port in ("ws", 8765)
    args = container.args
    assert "--listen=ws://0.0.0.0:8765" in args
    assert "--ws-auth=capability-token" in args
    token_file = "/var/run/secrets/unified-exec/token"
    assert f"--ws-token-file={token_file}" in args
    mount = next(v for v in container.volume_mounts if v.name == "token")
    assert mount.read_only and token_file == f"{mount.mount_path}/token"
    volume = next(v for v in pod.volumes if v.name == "token")
    assert volume.secret.secret_name == docs["Secret"].metadata.name
    assert "token" in docs["Secret"].string_data
    assert pod.automount_service_account_token is False


def test_security_context_resources_and_drain(docs: dict[str, Any]) -> None:
    pod = docs["StatefulSet"].spec.template.spec
    (container,) = pod.containers
    assert pod.security_context.run_as_non_root is True
    assert pod.security_context.run_as_user not in (None, 0)
    sc = container.security_context
    assert sc.run_as_non_root is True
    assert sc.read_only_root_filesystem is True
    assert sc.allow_privilege_escalation is False
    assert sc.capabilities.drop == ["ALL"] and not sc.capabilities.add
    writable = {m.mount_path for m in container.volume_mounts if not m.read_only}
    assert container.working_dir in writable and "/tmp" in writable
    for key in ("cpu", "memory"):
        assert key in container.resources.requests and key in container.resources.limits
    # The server drains on SIGTERM in seconds; the grace period leaves headroom
    # but stays short enough for a quick rollout.
    assert 10 <= pod.termination_grace_period_seconds <= 60
    assert docs["PodDisruptionBudget"].spec.max_unavailable == 1
