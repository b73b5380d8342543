"""Offline validation of KubeRay manifests (RayJob, RayService of ``ray.io/v1``).

No package on PyPI ships KubeRay's CRD schemas (checked: ``kubernetes-validate`` carries
only Kubernetes' built-in kinds; ``codeflare-sdk`` vendors KubeRay's Python client but no
CRD; ``ray`` ships none), and third-party schema files may not be committed here. So the
KubeRay layer below is our own JSON Schema, written from KubeRay's documented v1 API
(the RayJob / RayService / RayCluster spec fields as of KubeRay 1.4-1.5). It is
structural: field names (unknown keys are errors, as a typo would silently be dropped by
the API server's pruning), types, enums and required fields. Every Kubernetes object
embedded in it (pod templates, Services, env vars, resource requirements) is a ``$ref``
into the Kubernetes JSON schemas that ``kubernetes-validate`` ships, so pod templates get
the real Kubernetes validation (strict: unknown fields rejected too).

What this cannot catch: KubeRay's CEL rules and webhook checks (a few are re-done in
``semantic_problems``), fields added in KubeRay releases newer than the list below, and
anything only the operator decides at run time. ``kubectl apply --dry-run=server`` against
a cluster with the KubeRay CRDs installed is the authoritative check.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

K8S_VERSION = "1.33"  # a current EKS/GKE minor; kubernetes-validate picks the closest schema
_K8S_ID = "https://kubernetes.io/api/_definitions.json"


def _k8s(name: str) -> dict[str, str]:
    return {"$ref": f"{_K8S_ID}#/$defs/io.k8s.api.core.v1.{name}"}


_META = {"$ref": f"{_K8S_ID}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
_INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
_NON_NEG_INT32 = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
# Ray start parameters are a map[string]string: KubeRay rejects `num-cpus: 0` (an int).
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    return schema


_AUTOSCALER_OPTIONS = _closed(
    {
        "resources": _k8s("ResourceRequirements"),
        "image": {"type": "string"},
        "imagePullPolicy": {"enum": ["Always", "Never", "IfNotPresent"]},
        "securityContext": _k8s("SecurityContext"),
        "idleTimeoutSeconds": _NON_NEG_INT32,
        "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
        "version": {"enum": ["v1", "v2"]},
        "env": {"type": "array", "items": _k8s("EnvVar")},
        "envFrom": {"type": "array", "items": _k8s("EnvFromSource")},
        "volumeMounts": {"type": "array", "items": _k8s("VolumeMount")},
    }
)

_HEAD_GROUP = _closed(
    {
        "template": _k8s("PodTemplateSpec"),
        "headService": _k8s("Service"),
        "enableIngress": {"type": "boolean"},
        "rayStartParams": _STRING_MAP,
        "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]},
    },
    required=("template",),
)

_WORKER_GROUP = _closed(
    {
        "suspend": {"type": "boolean"},
        "groupName": {"type": "string", "minLength": 1},
        "replicas": _NON_NEG_INT32,
        "minReplicas": _NON_NEG_INT32,
        "maxReplicas": _NON_NEG_INT32,
        "idleTimeoutSeconds": _NON_NEG_INT32,
        "rayStartParams": _STRING_MAP,
        "template": _k8s("PodTemplateSpec"),
        "scaleStrategy": _closed(
            {"workersToDelete": {"type": "array", "items": {"type": "string"}}}
        ),
        "numOfHosts": {"type": "integer", "minimum": 1},
    },
    required=("groupName", "template"),
)

_CLUSTER_SPEC = _closed(
    {
        "suspend": {"type": "boolean"},
        "managedBy": {"enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"]},
        "autoscalerOptions": _AUTOSCALER_OPTIONS,
        "headServiceAnnotations": _STRING_MAP,
        "enableInTreeAutoscaling": {"type": "boolean"},
        "gcsFaultToleranceOptions": {"type": "object"},
        "headGroupSpec": _HEAD_GROUP,
        "rayVersion": {"type": "string"},
        "workerGroupSpecs": {"type": "array", "items": _WORKER_GROUP},
    },
    required=("headGroupSpec",),
)

_RAYJOB_SPEC = _closed(
    {
        "activeDeadlineSeconds": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
        "backoffLimit": _NON_NEG_INT32,
        "rayClusterSpec": _CLUSTER_SPEC,
        "submitterPodTemplate": _k8s("PodTemplateSpec"),
        "metadata": _STRING_MAP,
        "clusterSelector": _STRING_MAP,
        "submitterConfig": _closed({"backoffLimit": _NON_NEG_INT32}),
        "managedBy": {"enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"]},
        "entrypoint": {"type": "string"},
        "runtimeEnvYAML": {"type": "string"},
        "jobId": {"type": "string"},
        "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
        "entrypointResources": {"type": "string"},
        "entrypointNumCpus": {"type": "number", "minimum": 0},
        "entrypointNumGpus": {"type": "number", "minimum": 0},
        "ttlSecondsAfterFinished": _NON_NEG_INT32,
        "shutdownAfterJobFinishes": {"type": "boolean"},
        "suspend": {"type": "boolean"},
    }
)

_RAYSERVICE_SPEC = _closed(
    {
        "serveConfigV2": {"type": "string"},
        "rayClusterConfig": _CLUSTER_SPEC,
        "serveService": _k8s("Service"),
        "upgradeStrategy": _closed(
            {"type": {"enum": ["NewCluster", "NewClusterWithIncrementalUpgrade", "None"]}}
        ),
        "excludeHeadPodFromServeSvc": {"type": "boolean"},
        "rayClusterDeletionDelaySeconds": _NON_NEG_INT32,
        "serviceUnhealthySecondThreshold": _INT32,
        "deploymentUnhealthySecondThreshold": _INT32,
    },
    required=("rayClusterConfig",),
)


def _resource(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "apiVersion": {"const": "ray.io/v1"},
            "kind": {"const": kind},
            "metadata": {"allOf": [_META, {"type": "object", "required": ["name"]}]},
            "spec": spec,
        },
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
    }


SCHEMAS = {
    "RayJob": _resource("RayJob", _RAYJOB_SPEC),
    "RayService": _resource("RayService", _RAYSERVICE_SPEC),
}


@cache
def _registry():
    """The Kubernetes definitions kubernetes-validate ships, as a referencing registry."""
    import importlib.resources

    from kubernetes_validate.utils import all_versions, major_minor
    from referencing import Registry, Resource

    version = [v for v in all_versions() if major_minor(v) <= K8S_VERSION][-1]
    # The "-strict" variant sets additionalProperties: false on every object, so an
    # unknown or misspelt field inside a pod template is an error, as it is for kubectl.
    path = (
        importlib.resources.files("kubernetes_validate")
        / "kubernetes-json-schema"
        / f"v{version}-local-strict"
        / "_definitions.json"
    )
    definitions = json.loads(path.read_text())
    return Registry().with_resource(_K8S_ID, Resource.from_contents(definitions))


def schema_errors(manifest: dict[str, Any]) -> list[str]:
    """Every schema violation of a RayJob/RayService manifest, as 'path: message' lines."""
    import jsonschema

    kind = manifest.get("kind")
    if kind not in SCHEMAS:
        return [f"kind: expected one of {sorted(SCHEMAS)}, got {kind!r}"]
    validator = jsonschema.Draft202012Validator(SCHEMAS[kind], registry=_registry())
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    ]


def cluster_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    spec = manifest["spec"]
    return spec["rayClusterSpec"] if manifest["kind"] == "RayJob" else spec["rayClusterConfig"]


def semantic_problems(manifest: dict[str, Any]) -> list[str]:
    """Checks KubeRay makes beyond the schema (its webhook / operator), re-done here."""
    problems = []
    cluster = cluster_spec(manifest)
    names = [group["groupName"] for group in cluster.get("workerGroupSpecs", [])]
    if len(names) != len(set(names)):
        problems.append(f"worker group names are not unique: {names}")
    for group in cluster.get("workerGroupSpecs", []):
        low, high = group.get("minReplicas", 0), group.get("maxReplicas", 2**31 - 1)
        replicas = group.get("replicas", low)
        if not low <= replicas <= high:
            problems.append(
                f"{group['groupName']}: replicas {replicas} outside [{low}, {high}] "
                "(minReplicas <= replicas <= maxReplicas)"
            )
    # KubeRay identifies the Ray container as the first one of each pod.
    for pod in _pod_templates(cluster):
        containers = pod["spec"].get("containers", [])
        if not containers or not containers[0].get("image"):
            problems.append("every Ray pod's first container needs an image")
    return problems


def _pod_templates(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    return [cluster["headGroupSpec"]["template"]] + [
        group["template"] for group in cluster.get("workerGroupSpecs", [])
    ]
