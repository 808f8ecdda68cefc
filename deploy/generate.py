"""Writes `compose.yaml`, the Prometheus configuration and the Kubernetes manifests under
`deploy/k8s/` from the service registry (`laku.core.services`) and the calls the services make
(`CALLS` below). Run `python deploy/generate.py` after adding a service or a client import;
`tests/test_deploy_files.py` fails while the files and the code disagree.
"""

import sys
from pathlib import Path
from typing import Any

import yaml

from laku.core.services import SANDBOXES, SERVICES, WEB
from laku.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
IMAGE = "laku"
PART_OF = "laku"
SMTP_PORT = 2525
# What runs in production: the services and the web front end, which has no database.
APPS = {WEB.name: WEB, **SERVICES}
# Product photos: product-service writes them, the web serves them, both from this volume.
MEDIA_DIR = "/var/lib/laku/media"
MEDIA_USERS = ("product", "web")

# Who calls whom: the clients each service imports (`laku.<service>.client`, also through a
# platform-wide module such as `laku.audit`) and the kernel's calls to auth (JWKS, service
# tokens). tests/test_deploy_files.py derives it from the imports.
CALLS: dict[str, tuple[str, ...]] = {
    "auth": (),
    "product": ("auth", "factory"),
    "factory": ("auth",),
    "group-buying": ("auth", "notification", "order", "payment", "product", "warehouse"),
    "order": ("auth", "group-buying", "notification", "payment", "product"),
    "payment": ("auth", "group-buying", "notification", "settlement", "wallet"),
    "notification": ("auth",),
    "warehouse": (
        "auth",
        "factory",
        "group-buying",
        "logistics",
        "notification",
        "order",
        "product",
        "settlement",
    ),
    "wallet": ("auth",),
    "logistics": ("address", "auth", "order"),
    # Its audit endpoint (`laku.audit`) reads group-buying, payment, wallet and warehouse.
    "settlement": ("auth", "factory", "group-buying", "payment", "wallet", "warehouse"),
    "address": ("auth",),
    "web": tuple(sorted(SERVICES)),
}
# Services that call a provider (Xendit, Biteship, WhatsApp, SMTP): in production they reach
# the internet; in development, the sandboxes.
PROVIDER_CALLS: dict[str, tuple[str, ...]] = {
    "payment": ("xendit-sandbox",),
    "wallet": ("xendit-sandbox",),
    "settlement": ("xendit-sandbox",),
    "logistics": ("biteship-sandbox",),
    "notification": ("whatsapp-sandbox", "smtp-sandbox", "push-sandbox"),
}
# Providers' webhooks: the sandboxes call these services back.
WEBHOOKS: dict[str, tuple[str, ...]] = {
    "xendit-sandbox": ("payment", "wallet"),
    "biteship-sandbox": ("logistics",),
}
# Busy under a group buy's traffic: scaled on CPU by a HorizontalPodAutoscaler.
AUTOSCALED = ("group-buying", "warehouse", "payment", "web")

# A process's own secret, never shared: a service's credential goes in its Deployment's own
# Secret when an operator gives each service only its own (README, "One credential per service").
PER_PROCESS_SECRETS = frozenset({"service_credential"})
# Settings that are secrets: every shared one is a key of the `laku-secrets` Secret.
SECRET_SETTINGS = tuple(
    f"LAKU_{name.upper()}"
    for name, field in Settings.model_fields.items()
    if "SecretStr" in str(field.annotation) and name not in PER_PROCESS_SECRETS
)
SECRET_KEYS = ("LAKU_DATABASE_URL", "LAKU_MIGRATION_DATABASE_URL", *SECRET_SETTINGS)


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # the files are read by people: no &id001
        return True


def labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}


def selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name}


def container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def deployment(name: str, port: int, args: list[str], *, replicas: int) -> dict[str, Any]:
    probe = {"httpGet": {"port": "http"}, "timeoutSeconds": 2}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels(name)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector(name)},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": labels(name),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security(),
                    # preStop (5 s) + the server's own grace for requests in flight (20 s).
                    "terminationGracePeriodSeconds": 30,
                    "containers": [
                        {
                            "name": name,
                            "image": IMAGE,
                            "args": args,
                            "ports": [{"name": "http", "containerPort": port}],
                            "envFrom": [
                                {"configMapRef": {"name": "laku-config"}},
                                {"secretRef": {"name": "laku-secrets"}},
                            ],
                            "env": [{"name": "LAKU_SERVICE", "value": name}],
                            "readinessProbe": {
                                **probe,
                                "httpGet": {"path": "/ready", "port": "http"},
                                "periodSeconds": 5,
                                "failureThreshold": 3,
                            },
                            "livenessProbe": {
                                **probe,
                                "httpGet": {"path": "/health", "port": "http"},
                                "periodSeconds": 10,
                                "failureThreshold": 6,
                            },
                            "startupProbe": {
                                **probe,
                                "httpGet": {"path": "/health", "port": "http"},
                                "periodSeconds": 2,
                                "failureThreshold": 60,
                            },
                            # Endpoints stop sending it traffic before SIGTERM arrives.
                            "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "192Mi"},
                                "limits": {"cpu": "1", "memory": "512Mi"},
                            },
                            "securityContext": container_security(),
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory"}}],
                },
            },
        },
    }


def with_media(deployment: dict[str, Any]) -> dict[str, Any]:
    pod = deployment["spec"]["template"]["spec"]
    pod["containers"][0]["volumeMounts"].append({"name": "media", "mountPath": MEDIA_DIR})
    pod["volumes"].append({"name": "media", "persistentVolumeClaim": {"claimName": "laku-media"}})
    return deployment


def media_volume() -> dict[str, Any]:
    """Shared by every replica of product and web: a storage class with ReadWriteMany (NFS,
    EFS, Filestore...)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "laku-media", "labels": {"app.kubernetes.io/part-of": PART_OF}},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "20Gi"}}},
    }


def service(name: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels(name)},
        "spec": {
            "selector": selector(name),
            "ports": [{"name": "http", "port": port, "targetPort": "http"}],
        },
    }


def disruption_budget(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "labels": labels(name)},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(name)}},
    }


def autoscaler(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "labels": labels(name)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 2,
            "maxReplicas": 10,
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


def dns_egress() -> dict[str, Any]:
    return {
        "to": [
            {
                "namespaceSelector": {},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }


def to_pods(names: list[str], ports: list[int]) -> dict[str, Any]:
    return {
        "to": [
            {
                "podSelector": {
                    "matchExpressions": [
                        {"key": "app.kubernetes.io/name", "operator": "In", "values": names}
                    ]
                }
            }
        ],
        "ports": [{"protocol": "TCP", "port": port} for port in ports],
    }


def from_pods(names: list[str], port: int) -> dict[str, Any]:
    return {
        "from": [
            {
                "podSelector": {
                    "matchExpressions": [
                        {"key": "app.kubernetes.io/name", "operator": "In", "values": names}
                    ]
                }
            }
        ],
        "ports": [{"protocol": "TCP", "port": port}],
    }


def callers_of(name: str) -> list[str]:
    return sorted(caller for caller, callees in CALLS.items() if name in callees)


def network_policy(name: str, port: int) -> dict[str, Any]:
    """Ingress: from the services that call it, the ingress controller (public API) and
    Prometheus. Egress: DNS, PgBouncer (the web has no database), the services it calls."""
    callees = sorted(CALLS[name])
    ingress = [
        {
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                    }
                },
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                },
            ],
            "ports": [{"protocol": "TCP", "port": port}],
        }
    ]
    if callers_of(name):
        ingress.append(from_pods(callers_of(name), port))
    egress = [dns_egress(), *([to_pods(["pgbouncer"], [5432])] if name in SERVICES else [])]
    for callee in callees:
        egress.append(to_pods([callee], [SERVICES[callee].port]))
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "labels": labels(name)},
        "spec": {
            "podSelector": {"matchLabels": selector(name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }


def provider_egress(name: str) -> dict[str, Any]:
    """Production: a service that calls a provider may reach the internet over HTTPS (and
    SMTP submission), nothing inside the cluster beyond what its own policy allows."""
    ports = [443, 587] if name == "notification" else [443]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{name}-providers", "labels": labels(name)},
        "spec": {
            "podSelector": {"matchLabels": selector(name)},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [
                        {
                            "ipBlock": {
                                "cidr": "0.0.0.0/0",
                                "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
                            }
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": port} for port in ports],
                }
            ],
        },
    }


def sandbox_policies(name: str) -> list[dict[str, Any]]:
    """Development: a service that calls a provider reaches its sandbox; a sandbox reaches the
    services its webhooks go to."""
    policies = []
    calls = PROVIDER_CALLS.get(name, ())
    if calls:
        ports = sorted(
            {SANDBOXES[s].port for s in calls} | ({SMTP_PORT} if "smtp-sandbox" in calls else set())
        )
        policies.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": f"{name}-sandboxes", "labels": labels(name)},
                "spec": {
                    "podSelector": {"matchLabels": selector(name)},
                    "policyTypes": ["Egress"],
                    "egress": [to_pods(sorted(calls), ports)],
                },
            }
        )
    webhook_senders = sorted(s for s, targets in WEBHOOKS.items() if name in targets)
    if webhook_senders:
        policies.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": f"{name}-webhooks", "labels": labels(name)},
                "spec": {
                    "podSelector": {"matchLabels": selector(name)},
                    "policyTypes": ["Ingress"],
                    "ingress": [from_pods(webhook_senders, SERVICES[name].port)],
                },
            }
        )
    return policies


def sandbox_policy(name: str) -> dict[str, Any]:
    port = SANDBOXES[name].port
    callers = sorted(s for s, calls in PROVIDER_CALLS.items() if name in calls)
    ports = [port, SMTP_PORT] if name == "smtp-sandbox" else [port]
    egress = [dns_egress()]
    for target in WEBHOOKS.get(name, ()):
        egress.append(to_pods([target], [SERVICES[target].port]))
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "labels": labels(name)},
        "spec": {
            "podSelector": {"matchLabels": selector(name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {
                            "podSelector": {
                                "matchExpressions": [
                                    {
                                        "key": "app.kubernetes.io/name",
                                        "operator": "In",
                                        "values": callers,
                                    }
                                ]
                            }
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": p} for p in ports],
                },
                # The checkout page and the sandbox controls, from the developer's browser.
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                            }
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": port}],
                },
            ],
            "egress": egress,
        },
    }


def default_deny() -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny", "labels": {"app.kubernetes.io/part-of": PART_OF}},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }


def pgbouncer() -> list[dict[str, Any]]:
    name = "pgbouncer"
    users = [*sorted(SERVICES), "migrate"]
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": labels(name)},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": selector(name)},
                "template": {
                    "metadata": {"labels": labels(name)},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": {**pod_security(), "runAsUser": 70, "runAsGroup": 70},
                        "containers": [
                            {
                                "name": name,
                                "image": "edoburu/pgbouncer:v1.24.1-p1",
                                "ports": [{"name": "postgres", "containerPort": 5432}],
                                "env": [
                                    {
                                        "name": "DATABASE_URL",
                                        "valueFrom": {
                                            "secretKeyRef": {
                                                "name": "laku-secrets",
                                                "key": "LAKU_MIGRATION_DATABASE_URL",
                                            }
                                        },
                                    },
                                    # Transaction pooling: a service's connection holds a
                                    # server connection only for its transaction. asyncpg's
                                    # prepared statements need PgBouncer 1.21+ for that.
                                    {"name": "POOL_MODE", "value": "transaction"},
                                    {"name": "MAX_PREPARED_STATEMENTS", "value": "200"},
                                    {"name": "MAX_CLIENT_CONN", "value": "1000"},
                                    {"name": "DEFAULT_POOL_SIZE", "value": "40"},
                                    {"name": "AUTH_TYPE", "value": "scram-sha-256"},
                                    {"name": "LISTEN_PORT", "value": "5432"},
                                ],
                                "readinessProbe": {
                                    "tcpSocket": {"port": "postgres"},
                                    "periodSeconds": 5,
                                },
                                "livenessProbe": {
                                    "tcpSocket": {"port": "postgres"},
                                    "periodSeconds": 10,
                                },
                                "resources": {
                                    "requests": {"cpu": "50m", "memory": "32Mi"},
                                    "limits": {"cpu": "500m", "memory": "128Mi"},
                                },
                                "securityContext": {
                                    **container_security(),
                                    "readOnlyRootFilesystem": False,
                                },
                            }
                        ],
                    },
                },
            },
        },
        service(name, 5432)
        | {
            "spec": {
                "selector": selector(name),
                "ports": [{"name": "postgres", "port": 5432, "targetPort": "postgres"}],
            }
        },
        disruption_budget(name),
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "labels": labels(name)},
            "spec": {
                "podSelector": {"matchLabels": selector(name)},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "from": [
                            {
                                "podSelector": {
                                    "matchExpressions": [
                                        {
                                            "key": "app.kubernetes.io/name",
                                            "operator": "In",
                                            "values": users,
                                        }
                                    ]
                                }
                            }
                        ],
                        "ports": [{"protocol": "TCP", "port": 5432}],
                    }
                ],
                # The managed PostgreSQL is outside the cluster.
                "egress": [
                    dns_egress(),
                    {
                        "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                        "ports": [{"protocol": "TCP", "port": 5432}],
                    },
                ],
            },
        },
    ]


def migration_job() -> dict[str, Any]:
    name = "migrate"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels(name)},
        "spec": {
            "backoffLimit": 3,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": labels(name)},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security(),
                    "containers": [
                        {
                            "name": name,
                            "image": IMAGE,
                            "args": ["migrate"],
                            "envFrom": [{"configMapRef": {"name": "laku-config"}}],
                            # Straight to PostgreSQL: DDL needs a session, not a pooled
                            # transaction.
                            "env": [
                                {
                                    "name": "LAKU_DATABASE_URL",
                                    "valueFrom": {
                                        "secretKeyRef": {
                                            "name": "laku-secrets",
                                            "key": "LAKU_MIGRATION_DATABASE_URL",
                                        }
                                    },
                                }
                            ],
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "192Mi"},
                                "limits": {"cpu": "1", "memory": "512Mi"},
                            },
                            "securityContext": container_security(),
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                        }
                    ],
                    "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory"}}],
                },
            },
        },
    }


def migration_policy() -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "migrate", "labels": labels("migrate")},
        "spec": {
            "podSelector": {"matchLabels": selector("migrate")},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [
                dns_egress(),
                {
                    "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                    "ports": [{"protocol": "TCP", "port": 5432}],
                },
            ],
        },
    }


def config_map(extra: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "laku-config", "labels": {"app.kubernetes.io/part-of": PART_OF}},
        "data": {
            "LAKU_SERVICE_URL_TEMPLATE": "http://{name}:{port}",
            "LAKU_LOG_JSON": "true",
            "LAKU_LOG_LEVEL": "INFO",
            "LAKU_DATABASE_POOL_SIZE": "5",
            "LAKU_DATABASE_MAX_OVERFLOW": "5",
            # Rate limits count per client address: the ingress controller and web (pods, on
            # private addresses the NetworkPolicies alone let in) name the client.
            "LAKU_TRUSTED_PROXIES": '["10.0.0.0/8","172.16.0.0/12","192.168.0.0/16"]',
            **extra,
        },
    }


def secret(values: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "laku-secrets", "labels": {"app.kubernetes.io/part-of": PART_OF}},
        "type": "Opaque",
        "stringData": values,
    }


# The secrets of the development overlay and of compose, whose containers share no data folder
# to generate theirs in. Published here, so `LAKU_ENV=production` refuses every one of them
# (laku.core.secrets.KNOWN_DEMO_VALUES).
DEV_SECRET_VALUES = {
    "LAKU_SERVICE_SECRET": "laku-dev-service-secret",
    "LAKU_ADMIN_PASSWORD": "laku-admin-demo",
    "LAKU_IDEMPOTENCY_KEY_SECRET": "laku-dev-idempotency-key-secret",
    "LAKU_WHATSAPP_ACCESS_TOKEN": "laku-dev-whatsapp-token",
    "LAKU_WEBPUSH_VAPID_PRIVATE_KEY": "QhJ1cOLW8bjtoq3R8lb7bgu0UQvXPd03w1RBCehIGec",
    "LAKU_XENDIT_SECRET_KEY": "xnd_development_laku_sandbox_key",
    "LAKU_XENDIT_CALLBACK_TOKEN": "laku-dev-xendit-callback-token",
    "LAKU_BITESHIP_API_KEY": "biteship_test_laku_sandbox_key",
    "LAKU_BITESHIP_WEBHOOK_SECRET": "laku-dev-biteship-webhook-secret",
    "LAKU_SMTP_PASSWORD": "",
    "LAKU_MEDIA_S3_SECRET_ACCESS_KEY": "",
    "LAKU_SIGNING_KEY_ENCRYPTION_KEY": "laku-dev-signing-key-encryption-key",
}
DEV_SECRETS = {
    "LAKU_DATABASE_URL": "postgresql://laku:laku-dev@pgbouncer:5432/laku",
    "LAKU_MIGRATION_DATABASE_URL": "postgresql://laku:laku-dev@postgres:5432/laku",
    **{key: DEV_SECRET_VALUES[key] for key in SECRET_SETTINGS},
}


def kustomization(resources: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
        **extra,
    }


def base_files() -> dict[str, list[dict[str, Any]]]:
    files: dict[str, list[dict[str, Any]]] = {}
    for name, spec in APPS.items():
        app = deployment(name, spec.port, ["serve", name, "--port", str(spec.port)], replicas=2)
        files[f"services/{name}.yaml"] = [
            with_media(app) if name in MEDIA_USERS else app,
            service(name, spec.port),
            disruption_budget(name),
            network_policy(name, spec.port),
        ]
    files["autoscaling.yaml"] = [autoscaler(name) for name in AUTOSCALED]
    files["pgbouncer.yaml"] = pgbouncer()
    files["migrate-job.yaml"] = [migration_job(), migration_policy()]
    files["network-default-deny.yaml"] = [default_deny()]
    files["media.yaml"] = [media_volume()]
    files["config.yaml"] = [config_map({"LAKU_MEDIA_DIR": MEDIA_DIR})]
    return files


def development_files() -> dict[str, list[dict[str, Any]]]:
    """One replica of everything, a PostgreSQL in the cluster, the providers' sandboxes."""
    files: dict[str, list[dict[str, Any]]] = {}
    for name, spec in SANDBOXES.items():
        port = spec.port
        dep = deployment(name, port, ["serve", name, "--port", str(port)], replicas=1)
        svc = service(name, port)
        if name == "smtp-sandbox":
            container = dep["spec"]["template"]["spec"]["containers"][0]
            container["ports"].append({"name": "smtp", "containerPort": SMTP_PORT})
            svc["spec"]["ports"].append({"name": "smtp", "port": SMTP_PORT, "targetPort": "smtp"})
        files[f"sandboxes/{name}.yaml"] = [dep, svc, sandbox_policy(name)]
    policies = [p for name in SERVICES for p in sandbox_policies(name)]
    files["sandbox-network.yaml"] = policies
    files["postgres.yaml"] = development_postgres()
    files["secrets.yaml"] = [secret(DEV_SECRETS)]
    return files


def development_postgres() -> list[dict[str, Any]]:
    name = "postgres"
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name, "labels": labels(name)},
            "spec": {
                "serviceName": name,
                "replicas": 1,
                "selector": {"matchLabels": selector(name)},
                "template": {
                    "metadata": {"labels": labels(name)},
                    "spec": {
                        "containers": [
                            {
                                "name": name,
                                "image": "postgres:17",
                                "env": [
                                    {"name": "POSTGRES_USER", "value": "laku"},
                                    {"name": "POSTGRES_PASSWORD", "value": "laku-dev"},
                                    {"name": "POSTGRES_DB", "value": "laku"},
                                ],
                                "ports": [{"name": "postgres", "containerPort": 5432}],
                                "readinessProbe": {
                                    "exec": {"command": ["pg_isready", "-U", "laku"]},
                                    "periodSeconds": 5,
                                },
                                "resources": {
                                    "requests": {"cpu": "250m", "memory": "512Mi"},
                                    "limits": {"cpu": "2", "memory": "2Gi"},
                                },
                                "volumeMounts": [
                                    {"name": "data", "mountPath": "/var/lib/postgresql/data"}
                                ],
                            }
                        ]
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "10Gi"}},
                        },
                    }
                ],
            },
        },
        service(name, 5432)
        | {
            "spec": {
                "selector": selector(name),
                "ports": [{"name": "postgres", "port": 5432, "targetPort": "postgres"}],
            }
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "labels": labels(name)},
            "spec": {
                "podSelector": {"matchLabels": selector(name)},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "from": [
                            {
                                "podSelector": {
                                    "matchExpressions": [
                                        {
                                            "key": "app.kubernetes.io/name",
                                            "operator": "In",
                                            "values": ["migrate", "pgbouncer"],
                                        }
                                    ]
                                }
                            }
                        ],
                        "ports": [{"protocol": "TCP", "port": 5432}],
                    }
                ],
                "egress": [],
            },
        },
    ]


def production_files() -> dict[str, list[dict[str, Any]]]:
    return {
        "provider-egress.yaml": [provider_egress(name) for name in sorted(PROVIDER_CALLS)],
    }


def replicas_patch(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas},
    }


def write_all() -> dict[Path, str]:
    """Every generated file and its content."""
    out: dict[Path, str] = {}

    def put(path: Path, documents: list[dict[str, Any]]) -> None:
        out[path] = (
            "# Generated by deploy/generate.py from the service registry: do not edit.\n"
            + (yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, width=100))
        )

    base = base_files()
    for rel, docs in base.items():
        put(K8S / "base" / rel, docs)
    put(
        K8S / "base" / "kustomization.yaml",
        [kustomization(sorted(base), labels=[{"pairs": {"app.kubernetes.io/part-of": PART_OF}}])],
    )

    dev = development_files()
    for rel, docs in dev.items():
        put(K8S / "overlays" / "development" / rel, docs)
    put(
        K8S / "overlays" / "development" / "kustomization.yaml",
        [
            kustomization(
                ["../../base", *sorted(dev)],
                namespace="laku-dev",
                images=[{"name": IMAGE, "newName": "laku", "newTag": "dev"}],
                configMapGenerator=[
                    {
                        "name": "laku-config",
                        "behavior": "merge",
                        "literals": ["LAKU_SMTP_HOST=smtp-sandbox"],
                    }
                ],
                # One replica each, no autoscaling: a laptop's cluster.
                patches=[
                    {"patch": yaml.safe_dump(replicas_patch(name, 1), sort_keys=False)}
                    for name in sorted(APPS)
                ]
                + [
                    {
                        "patch": yaml.safe_dump(
                            {
                                "$patch": "delete",
                                "apiVersion": "autoscaling/v2",
                                "kind": "HorizontalPodAutoscaler",
                                "metadata": {"name": name},
                            },
                            sort_keys=False,
                        )
                    }
                    for name in AUTOSCALED
                ],
            )
        ],
    )

    prod = production_files()
    for rel, docs in prod.items():
        put(K8S / "overlays" / "production" / rel, docs)
    put(
        K8S / "overlays" / "production" / "kustomization.yaml",
        [
            kustomization(
                ["../../base", *sorted(prod)],
                namespace="laku",
                images=[{"name": IMAGE, "newName": "registry.example.com/laku", "newTag": "0.1.0"}],
                configMapGenerator=[
                    {
                        "name": "laku-config",
                        "behavior": "merge",
                        "literals": [
                            # Refuses to start on an unset, short or published secret.
                            "LAKU_ENV=production",
                            "LAKU_XENDIT_API_BASE_URL=https://api.xendit.co",
                            "LAKU_BITESHIP_API_BASE_URL=https://api.biteship.com",
                            "LAKU_WHATSAPP_API_BASE_URL=https://graph.facebook.com",
                        ],
                    }
                ],
                # Secrets are not in git: `secrets.env` beside this file (KEY=value lines, one
                # per key of SECRET_KEYS), or a Secret named laku-secrets made another way.
                secretGenerator=[
                    {
                        "name": "laku-secrets",
                        "envs": ["secrets.env"],
                        "options": {"disableNameSuffixHash": True},
                    }
                ],
            )
        ],
    )
    put(ROOT / "compose.yaml", [compose()])
    put(ROOT / "deploy" / "prometheus" / "prometheus.yml", [prometheus()])
    out[K8S / "overlays" / "production" / "secrets.env.example"] = "".join(
        f"{key}=\n" for key in SECRET_KEYS
    )
    return out


def compose() -> dict[str, Any]:
    env = {
        "LAKU_DATABASE_URL": "postgresql://laku:laku@postgres:5432/laku",
        "LAKU_SERVICE_URL_TEMPLATE": "http://{name}:{port}",
        "LAKU_SMTP_HOST": "smtp-sandbox",
        "LAKU_LOG_JSON": "true",
        "LAKU_OTLP_ENDPOINT": "${LAKU_OTLP_ENDPOINT:-}",
        **{
            key: f"${{{key}:-{value}}}"
            for key, value in DEV_SECRET_VALUES.items()
            if value  # an SMTP password: the smtp-sandbox asks for none
        },
    }
    services: dict[str, Any] = {
        "postgres": {
            "image": "postgres:17",
            "environment": {
                "POSTGRES_USER": "laku",
                "POSTGRES_PASSWORD": "laku",
                "POSTGRES_DB": "laku",
            },
            "volumes": ["pgdata:/var/lib/postgresql/data"],
            "healthcheck": {
                "test": ["CMD", "pg_isready", "-U", "laku"],
                "interval": "2s",
                "timeout": "2s",
                "retries": 30,
            },
        },
        "migrate": {
            "image": f"{IMAGE}:latest",
            "build": ".",
            "command": ["migrate"],
            "environment": env,
            "depends_on": {"postgres": {"condition": "service_healthy"}},
        },
    }
    for name, spec in {**APPS, **SANDBOXES}.items():
        ports = [f"{spec.port}:{spec.port}"]
        if name == "smtp-sandbox":
            ports.append(f"{SMTP_PORT}:{SMTP_PORT}")
        services[name] = {
            "image": f"{IMAGE}:latest",
            "build": ".",  # one build: the same context and image for every process
            "command": ["serve", name],
            "environment": env,
            "ports": ports,
            "healthcheck": {
                "test": ["CMD", "laku", "healthcheck", name],
                "interval": "5s",
                "timeout": "3s",
                "retries": 10,
                "start_period": "20s",
            },
            "depends_on": {"migrate": {"condition": "service_completed_successfully"}}
            if name in SERVICES
            else {},
            "restart": "unless-stopped",
            "stop_grace_period": "30s",
        }
        if name in MEDIA_USERS:
            services[name]["environment"] = {**env, "LAKU_MEDIA_DIR": MEDIA_DIR}
            services[name]["volumes"] = [f"media:{MEDIA_DIR}"]
        if not services[name]["depends_on"]:
            del services[name]["depends_on"]
    services["prometheus"] = {
        "image": "prom/prometheus:v3.1.0",
        "profiles": ["observability"],
        "command": ["--config.file=/etc/prometheus/prometheus.yml"],
        "volumes": ["./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"],
        "ports": ["9090:9090"],
    }
    services["jaeger"] = {
        "image": "jaegertracing/all-in-one:1.65.0",
        "profiles": ["observability"],
        "ports": ["16686:16686", "4318:4318"],
    }
    return {"name": "laku", "services": services, "volumes": {"pgdata": {}, "media": {}}}


def prometheus() -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "15s"},
        "scrape_configs": [
            {
                "job_name": name,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"{name}:{spec.port}"]}],
            }
            for name, spec in APPS.items()
        ],
    }


def main() -> int:
    check = "--check" in sys.argv
    stale = []
    for path, content in write_all().items():
        if check:
            if not path.exists() or path.read_text() != content:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    for path in stale:
        print(f"stale: {path.relative_to(ROOT)}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
