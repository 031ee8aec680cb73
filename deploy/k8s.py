"""`coe deploy k8s`: plain Kubernetes manifests rendered from a pool file.

What it writes (one file per part, `kubectl apply -f DIR`):

- `gateway.yaml`: the pool as a ConfigMap; the gateway Deployment (readiness on `/ready`,
  liveness on `/health`, resources, Prometheus scrape annotations, upstream keys from the
  optional Secret `coe-secrets`), its Service and a HorizontalPodAutoscaler on CPU. Replicas
  share everything through Redis, so they scale freely behind the Service.
- `redis.yaml`: Redis as a StatefulSet with a volume, and its Service `redis`.
- `experts.yaml`: one Deployment and one Service per expert the pool runs, named and ported as
  its `base_url` says: vLLM experts request a GPU, run with sleep mode and have probes; llama.cpp
  experts run `coe deploy expert` in coe's `local` image.

Example::

    files = render_k8s(Path("config/vllm.yaml"), Path("k8s"), image="registry/coe:0.1.0")
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from deploy.compose import POOL_IN_CONTAINER, VLLM_IMAGE, dump
from deploy.topology import LOOPBACK, DeployError, ExpertService, expert_services
from experts.engines.vllm import tool_call_args
from experts.pool import load_pool

__all__ = ["GATEWAY_PORT", "render_k8s"]

GATEWAY_PORT = 8000
LABEL = "app.kubernetes.io/name"


def _meta(name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "labels": {
            LABEL: name,
            "app.kubernetes.io/part-of": "coe",
            "app.kubernetes.io/component": component,
        },
    }


def _http(path: str, port: int, period: int, failures: int, delay: int = 0) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "initialDelaySeconds": delay,
        "timeoutSeconds": 5,
    }


def _service(name: str, component: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, component),
        "spec": {
            "selector": {LABEL: name},
            "ports": [{"name": "http", "port": port, "targetPort": port}],
        },
    }


def _gateway(pool_text: str, image: str, replicas: int, max_replicas: int) -> list[dict[str, Any]]:
    name = "coe-gateway"
    checksum = hashlib.sha256(pool_text.encode()).hexdigest()[:16]
    container = {
        "name": "gateway",
        "image": image,
        "args": ["coe", "serve"],
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT}],
        "env": [
            {"name": "COE_POOL", "value": POOL_IN_CONTAINER},
            {"name": "COE_HOST", "value": "0.0.0.0"},
            {"name": "COE_PORT", "value": str(GATEWAY_PORT)},
            {"name": "COE_REDIS_URL", "value": "redis://redis:6379/0"},
        ],
        # upstream API keys (the pool's api_key_env names) and a COE_REDIS_URL with a password
        "envFrom": [{"secretRef": {"name": "coe-secrets", "optional": True}}],
        "volumeMounts": [{"name": "pool", "mountPath": "/etc/coe", "readOnly": True}],
        "readinessProbe": _http("/ready", GATEWAY_PORT, 10, 3),
        "livenessProbe": _http("/health", GATEWAY_PORT, 15, 4, delay=30),
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, "gateway"),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {LABEL: name}},
            "template": {
                "metadata": {
                    "labels": {LABEL: name},
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(GATEWAY_PORT),
                        "prometheus.io/path": "/metrics",
                        "coe/pool-sha256": checksum,  # a new pool rolls the pods
                    },
                },
                "spec": {
                    "containers": [container],
                    "volumes": [{"name": "pool", "configMap": {"name": "coe-pool"}}],
                },
            },
        },
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(name, "gateway"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": replicas,
            "maxReplicas": max(max_replicas, replicas),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta("coe-pool", "gateway"),
        "data": {"pool.yaml": pool_text},
    }
    return [config_map, deployment, _service(name, "gateway", GATEWAY_PORT), hpa]


def _redis() -> list[dict[str, Any]]:
    ping = {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 5, "timeoutSeconds": 3}
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta("redis", "state"),
        "spec": {
            "serviceName": "redis",
            "replicas": 1,
            "selector": {"matchLabels": {LABEL: "redis"}},
            "template": {
                "metadata": {"labels": {LABEL: "redis"}},
                "spec": {
                    "containers": [
                        {
                            "name": "redis",
                            "image": "redis:7",
                            "args": ["--appendonly", "yes"],
                            "ports": [{"name": "redis", "containerPort": 6379}],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                            "readinessProbe": ping,
                            "livenessProbe": ping | {"initialDelaySeconds": 10},
                            "resources": {
                                "requests": {"cpu": "250m", "memory": "512Mi"},
                                "limits": {"memory": "2Gi"},
                            },
                        }
                    ]
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "8Gi"}},
                    },
                }
            ],
        },
    }
    return [statefulset, _service("redis", "state", 6379)]


def _vllm_container(svc: ExpertService) -> dict[str, Any]:
    expert = svc.expert
    return {
        "name": "vllm",
        "image": VLLM_IMAGE,
        "args": [
            f"--model={expert.served_model}",
            f"--served-model-name={expert.served_model}",
            f"--port={svc.port}",
            f"--max-model-len={expert.context_length}",
            "--enable-sleep-mode",
            *tool_call_args(expert),  # the pool's tool-call parser is in extra_args
            *expert.extra_args,
        ],
        "env": [
            # exposes POST /sleep and /wake_up, which coe's residency drives
            {"name": "VLLM_SERVER_DEV_MODE", "value": "1"},
            {
                "name": "HF_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {"name": "hf-token", "key": "token", "optional": True}
                },
            },
        ],
        "ports": [{"name": "http", "containerPort": svc.port}],
        "startupProbe": _http("/health", svc.port, 10, 90),  # the first start downloads weights
        "readinessProbe": _http("/health", svc.port, 10, 3),
        "livenessProbe": _http("/health", svc.port, 20, 3),
        "resources": {"limits": {"nvidia.com/gpu": 1}, "requests": {"cpu": "2", "memory": "16Gi"}},
        "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}],
    }


def _llamacpp_container(svc: ExpertService, image: str) -> dict[str, Any]:
    return {
        "name": "llamacpp",
        "image": image,
        "args": [
            "coe",
            "deploy",
            "expert",
            "--pool",
            POOL_IN_CONTAINER,
            "--name",
            svc.expert.name,
            "--host",
            "0.0.0.0",
        ],
        "ports": [{"name": "http", "containerPort": svc.port}],
        "readinessProbe": _http("/v1/models", svc.port, 5, 3),
        "livenessProbe": _http("/v1/models", svc.port, 20, 3, delay=30),
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "volumeMounts": [{"name": "pool", "mountPath": "/etc/coe", "readOnly": True}],
    }


def _expert(svc: ExpertService, local_image: str) -> list[dict[str, Any]]:
    if svc.engine == "vllm":
        container = _vllm_container(svc)
        volumes = [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}]
    else:
        container = _llamacpp_container(svc, local_image)
        volumes = [{"name": "pool", "configMap": {"name": "coe-pool"}}]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(svc.name, "expert"),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {LABEL: svc.name}},
            "template": {
                "metadata": {"labels": {LABEL: svc.name}},
                "spec": {"containers": [container], "volumes": volumes},
            },
        },
    }
    return [deployment, _service(svc.name, "expert", svc.port)]


def _dump(docs: list[dict[str, Any]], what: str, source: str) -> str:
    head = f"# {what}, rendered by `coe deploy k8s --pool {source}`.\n"
    return head + "---\n".join(dump(d) for d in docs)


def render_k8s(
    pool_path: Path,
    out: Path,
    image: str = "coe:latest",
    local_image: str = "coe-local:latest",
    replicas: int = 2,
    max_replicas: int = 10,
) -> dict[Path, str]:
    """The manifests for the pool at `pool_path`, as {file to write: text}, inside `out`.

    Raises `DeployError` for a pool whose experts listen on loopback (a cluster reaches an
    expert through its Service: the base_url host must be the Service name).
    """
    pool_text = pool_path.read_text()
    pool = load_pool(pool_path)
    services = expert_services(pool)
    for svc in services:
        host = svc.expert.base_url and svc.expert.base_url.split("//", 1)[1].split(":")[0]
        if host in LOOPBACK:
            raise DeployError(
                f"expert {svc.expert.name!r} listens on {host}: in a cluster the gateway reaches "
                "an expert through its Service, so its base_url must name it (e.g. "
                f"http://{svc.name.removeprefix('expert-')}:{svc.port}/v1)"
            )
    source = pool_path.as_posix()
    experts = [doc for svc in services for doc in _expert(svc, local_image)]
    files = {
        out / "gateway.yaml": _dump(
            _gateway(pool_text, image, replicas, max_replicas), "The coe gateway", source
        ),
        out / "redis.yaml": _dump(_redis(), "Redis, the state the gateway replicas share", source),
    }
    if experts:
        files[out / "experts.yaml"] = _dump(experts, "The pool's experts", source)
    return files
