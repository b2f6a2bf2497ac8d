"""The Helm chart renders offline with Helm's own engine and every manifest validates
strictly for current Kubernetes; custom resources against their operators' fields."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tessera.testing.chart import (
    CHART,
    InvalidManifest,
    NothingRendered,
    render_chart,
    validate_all,
    validate_manifest,
)

SERVICES = ("gateway", "identity", "contacts", "segments", "consent", "activation")
CONSUMERS = SERVICES[1:]
EVERYTHING = {"autoscaling": {"mode": "keda"}, "rabbitmq": {"create": True},
              "cloudnativepg": {"create": True}, "ingress": {"enabled": True,
                                                             "tls": [{"secretName": "tls",
                                                                      "hosts": ["a.example"]}]}}
ROOT = Path(__file__).resolve().parents[2]
BROKER_URL = "amqp://tessera:secret@rabbitmq.cdp.svc:5672/tessera"


def install(values: dict | None = None) -> list[dict]:
    """Render as an install with an existing broker (the one value without a default)."""
    values = copy.deepcopy(values or {})
    values.setdefault("secrets", {}).setdefault("brokerUrl", BROKER_URL)
    return render_chart(values)


def of_kind(manifests: list[dict], kind: str) -> dict[str, dict]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def pod_specs(manifests: list[dict]) -> dict[str, dict]:
    return {m["metadata"]["name"]: m["spec"]["template"]["spec"]
            for m in manifests if m["kind"] in ("Deployment", "Job")}


@pytest.fixture(scope="module")
def default_install() -> list[dict]:
    return install()


@pytest.fixture(scope="module")
def full_install() -> list[dict]:
    return render_chart(EVERYTHING)


def test_the_default_install_validates_strictly_for_current_kubernetes(default_install):
    validate_all(default_install)

    assert set(of_kind(default_install, "Deployment")) == {f"tessera-{s}" for s in SERVICES}
    assert set(of_kind(default_install, "PodDisruptionBudget")) == set(
        of_kind(default_install, "Deployment"))
    assert {"tessera-gateway"} == set(of_kind(default_install, "Service"))
    assert of_kind(default_install, "Job")["tessera-migrate"]["metadata"]["annotations"][
        "helm.sh/hook"] == "post-install,pre-upgrade"


def test_every_optional_part_renders_and_validates_custom_resources_included(full_install):
    validate_all(full_install)

    kinds = {m["kind"] for m in full_install}
    assert {"ScaledObject", "TriggerAuthentication", "RabbitmqCluster", "Cluster",
            "Ingress"} <= kinds
    assert set(of_kind(full_install, "ScaledObject")) == {f"tessera-{s}" for s in CONSUMERS}


def test_the_hpa_alternative_uses_autoscaling_v2_and_validates():
    manifests = install({"autoscaling": {"mode": "hpa", "maxReplicas": 3}})
    validate_all(manifests)

    hpas = of_kind(manifests, "HorizontalPodAutoscaler")
    assert {m["apiVersion"] for m in hpas.values()} == {"autoscaling/v2"}
    assert all(hpas[f"tessera-{s}"]["spec"]["maxReplicas"] == 3 for s in CONSUMERS)


def test_autoscaled_consumers_never_run_more_replicas_than_partitions(full_install):
    partitions = yaml.safe_load((CHART / "values.yaml").read_text())["partitions"]

    scaled = of_kind(full_install, "ScaledObject").values()
    assert all(s["spec"]["maxReplicaCount"] <= partitions for s in scaled)
    queues = {s["spec"]["triggers"][0]["metadata"]["queueName"] for s in scaled}
    assert queues == {rf"^{s}\..+" for s in CONSUMERS}


@pytest.mark.parametrize(("values", "refusal"), [
    ({"partitions": 4, "autoscaling": {"mode": "hpa", "maxReplicas": 6}},
     "autoscaling.maxReplicas: must not exceed partitions (6 > 4)"),
    ({"partitions": 2, "services": {"contacts": {"replicas": 3}}},
     "services.contacts.replicas: must not exceed partitions (3 > 2)"),
    ({"autoscaling": {"mode": "vpa"}}, "autoscaling.mode: must be one of none, keda, hpa"),
    ({"autoscaling": {"mode": "keda"}}, "rabbitmq.managementUrl: required with autoscaling"),
    ({"autoscaling": {"mode": "keda"}, "rabbitmq": {"managementUrl": "http://mq:15672/"}},
     "autoscaling.keda.credentialsSecret: required with autoscaling.mode keda"),
])
def test_values_that_break_a_rule_are_refused_naming_the_value_and_rule(values, refusal):
    with pytest.raises(Exception, match=re.escape(refusal)):
        install(values)


def test_an_install_without_a_broker_is_refused_rather_than_run_in_process():
    with pytest.raises(Exception, match=re.escape("secrets.brokerUrl: required")):
        render_chart({})


def test_a_chart_that_renders_nothing_fails(tmp_path):
    empty = tmp_path / "tessera"
    shutil.copytree(CHART, empty)
    for template in (empty / "templates").glob("*.yaml"):
        template.write_text("{{- if false }}\nkind: Nothing\n{{- end }}\n")

    with pytest.raises(NothingRendered):
        render_chart({"secrets": {"brokerUrl": BROKER_URL}}, chart=empty)


def test_the_validator_refuses_a_removed_api_an_unknown_kind_and_an_unknown_field(
        default_install):
    removed = {"apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler",
               "metadata": {"name": "old"},
               "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"},
                        "maxReplicas": 2}}
    unknown_kind = {"apiVersion": "v1", "kind": "Frobnicator", "metadata": {"name": "f"}}
    deployment = copy.deepcopy(of_kind(default_install, "Deployment")["tessera-contacts"])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}

    for manifest in (removed, unknown_kind, deployment):
        with pytest.raises(InvalidManifest):
            validate_manifest(manifest, "1.36.0")


def test_a_custom_resource_with_a_field_its_operator_does_not_document_is_refused(
        full_install):
    scaled = copy.deepcopy(of_kind(full_install, "ScaledObject")["tessera-contacts"])
    scaled["spec"]["maxReplicas"] = 4  # KEDA's field is maxReplicaCount
    trigger = copy.deepcopy(of_kind(full_install, "ScaledObject")["tessera-contacts"])
    trigger["spec"]["triggers"][0]["metadata"]["mode"] = "QueueSize"

    with pytest.raises(InvalidManifest, match="maxReplicas"):
        validate_manifest(scaled, "1.36.0")
    with pytest.raises(InvalidManifest, match="QueueSize"):
        validate_manifest(trigger, "1.36.0")


def test_every_pod_runs_non_root_on_a_read_only_root_without_capabilities(full_install):
    for name, spec in pod_specs(full_install).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"]["requests"] and container["resources"]["limits"]


def test_each_service_runs_the_image_start_command_and_is_probed_on_its_operations_port(
        default_install):
    entrypoint = re.search(r"^ENTRYPOINT (.+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert json.loads(entrypoint.group(1)) == ["tessera"]
    for service in SERVICES:
        container = pod_specs(default_install)[f"tessera-{service}"]["containers"][0]
        assert container["args"] == ["run", service]
        assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "ops"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}


def test_the_chart_sets_only_variables_the_services_read(full_install):
    read = set(re.findall(r'"(TESSERA_[A-Z_]+)"', (ROOT / "shared/config.py").read_text()))
    config = of_kind(full_install, "ConfigMap")["tessera-config"]["data"]
    secret = of_kind(full_install, "Secret")["tessera-secrets"]["stringData"]

    assert set(config) | set(secret) <= read


def test_secrets_come_from_an_existing_secret_when_one_is_named():
    manifests = render_chart({"secrets": {"existingSecret": "tessera-prod"}})  # no brokerUrl

    assert not of_kind(manifests, "Secret")
    for spec in pod_specs(manifests).values():
        assert {"secretRef": {"name": "tessera-prod"}} in spec["containers"][0]["envFrom"]


def test_every_value_is_documented_by_the_comment_above_it():
    undocumented = []
    lines = (CHART / "values.yaml").read_text().splitlines()
    parents: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        key = re.match(r"^(\s*)([A-Za-z][\w]*):", line)
        if not key:
            continue
        indent = len(key.group(1))
        parents = [(i, k) for i, k in parents if i < indent]
        inside_free_form = any(k in ("resources", "hosts") for _, k in parents)
        previous = next((lines[i].strip() for i in range(number - 1, -1, -1)
                         if lines[i].strip()), "")
        if not inside_free_form and not previous.startswith("#"):
            undocumented.append(key.group(2))
        parents.append((indent, key.group(2)))

    assert undocumented == []


def test_helm_lint_in_strict_mode_finds_no_warning_or_error():
    import helm_python

    report = helm_python.lint(str(CHART), {"secrets": {"brokerUrl": BROKER_URL}}, strict=True,
                              kube_version="v1.36.0")

    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
