"""Render the Helm chart offline and validate every manifest, as CI does.

Rendering: `helm-python-sdk` binds Helm's own Go library (libhelm_c, shipped inside the
wheel) with ctypes, so it renders with Helm's real template engine and functions, and
needs neither a `helm` binary nor a cluster.

Validation: built-in kinds with `kubernetes-validate`'s Python API in strict mode (an
unknown field, an unknown kind or an API that Kubernetes no longer serves is an error;
its command line only warns); the operators' custom resources (KEDA, RabbitMQ Cluster
Operator, CloudNativePG) with the small schemas of their documented fields in
`custom_resource_schemas`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tessera.testing.custom_resource_schemas import CUSTOM_RESOURCE_SCHEMAS

CHART = Path(__file__).resolve().parents[2] / "deploy" / "chart"
# Helm 4's default capabilities and the newest schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.36.0", "1.37.0")


class NothingRendered(Exception):
    """A render without a single manifest: always a mistake (values or templates)."""


class InvalidManifest(Exception):
    pass


def render_chart(values: dict[str, Any] | None = None, *, chart: Path = CHART,
                 release: str = "tessera", namespace: str = "tessera") -> list[dict[str, Any]]:
    import helm_python

    rendered = helm_python.Chart.load(str(chart)).render(
        values or {}, name=release, namespace=namespace, is_install=True)
    manifests = [
        document
        for path, text in sorted(rendered.items()) if path.endswith((".yaml", ".yml"))
        for document in yaml.safe_load_all(text) if document
    ]
    if not manifests:
        raise NothingRendered(f"{chart} rendered no manifest with values {values!r}")
    return manifests


def validate_manifest(manifest: dict[str, Any], version: str) -> None:
    """Raises InvalidManifest naming the resource and the rule it breaks."""
    import kubernetes_validate

    name = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
    schema = CUSTOM_RESOURCE_SCHEMAS.get((manifest.get("apiVersion"), manifest.get("kind")))
    try:
        if schema is not None:
            jsonschema.validate(manifest, schema)
        else:
            kubernetes_validate.validate(manifest, version, strict=True)
    except jsonschema.ValidationError as error:
        path = ".".join(str(part) for part in error.absolute_path)
        raise InvalidManifest(f"{name}: {path}: {error.message}") from error
    except kubernetes_validate.SchemaNotFoundError as error:
        raise InvalidManifest(f"{name}: not served by Kubernetes {version}: {error}") from error
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(part) for part in error.path)
        raise InvalidManifest(f"{name}: {path}: {error.message}") from error


def validate_all(manifests: list[dict[str, Any]]) -> None:
    for version in KUBERNETES_VERSIONS:
        for manifest in manifests:
            validate_manifest(manifest, version)
