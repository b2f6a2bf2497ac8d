"""JSON schemas of the custom resources the chart renders, from the fields their operators
document (KEDA 2.x, RabbitMQ Cluster Operator 2.x, CloudNativePG 1.2x). Deliberately
closed (`additionalProperties: false`): a misspelt field is an error here, where the
operator would ignore it or refuse the object at install time.
"""

from __future__ import annotations

from typing import Any

_STRING = {"type": "string"}
_INT = {"type": "integer"}
_OBJECT = {"type": "object"}
_QUANTITY = {"anyOf": [{"type": "string"}, {"type": "integer"}]}


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


_METADATA = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
    "namespace": _STRING, "labels": {"type": "object", "additionalProperties": _STRING},
    "annotations": {"type": "object", "additionalProperties": _STRING}}}


def _resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _closed({"apiVersion": {"const": api_version}, "kind": {"const": kind},
                    "metadata": _METADATA, "spec": spec},
                   ("apiVersion", "kind", "metadata", "spec"))


# keda.sh/v1alpha1 — https://keda.sh/docs/latest/reference/scaledobject-spec/ and the
# rabbitmq-queue scaler page (every metadata value is a string).
_RABBITMQ_TRIGGER_METADATA = _closed({
    "host": _STRING, "hostFromEnv": _STRING,
    "protocol": {"enum": ["auto", "http", "amqp"]},
    "mode": {"enum": ["QueueLength", "MessageRate"]},
    "value": {"type": "string", "pattern": r"^\d+(\.\d+)?$"},
    "activationValue": {"type": "string", "pattern": r"^\d+(\.\d+)?$"},
    "queueName": _STRING, "vhostName": _STRING,
    "useRegex": {"enum": ["true", "false"]},
    "excludeUnacknowledged": {"enum": ["true", "false"]},
    "operation": {"enum": ["sum", "max", "avg"]},
    "pageSize": _STRING, "timeout": _STRING, "unsafeSsl": {"enum": ["true", "false"]},
}, ("mode", "value", "queueName"))

_TRIGGER = {
    "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
    "properties": {
        "type": _STRING, "name": _STRING, "metadata": _OBJECT,
        "useCachedMetrics": {"type": "boolean"},
        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
        "authenticationRef": _closed({"name": _STRING,
                                      "kind": {"enum": ["TriggerAuthentication",
                                                        "ClusterTriggerAuthentication"]}},
                                     ("name",)),
    },
    "if": {"properties": {"type": {"const": "rabbitmq"}}},
    "then": {"properties": {"metadata": _RABBITMQ_TRIGGER_METADATA}},
}

SCALED_OBJECT = _resource("keda.sh/v1alpha1", "ScaledObject", _closed({
    "scaleTargetRef": _closed({"name": _STRING, "apiVersion": _STRING, "kind": _STRING,
                               "envSourceContainerName": _STRING}, ("name",)),
    "pollingInterval": {"type": "integer", "minimum": 1},
    "cooldownPeriod": {"type": "integer", "minimum": 0},
    "initialCooldownPeriod": {"type": "integer", "minimum": 0},
    "idleReplicaCount": {"type": "integer", "minimum": 0},
    "minReplicaCount": {"type": "integer", "minimum": 0},
    "maxReplicaCount": {"type": "integer", "minimum": 1},
    "fallback": _closed({"failureThreshold": _INT, "replicas": _INT},
                        ("failureThreshold", "replicas")),
    "advanced": _OBJECT,
    "triggers": {"type": "array", "minItems": 1, "items": _TRIGGER},
}, ("scaleTargetRef", "triggers")))

TRIGGER_AUTHENTICATION = _resource("keda.sh/v1alpha1", "TriggerAuthentication", _closed({
    "secretTargetRef": {"type": "array", "items": _closed(
        {"parameter": _STRING, "name": _STRING, "key": _STRING}, ("parameter", "name", "key"))},
    "env": {"type": "array", "items": _closed(
        {"parameter": _STRING, "name": _STRING, "containerName": _STRING},
        ("parameter", "name"))},
    "podIdentity": _OBJECT, "hashiCorpVault": _OBJECT, "configMapTargetRef": {"type": "array"},
}))

# rabbitmq.com/v1beta1 — the Cluster Operator's RabbitmqCluster API reference.
_RESOURCES = _closed({"requests": _OBJECT, "limits": _OBJECT, "claims": {"type": "array"}})
RABBITMQ_CLUSTER = _resource("rabbitmq.com/v1beta1", "RabbitmqCluster", _closed({
    "replicas": {"type": "integer", "minimum": 0},
    "image": _STRING, "imagePullSecrets": {"type": "array"},
    "service": _closed({"type": {"enum": ["ClusterIP", "LoadBalancer", "NodePort"]},
                        "annotations": _OBJECT, "ipFamilyPolicy": _STRING}),
    "persistence": _closed({"storageClassName": _STRING, "storage": _QUANTITY}),
    "resources": _RESOURCES,
    "affinity": _OBJECT, "tolerations": {"type": "array"},
    "rabbitmq": _closed({"additionalPlugins": {"type": "array", "items": _STRING},
                         "additionalConfig": _STRING, "advancedConfig": _STRING,
                         "envConfig": _STRING, "erlangInetConfig": _STRING}),
    "tls": _OBJECT, "override": _OBJECT, "secretBackend": _OBJECT,
    "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
    "skipPostDeployStep": {"type": "boolean"}, "delayStartSeconds": _INT,
}))

# postgresql.cnpg.io/v1 — CloudNativePG's Cluster API reference.
CNPG_CLUSTER = _resource("postgresql.cnpg.io/v1", "Cluster", _closed({
    "instances": {"type": "integer", "minimum": 1},
    "imageName": _STRING, "imageCatalogRef": _OBJECT, "description": _STRING,
    "storage": _closed({"size": _QUANTITY, "storageClass": _STRING,
                        "resizeInUseVolumes": {"type": "boolean"}, "pvcTemplate": _OBJECT}),
    "walStorage": _OBJECT,
    "bootstrap": _closed({
        "initdb": _closed({"database": _STRING, "owner": _STRING, "secret": _OBJECT,
                           "encoding": _STRING, "localeCollate": _STRING,
                           "localeCType": _STRING, "dataChecksums": {"type": "boolean"},
                           "postInitSQL": {"type": "array"},
                           "postInitApplicationSQL": {"type": "array"}, "import": _OBJECT}),
        "recovery": _OBJECT, "pg_basebackup": _OBJECT}),
    "postgresql": _OBJECT, "resources": _RESOURCES, "affinity": _OBJECT,
    "backup": _OBJECT, "monitoring": _OBJECT, "managed": _OBJECT,
    "primaryUpdateStrategy": {"enum": ["unsupervised", "supervised"]},
    "enableSuperuserAccess": {"type": "boolean"}, "superuserSecret": _OBJECT,
}, ("instances",)))

CUSTOM_RESOURCE_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    (schema["properties"]["apiVersion"]["const"], schema["properties"]["kind"]["const"]): schema
    for schema in (SCALED_OBJECT, TRIGGER_AUTHENTICATION, RABBITMQ_CLUSTER, CNPG_CLUSTER)
}
