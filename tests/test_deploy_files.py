"""The image, Compose and the Kubernetes manifests agree with the code: every service and port
of the registry is there with its command, probes and settings and nothing else is; the
NetworkPolicies allow exactly the calls the services' imports make; every manifest is valid
against the Kubernetes schemas (offline, `kubernetes-validate`). No container daemon runs
here, so the files are checked rather than run."""

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from laku.core.services import SANDBOXES, SERVICES, WEB
from laku.core.settings import Settings
from laku.testing.platform import Platform, free_port_offset
from tests.support import deploy_generator

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.32.0"
# What runs in production: the services and the web front end (no database of its own).
APPS = {WEB.name: WEB, **SERVICES}
# Scaled on CPU: the processes a group buy's traffic lands on.
AUTOSCALED = {"group-buying", "warehouse", "payment", "web"}
SERVICE_LABEL = "app.kubernetes.io/name"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifests(folder: Path) -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(folder.rglob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in _documents(path)
    ]


def _by_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == kind}


def _imports_of(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def _package(name: str) -> str:
    """`laku.<package>.app:create_app` -> `<package>`."""
    return APPS[name].app_factory.split(".")[1]


def _imports(schema: str) -> set[str]:
    """Every module the service's package imports, and what the platform-wide modules it
    imports (`laku.audit`, a module of `src/laku/` itself) import in turn: their calls are
    the service's calls when it runs them."""
    modules: set[str] = set()
    for path in (ROOT / "src" / "laku" / schema).rglob("*.py"):
        if "migrations" not in path.parts:
            modules |= _imports_of(path)
    followed: set[str] = set()
    while shared := {
        module
        for module in modules - followed
        if module.count(".") == 1
        and module.startswith("laku.")
        and (ROOT / "src" / "laku" / f"{module.split('.')[1]}.py").exists()
    }:
        followed |= shared
        for module in shared:
            modules |= _imports_of(ROOT / "src" / "laku" / f"{module.split('.')[1]}.py")
    return modules


def derived_calls() -> dict[str, set[str]]:
    """Whom each service (and the web) calls: the services whose `client` module it imports,
    and auth, which the kernel calls for every service (JWKS, service tokens)."""
    by_package = {spec.schema: name for name, spec in SERVICES.items()}
    calls = {}
    for name in APPS:
        package = _package(name)
        callees = {
            by_package[parts[1]]
            for parts in (module.split(".") for module in _imports(package))
            if len(parts) >= 3 and parts[0] == "laku" and parts[2] == "client"
            if parts[1] in by_package and parts[1] != package
        }
        calls[name] = callees | ({"auth"} if name != "auth" else set())
    return calls


def derived_providers() -> dict[str, set[str]]:
    """The provider sandboxes standing in for the providers each service's imports reach."""
    # The sandbox standing in for a provider is the one whose app is in that provider's package.
    sandbox_of = {spec.app_factory.split(".")[2]: name for name, spec in SANDBOXES.items()}
    providers = {}
    for name in APPS:
        # A provider is a package under laku.providers; its modules beside them (http,
        # webhooks) are the plumbing every provider shares.
        reached = {
            sandbox_of[module.split(".")[2]]
            for module in _imports(_package(name))
            if module.startswith("laku.providers.") and module.count(".") >= 3
        }
        if reached:
            providers[name] = reached
    return providers


def _selected(peers: list[dict[str, Any]]) -> set[str]:
    names: set[str] = set()
    for peer in peers:
        selector = peer.get("podSelector") or {}
        names.update(v for k, v in selector.get("matchLabels", {}).items() if k == SERVICE_LABEL)
        for expression in selector.get("matchExpressions", []):
            if expression["key"] == SERVICE_LABEL and expression["operator"] == "In":
                names.update(expression["values"])
    return names


def _egress_to(policy: dict[str, Any]) -> set[str]:
    return {name for rule in policy["spec"].get("egress", []) for name in _selected(rule["to"])}


def _ingress_from(policy: dict[str, Any]) -> set[str]:
    return {name for rule in policy["spec"].get("ingress", []) for name in _selected(rule["from"])}


# --- generated, and current ------------------------------------------------------------------


def test_the_files_are_what_the_generator_makes_from_the_registry() -> None:
    stale = [
        str(path.relative_to(ROOT))
        for path, content in deploy_generator().write_all().items()
        if not path.exists() or path.read_text() != content
    ]
    assert stale == [], "run: python deploy/generate.py"


def test_the_generators_call_table_is_the_one_the_imports_make() -> None:
    generator = deploy_generator()
    assert {name: set(callees) for name, callees in generator.CALLS.items()} == derived_calls()
    assert {
        name: set(sandboxes) for name, sandboxes in generator.PROVIDER_CALLS.items()
    } == derived_providers()


# --- the image -------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_slim_non_root_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) == 2
    assert all(stage.startswith("python:${PYTHON_VERSION}-slim") for stage in stages)
    final = stages[-1]
    assert "COPY --from=build /opt/laku /opt/laku" in final
    assert re.search(r"^USER 10001", final, re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*laku\", \"healthcheck", final, re.M)
    assert 'ENTRYPOINT ["laku"]' in final
    # Nothing is compiled or installed with apt in the final stage: no build tools there.
    assert "apt-get" not in final and "pip install" not in final
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.*)$", final, re.M) for p in line.split()}
    assert {spec.port for spec in {**APPS, **SANDBOXES}.values()} <= exposed
    ignored = [
        line for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] != "#"
    ]
    assert ignored[0] == "*" and {"!pyproject.toml", "!README.md", "!src/"} <= set(ignored)


def test_the_healthcheck_command_answers_for_a_running_service_and_fails_for_a_stopped_one(
    platform: Platform,
) -> None:
    env = {**os.environ, "LAKU_PORT_OFFSET": str(platform.settings.port_offset)}
    laku = [sys.executable, "-m", "laku", "healthcheck"]
    assert subprocess.run([*laku, "auth"], env=env, capture_output=True).returncode == 0
    env["LAKU_PORT_OFFSET"] = str(free_port_offset())  # where nothing listens
    assert subprocess.run([*laku, "auth"], env=env, capture_output=True).returncode == 1


# --- Compose ---------------------------------------------------------------------------------


def test_compose_runs_every_service_and_sandbox_on_its_port_after_the_migration() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    expected = set(APPS) | set(SANDBOXES) | {"postgres", "migrate", "prometheus", "jaeger"}
    assert set(compose) == expected
    assert compose["postgres"]["image"].startswith("postgres:")
    assert compose["migrate"]["command"] == ["migrate"]
    assert compose["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name, spec in {**APPS, **SANDBOXES}.items():
        entry = compose[name]
        assert entry["command"] == ["serve", name]
        assert f"{spec.port}:{spec.port}" in entry["ports"]
        assert entry["healthcheck"]["test"] == ["CMD", "laku", "healthcheck", name]
        assert entry["environment"]["LAKU_SERVICE_URL_TEMPLATE"] == "http://{name}:{port}"
        assert entry["environment"]["LAKU_DATABASE_URL"].startswith("postgresql://")
        if name in SERVICES:
            assert entry["depends_on"] == {
                "migrate": {"condition": "service_completed_successfully"}
            }
    # The template gives the URLs Compose's network resolves: the service names.
    settings = Settings(service_url_template="http://{name}:{port}")
    assert SERVICES["group-buying"].url(settings) == "http://group-buying:3004"
    for optional in ("prometheus", "jaeger"):
        assert compose[optional]["profiles"] == ["observability"]
    # Photos product-service stores are the ones the web serves.
    [media] = compose["product"]["volumes"]
    assert compose["web"]["volumes"] == [media]
    for name in ("product", "web"):
        assert compose[name]["environment"]["LAKU_MEDIA_DIR"] == media.split(":")[1]


def test_prometheus_scrapes_every_service_and_the_web_and_nothing_else() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        job["job_name"]: (job["metrics_path"], job["static_configs"][0]["targets"])
        for job in config["scrape_configs"]
    }
    assert targets == {name: ("/metrics", [f"{name}:{spec.port}"]) for name, spec in APPS.items()}


# --- Kubernetes ------------------------------------------------------------------------------


def test_every_service_has_a_deployment_service_and_budget_and_nothing_else_does() -> None:
    base = _manifests(K8S / "base")
    deployments = _by_kind(base, "Deployment")
    assert set(deployments) == set(APPS) | {"pgbouncer"}
    assert set(_by_kind(base, "Service")) == set(APPS) | {"pgbouncer"}
    assert set(_by_kind(base, "PodDisruptionBudget")) == set(APPS) | {"pgbouncer"}
    assert set(_by_kind(base, "HorizontalPodAutoscaler")) == AUTOSCALED
    for name, spec in APPS.items():
        pod = deployments[name]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        [container] = pod["containers"]
        assert container["args"] == ["serve", name, "--port", str(spec.port)]
        assert container["ports"] == [{"name": "http", "containerPort": spec.port}]
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
        assert set(container["resources"]) == {"requests", "limits"}
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        assert {"configMapRef": {"name": "laku-config"}} in container["envFrom"]
        assert {"secretRef": {"name": "laku-secrets"}} in container["envFrom"]
        template = deployments[name]["spec"]["template"]["metadata"]["annotations"]
        assert template["prometheus.io/port"] == str(spec.port)
        [port] = _by_kind(base, "Service")[name]["spec"]["ports"]
        assert port["port"] == spec.port
    # Product and web share the photos volume, where the settings say photos are.
    media_dir = _by_kind(base, "ConfigMap")["laku-config"]["data"]["LAKU_MEDIA_DIR"]
    for name in ("product", "web"):
        pod = deployments[name]["spec"]["template"]["spec"]
        assert {"name": "media", "mountPath": media_dir} in pod["containers"][0]["volumeMounts"]
        assert {"name": "media", "persistentVolumeClaim": {"claimName": "laku-media"}} in pod[
            "volumes"
        ]
    job = _by_kind(base, "Job")["migrate"]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]


def test_secrets_hold_every_secret_setting() -> None:
    # A service's own credential is its Deployment's, not in the shared Secret.
    secret_settings = {
        f"LAKU_{name.upper()}"
        for name, field in Settings.model_fields.items()
        if "SecretStr" in str(field.annotation)
        and name not in deploy_generator().PER_PROCESS_SECRETS
    }
    assert {"LAKU_SERVICE_SECRET", "LAKU_XENDIT_SECRET_KEY"} <= secret_settings
    wanted = secret_settings | {"LAKU_DATABASE_URL", "LAKU_MIGRATION_DATABASE_URL"}
    development = _by_kind(_manifests(K8S / "overlays/development"), "Secret")["laku-secrets"]
    assert set(development["stringData"]) == wanted
    example = (K8S / "overlays/production/secrets.env.example").read_text().split()
    assert {line.split("=")[0] for line in example} == wanted
    # No secret sits in the ConfigMap.
    config = _by_kind(_manifests(K8S / "base"), "ConfigMap")["laku-config"]["data"]
    assert not set(config) & wanted


def test_network_policies_allow_exactly_the_calls_the_services_make() -> None:
    calls = derived_calls()
    policies = _by_kind(_manifests(K8S / "base"), "NetworkPolicy")
    assert policies["default-deny"]["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
    }
    for name in APPS:
        policy = policies[name]
        assert policy["spec"]["podSelector"] == {"matchLabels": {SERVICE_LABEL: name}}
        database = {"pgbouncer"} if name in SERVICES else set()
        assert _egress_to(policy) == calls[name] | database, name
        callers = {caller for caller, callees in calls.items() if name in callees}
        assert _ingress_from(policy) == callers, name
        # Each callee is reached on its own port only.
        for rule in policy["spec"]["egress"]:
            for callee in _selected(rule["to"]) & set(SERVICES):
                assert rule["ports"] == [{"protocol": "TCP", "port": SERVICES[callee].port}]
    assert _ingress_from(policies["pgbouncer"]) == set(SERVICES) | {"migrate"}


def test_provider_calls_reach_the_sandboxes_in_development_and_the_internet_in_production() -> None:
    providers = derived_providers()
    development = _by_kind(_manifests(K8S / "overlays/development"), "NetworkPolicy")
    for name in APPS:
        sandboxes = development.get(f"{name}-sandboxes")
        assert (_egress_to(sandboxes) if sandboxes else set()) == providers.get(name, set())
    for sandbox in SANDBOXES:
        callers = {name for name, reached in providers.items() if sandbox in reached}
        assert _ingress_from(development[sandbox]) == callers
    production = _by_kind(_manifests(K8S / "overlays/production"), "NetworkPolicy")
    assert set(production) == {f"{name}-providers" for name in providers}


# --- valid against the Kubernetes schemas ----------------------------------------------------


def _kustomize_folders() -> list[Path]:
    return sorted(path.parent for path in K8S.rglob("kustomization.yaml"))


@pytest.mark.parametrize("path", sorted(K8S.rglob("*.yaml")), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_is_valid_for_kubernetes(path: Path) -> None:
    for document in _documents(path):
        if document["kind"] == "Kustomization":
            for resource in document["resources"]:
                assert (path.parent / resource).exists(), resource
            continue
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_rejects_a_misspelt_field() -> None:
    [deployment, *_] = _documents(K8S / "base/services/auth.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not installed")
@pytest.mark.parametrize("folder", _kustomize_folders(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_kustomization_builds_into_valid_manifests(folder: Path, tmp_path: Path) -> None:
    source = folder
    if (folder / "secrets.env.example").exists():  # production's secrets are not in git
        shutil.copytree(K8S, tmp_path / "k8s")
        source = tmp_path / "k8s" / folder.relative_to(K8S)
        (source / "secrets.env").write_text((folder / "secrets.env.example").read_text())
    built = subprocess.run(
        ["kubectl", "kustomize", str(source)], capture_output=True, text=True, check=True
    ).stdout
    documents = [doc for doc in yaml.safe_load_all(built) if doc]
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    deployments = _by_kind(documents, "Deployment")
    assert set(APPS) <= set(deployments)
