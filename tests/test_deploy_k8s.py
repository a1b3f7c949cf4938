"""The Kubernetes manifests (deploy/k8s): rendered, checked against the Kubernetes schemas,
and checked against the CRM's own rules (every service's objects, probes, env, non-root).

The base renders with `kustomize build` / `kubectl kustomize` when one is on PATH, otherwise
with `read_kustomization` below (the base keeps to `resources`, `namespace` and `images`
for that reason). The production overlay uses patches: it is tested only with kustomize.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.bus import declare_topology
from shared.cli import SERVICES
from shared.config import SERVICE_PORTS, load_settings

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is a dev dependency: pip install -e .[dev]"
)

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "production"
NAMESPACE = "crm"
PLACEHOLDER_IMAGE = "ghcr.io/example/crm:latest"
# The oldest Kubernetes the manifests promise (preStop `sleep`), and the newest schema shipped.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
# Built-in API groups kubernetes-validate has schemas for, as used here.
BUILTIN_GROUPS = {"v1", "apps/v1", "batch/v1", "autoscaling/v2", "policy/v1"}
# Custom resources of the operators: no schema here, checked field by field below.
OPERATOR_KINDS = {
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"),
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("rabbitmq.com/v1beta1", "User"),
    ("rabbitmq.com/v1beta1", "Permission"),
    ("rabbitmq.com/v1beta1", "TopicPermission"),
}
# Secrets the operators generate, with the keys they write (CloudNativePG pkg/specs/secrets.go,
# RabbitMQ cluster-operator internal/resource/default_user_secret.go).
CNPG_APP_KEYS = {"username", "user", "password", "dbname", "host", "port", "pgpass", "uri"}
CNPG_APP_KEYS |= {"jdbc-uri", "fqdn-uri", "fqdn-jdbc-uri"}
RABBITMQ_USER_KEYS = {"username", "password", "host", "port", "provider", "type"}
# The Messaging Topology Operator's Secret of a User it made (`<user>-user-credentials`).
TOPOLOGY_USER_KEYS = {"username", "password"}
# Variables no Python module of the CRM reads, each for a stated reason.
ALLOWED_EXTRA_ENV = {
    "PYTHONUNBUFFERED": "the interpreter: log lines leave at once",
    "PYTHONDONTWRITEBYTECODE": "the interpreter: the root filesystem is read-only",
}


# ---- rendering ----


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def build_with_kustomize(path: Path) -> list[dict[str, Any]]:
    command = kustomize_command()
    assert command is not None
    result = subprocess.run(
        [*command, str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def split_image(image: str) -> tuple[str, str | None]:
    name, _, last = image.rpartition("/")
    if ":" in last:
        last, tag = last.split(":", 1)
        return (f"{name}/{last}" if name else last), tag
    return image, None


def read_kustomization(path: Path) -> list[dict[str, Any]]:
    """The resources of a kustomization that uses only `resources`, `namespace`, `images`."""
    spec = yaml.safe_load((path / "kustomization.yaml").read_text())
    unsupported = set(spec) - {"apiVersion", "kind", "resources", "namespace", "images"}
    assert not unsupported, f"{path}: needs real kustomize for {sorted(unsupported)}"
    docs: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        target = path / entry
        if target.is_dir():
            docs.extend(read_kustomization(target))
        else:
            docs.extend(doc for doc in yaml.safe_load_all(target.read_text()) if doc)
    if spec.get("namespace"):
        for doc in docs:
            if doc["kind"] != "Namespace":
                doc["metadata"]["namespace"] = spec["namespace"]
    for image in spec.get("images", []):
        for container in containers(docs):
            name, tag = split_image(container["image"])
            if name == image["name"]:
                name, tag = image.get("newName", name), image.get("newTag", tag)
                container["image"] = f"{name}:{tag}" if tag else name
    return docs


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in ("Deployment", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def containers(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for doc in docs:
        spec = pod_spec(doc)
        if spec:
            yield from spec.get("initContainers", [])
            yield from spec["containers"]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    if kustomize_command():
        return build_with_kustomize(BASE)
    return read_kustomization(BASE)


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def find_all(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def key(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


# ---- rendering and schemas ----


def test_the_python_reader_renders_what_kustomize_renders() -> None:
    if not kustomize_command():
        pytest.skip("no kustomize or kubectl on PATH: only the Python reader renders the base")
    ours = {key(doc): doc for doc in read_kustomization(BASE)}
    theirs = {key(doc): doc for doc in build_with_kustomize(BASE)}
    assert ours.keys() == theirs.keys()
    for name, doc in ours.items():
        assert doc == theirs[name], name


def test_every_object_is_a_known_kind_in_the_namespace(base: list[dict[str, Any]]) -> None:
    for doc in base:
        api = doc["apiVersion"]
        assert api in BUILTIN_GROUPS or (api, doc["kind"]) in OPERATOR_KINDS, key(doc)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, key(doc)
    assert len({key(doc) for doc in base}) == len(base), "duplicate objects"
    assert find(base, "Namespace", NAMESPACE)


def schema_errors(docs: list[dict[str, Any]], version: str) -> list[str]:
    errors = []
    for doc in docs:
        if doc["apiVersion"] not in BUILTIN_GROUPS:
            continue
        try:
            kubernetes_validate.validate(copy.deepcopy(doc), version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(part) for part in error.path)
            errors.append(f"{key(doc)} at {path}: {error.message}")
    return errors


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_builtin_objects_match_the_kubernetes_schemas(
    base: list[dict[str, Any]], version: str
) -> None:
    assert sum(doc["apiVersion"] in BUILTIN_GROUPS for doc in base) > 30
    assert schema_errors(base, version) == []


def test_the_schema_check_catches_a_misspelt_field(base: list[dict[str, Any]]) -> None:
    deployment = copy.deepcopy(find(base, "Deployment", "contacts-api"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert schema_errors([deployment], K8S_VERSIONS[0])
    job = copy.deepcopy(find(base, "Job", "contacts-migrate"))
    job["spec"]["backoffLimit"] = "six"
    assert schema_errors([job], K8S_VERSIONS[0])


# ---- every service ----


def pod_labels(doc: dict[str, Any]) -> dict[str, str]:
    return doc["spec"]["template"]["metadata"]["labels"]


def only_container(doc: dict[str, Any]) -> dict[str, Any]:
    spec = pod_spec(doc)
    assert spec is not None and len(spec["containers"]) == 1, key(doc)
    return spec["containers"][0]


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_its_api_service_autoscaler_worker_and_migration(
    base: list[dict[str, Any]], service: str
) -> None:
    port = SERVICE_PORTS[service]
    api = find(base, "Deployment", f"{service}-api")
    container = only_container(api)
    assert container["image"] == PLACEHOLDER_IMAGE
    assert container["args"] == [service, "api"]
    http = {"name": "http", "containerPort": port, "protocol": "TCP"}
    internal = {"name": "internal", "containerPort": port + 100, "protocol": "TCP"}
    assert container["ports"] == ([http, internal] if service == "gateway" else [http])
    assert "replicas" not in api["spec"], "the HorizontalPodAutoscaler owns the api's replicas"
    selector = api["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels(api).items()

    svc = find(base, "Service", f"{service}-api")
    assert svc["spec"]["selector"] == selector
    [svc_port] = svc["spec"]["ports"]
    assert svc_port["port"] == port and svc_port["targetPort"] in ("http", port)

    hpa = find(base, "HorizontalPodAutoscaler", f"{service}-api")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"{service}-api",
    }
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    pdb = find(base, "PodDisruptionBudget", f"{service}-api")
    assert pdb["spec"]["selector"]["matchLabels"] == selector

    workers = [d for d in find_all(base, "Deployment") if d["metadata"]["name"].endswith("-worker")]
    worker_names = {d["metadata"]["name"] for d in workers}
    if SERVICES[service].has_worker:
        worker = find(base, "Deployment", f"{service}-worker")
        container = only_container(worker)
        assert container["args"] == [service, "worker"]
        assert container["image"] == PLACEHOLDER_IMAGE
        assert "ports" not in container and "livenessProbe" not in container  # no HTTP
        assert worker["spec"]["replicas"] >= 1
        assert not any(
            s["spec"]["selector"] == worker["spec"]["selector"]["matchLabels"]
            for s in find_all(base, "Service")
        )
    else:
        assert f"{service}-worker" not in worker_names

    job = find(base, "Job", f"{service}-migrate")
    container = only_container(job)
    assert container["args"] == [service, "migrate"]
    assert container["image"] == PLACEHOLDER_IMAGE
    assert job["spec"]["backoffLimit"] >= 1
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    # rollout.sh applies and waits for the migrations by this label, before the rest.
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "migrate"
    assert pod_labels(job)["app.kubernetes.io/component"] == "migrate"


def test_no_objects_for_unknown_services(base: list[dict[str, Any]]) -> None:
    names = {f"{s}-{part}" for s in SERVICES for part in ("api", "worker", "migrate")}
    names |= {f"{s}-db" for s in SERVICES} | {"gateway-bootstrap-admin"}
    for doc in base:
        if doc["kind"] in ("Deployment", "Job", "Service", "HorizontalPodAutoscaler", "Cluster"):
            assert doc["metadata"]["name"] in names, key(doc)


def probe_port(container: dict[str, Any], probe: dict[str, Any]) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    [match] = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return match


@pytest.mark.parametrize("service", SERVICES)
def test_api_probes_point_at_ready_and_health_on_the_container_port(
    base: list[dict[str, Any]], service: str
) -> None:
    api = find(base, "Deployment", f"{service}-api")
    container = only_container(api)
    port = SERVICE_PORTS[service]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    for probe in ("livenessProbe", "startupProbe"):
        assert probe_port(container, container[probe]) == port, probe
    # The gateway answers /ready only on its internal listener (404 on the public port).
    ready_port = port + 100 if service == "gateway" else port
    assert probe_port(container, container["readinessProbe"]) == ready_port
    # /ready checks the database, then opens a socket to the broker (1 s timeout).
    assert container["readinessProbe"]["timeoutSeconds"] >= 2
    # gunicorn's graceful_timeout (20 s) fits in the grace period after the preStop pause.
    spec = api["spec"]["template"]["spec"]
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] >= 20 + pause


def test_the_gateways_internal_listener_is_probed_and_scraped_but_not_exposed(
    base: list[dict[str, Any]],
) -> None:
    api = find(base, "Deployment", "gateway-api")
    container = only_container(api)
    [internal] = [p["containerPort"] for p in container["ports"] if p["name"] == "internal"]
    env = {var["name"]: var.get("value") for var in container["env"]}
    assert env["CRM_INTERNAL_BIND"] == f"0.0.0.0:{internal}"  # the pod's address
    annotations = api["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(internal)
    assert annotations["prometheus.io/path"] == "/metrics"
    [exposed] = find(base, "Service", "gateway-api")["spec"]["ports"]
    assert exposed["targetPort"] == "http" and exposed["port"] != internal


def test_the_gateway_finds_every_service_through_its_service(base: list[dict[str, Any]]) -> None:
    config = find(base, "ConfigMap", "crm-config")["data"]
    settings = load_settings("gateway", config)
    for service, port in SERVICE_PORTS.items():
        assert settings.service_urls[service] == f"http://{service}-api:{port}"
        assert find(base, "Service", f"{service}-api")


# ---- environment ----


def operator_secrets(docs: list[dict[str, Any]]) -> dict[str, set[str]]:
    secrets = {f"{d['metadata']['name']}-app": CNPG_APP_KEYS for d in find_all(docs, "Cluster")}
    for cluster in find_all(docs, "RabbitmqCluster"):
        secrets[f"{cluster['metadata']['name']}-default-user"] = RABBITMQ_USER_KEYS
    for user in find_all(docs, "User"):
        secrets[f"{user['metadata']['name']}-user-credentials"] = TOPOLOGY_USER_KEYS
    return secrets


def secret_keys(docs: list[dict[str, Any]]) -> dict[str, set[str]]:
    keys = {
        d["metadata"]["name"]: set(d.get("stringData", {})) | set(d.get("data", {}))
        for d in find_all(docs, "Secret")
    }
    return {**keys, **operator_secrets(docs)}


def config_keys(docs: list[dict[str, Any]]) -> dict[str, set[str]]:
    return {d["metadata"]["name"]: set(d.get("data", {})) for d in find_all(docs, "ConfigMap")}


def container_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> list[str]:
    """The names of a container's variables, in order; fails on any dangling reference."""
    configs, secrets = config_keys(docs), secret_keys(docs)
    names: list[str] = []
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            names.extend(sorted(configs[source["configMapRef"]["name"]]))
        else:
            names.extend(sorted(secrets[source["secretRef"]["name"]]))
    for var in container.get("env", []):
        ref = var.get("valueFrom", {})
        if "secretKeyRef" in ref:
            name, wanted = ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]
            assert wanted in secrets.get(name, set()), f"{var['name']}: no {name}/{wanted}"
        elif "configMapKeyRef" in ref:
            name, wanted = ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"]
            assert wanted in configs.get(name, set()), f"{var['name']}: no {name}/{wanted}"
        else:
            assert "value" in var, var
            for used in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", var["value"]):
                assert used in names, f"{var['name']} uses $({used}) before it is defined"
        names.append(var["name"])
    return names


def workloads(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in docs:
        spec = pod_spec(doc)
        if spec:
            for container in spec["containers"]:
                yield doc, container


def test_every_variable_comes_from_the_config_map_or_a_secret(base: list[dict[str, Any]]) -> None:
    assert find(base, "ConfigMap", "crm-config")
    assert find(base, "Secret", "crm-secrets")
    for doc, container in workloads(base):
        service = doc["metadata"]["labels"]["app.kubernetes.io/name"]
        names = container_env(base, container)
        assert len(names) == len(set(names)), f"{key(doc)}: a variable is set twice"
        # Its own database and nobody else's; the broker; tokens verified where served.
        databases = {n for n in names if n.endswith("_DATABASE_URL")}
        assert databases == {f"{service.upper()}_DATABASE_URL"}, key(doc)
        assert "CRM_AMQP_URL" in names, key(doc)
        if doc["kind"] == "Deployment":
            assert "CRM_JWT_SECRET" in names, key(doc)
        # Each secret only where it is used.
        sends_mail = doc["metadata"]["name"] == "notifications-worker"
        assert ("CRM_SMTP_URL" in names) == sends_mail, key(doc)
        makes_admin = doc["metadata"]["name"] == "gateway-bootstrap-admin"
        assert ("CRM_ADMIN_PASSWORD" in names) == makes_admin, key(doc)


def test_database_and_broker_urls_come_from_the_operators_secrets(
    base: list[dict[str, Any]],
) -> None:
    [rabbit] = find_all(base, "RabbitmqCluster")
    broker = rabbit["metadata"]["name"]
    for doc, container in workloads(base):
        service = doc["metadata"]["labels"]["app.kubernetes.io/name"]
        env = {var["name"]: var for var in container["env"]}
        url = env[f"{service.upper()}_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert url == {"name": f"{service}-db-app", "key": "uri"}, key(doc)
        assert find(base, "Cluster", f"{service}-db")
        amqp = env["CRM_AMQP_URL"]["value"]
        assert amqp.startswith("amqp://$(CRM_AMQP_USERNAME):$(CRM_AMQP_PASSWORD)@"), key(doc)
        assert amqp.split("@", 1)[1].startswith(f"{broker}:5672/"), key(doc)
        for part in ("USERNAME", "PASSWORD"):
            # Its own user, allowed only its routing keys: never the operator's admin.
            ref = env[f"CRM_AMQP_{part}"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": f"{service}-broker-user-credentials", "key": part.lower()}
            assert find(base, "User", f"{service}-broker")


class RecordingEnviron(dict[str, str]):
    """An environment that remembers every name read from it."""

    def __init__(self) -> None:
        super().__init__()
        self.read: set[str] = set()

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(name)
        return super().get(name, default)


def names_the_code_reads() -> set[str]:
    names: set[str] = set()
    for service in SERVICES:
        environ = RecordingEnviron()
        load_settings(service, environ)
        names |= environ.read
    pattern = re.compile(r"environ(?:\.get|\.setdefault)\(\s*f?\"([A-Z][A-Z0-9_]+)\"")
    for path in ("deploy/gunicorn.conf.py", "shared/cli.py", "shared/web.py"):
        names |= set(pattern.findall((ROOT / path).read_text()))
    return names


def test_every_variable_is_one_the_code_reads(base: list[dict[str, Any]]) -> None:
    known = names_the_code_reads()
    assert {"CRM_AMQP_URL", "CONTACTS_DATABASE_URL", "GUNICORN_WORKERS"} <= known
    for doc, container in workloads(base):
        composed = {
            used
            for var in container.get("env", [])
            for used in re.findall(r"\$\(([A-Za-z0-9_]+)\)", var.get("value", ""))
        }
        for name in container_env(base, container):
            assert name in known or name in composed or name in ALLOWED_EXTRA_ENV, (
                f"{key(doc)}: {name} is read by nothing (a typo?)"
            )


def test_the_secret_template_holds_placeholders_only(base: list[dict[str, Any]]) -> None:
    secret = find(base, "Secret", "crm-secrets")
    assert "data" not in secret
    assert secret["stringData"], "the keys are the template"
    for name, value in secret["stringData"].items():
        assert "REPLACE-ME" in value, f"{name} looks like a real value"
    text = (BASE / "secrets.yaml").read_text()
    assert "secret manager" in text and "no real secret" in text.lower()


# ---- security and resources ----


def test_containers_run_as_non_root_on_a_read_only_filesystem(base: list[dict[str, Any]]) -> None:
    pods = [(doc, pod_spec(doc)) for doc in base if pod_spec(doc)]
    assert len(pods) == 2 * len(SERVICES) + sum(s.has_worker for s in SERVICES.values()) + 1
    for doc, spec in pods:
        assert spec is not None
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, key(doc)
        assert pod["runAsUser"] > 0 and pod["runAsGroup"] > 0, key(doc)
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", key(doc)
        assert spec["automountServiceAccountToken"] is False, key(doc)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, key(doc)
            assert ctx["readOnlyRootFilesystem"] is True, key(doc)
            assert ctx["capabilities"]["drop"] == ["ALL"], key(doc)
            assert ctx.get("runAsUser", 1) != 0, key(doc)
            # gunicorn's heartbeats and the prometheus multiprocess dir live in /tmp.
            [tmp] = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert "emptyDir" in volumes[tmp["name"]], key(doc)


def test_every_container_has_requests_and_limits(base: list[dict[str, Any]]) -> None:
    for doc, container in workloads(base):
        resources = container["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys(), key(doc)
        assert "memory" in resources["limits"], key(doc)
        assert "terminationGracePeriodSeconds" in doc["spec"]["template"]["spec"] or (
            doc["kind"] == "Job"
        ), key(doc)


def test_the_rollout_script_parses_and_uses_the_manifests_labels(
    base: list[dict[str, Any]],
) -> None:
    script = K8S / "rollout.sh"
    if shutil.which("sh"):
        subprocess.run(["sh", "-n", str(script)], check=True, timeout=30)
    text = script.read_text()
    assert "app.kubernetes.io/component=migrate" in text
    assert "--for=condition=Complete" in text
    # Step 1 applies what is not an app (by this label), step 2 the migrations, step 3 the rest.
    [apps] = re.findall(r"component notin \(([a-z,]+)\)", text)
    apps_components = set(apps.split(","))
    assert f"APPS='app.kubernetes.io/component in ({apps})'" in text
    for doc in base:
        component = doc["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        if doc["kind"] in ("Deployment", "Job", "Service", "HorizontalPodAutoscaler"):
            assert component in apps_components, key(doc)
        if doc["kind"] in ("Namespace", "ConfigMap", "Secret", "Cluster", "RabbitmqCluster"):
            assert component not in apps_components, key(doc)


# ---- operator resources (no schema here: the fields we rely on) ----


def declared_queues() -> list[tuple[str, dict[str, Any]]]:
    """What shared/bus.py declares for a service, through a channel that only records."""
    calls: list[tuple[str, dict[str, Any]]] = []

    class Channel:
        def exchange_declare(self, *args: Any, **kwargs: Any) -> None:
            pass

        def queue_bind(self, *args: Any, **kwargs: Any) -> None:
            pass

        def queue_declare(self, queue: str, durable: bool = False, arguments: Any = None) -> None:
            assert durable, queue
            calls.append((queue, arguments or {}))

    declare_topology(Channel(), load_settings("contacts", {}), ["contact.created"])  # type: ignore[arg-type]
    return calls


def test_rabbitmq_is_a_three_node_cluster_for_quorum_queues(base: list[dict[str, Any]]) -> None:
    [cluster] = find_all(base, "RabbitmqCluster")
    assert cluster["apiVersion"] == "rabbitmq.com/v1beta1"
    assert cluster["metadata"]["name"] == "crm-rabbitmq"
    assert cluster["spec"]["replicas"] == 3
    assert cluster["spec"]["persistence"]["storage"]
    assert cluster["spec"]["resources"]["limits"]["memory"]
    image = cluster["spec"]["image"]
    major, minor = (int(part) for part in image.split(":")[1].split("-")[0].split(".")[:2])
    assert (major, minor) >= (3, 10), "quorum queues honour x-message-ttl from 3.10"
    # Every queue the services declare is a quorum queue: replicated on the three nodes.
    queues = declared_queues()
    assert {"contacts.events", "contacts.events.dlq"} <= {name for name, _ in queues}
    for name, arguments in queues:
        assert arguments.get("x-queue-type") == "quorum", name


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_its_own_postgresql_cluster(
    base: list[dict[str, Any]], service: str
) -> None:
    cluster = find(base, "Cluster", f"{service}-db")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    spec = cluster["spec"]
    assert spec["instances"] == 3
    assert spec["bootstrap"]["initdb"] == {"database": service, "owner": service}
    assert spec["storage"]["size"]
    assert isinstance(spec["postgresql"]["parameters"]["max_connections"], str)
    assert spec["affinity"]["enablePodAntiAffinity"] is True


# ---- the production overlay (patches: real kustomize only) ----


@pytest.fixture(scope="module")
def production() -> list[dict[str, Any]]:
    if not kustomize_command():
        pytest.skip("the overlay uses patches: needs kustomize or kubectl on PATH")
    return build_with_kustomize(OVERLAY)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_production_overlay_matches_the_kubernetes_schemas(
    production: list[dict[str, Any]], version: str
) -> None:
    assert schema_errors(production, version) == []


def test_the_production_overlay_pins_scales_and_drops_the_template(
    production: list[dict[str, Any]], base: list[dict[str, Any]]
) -> None:
    assert {key(d) for d in production} == {key(d) for d in base} - {("Secret", "crm-secrets")}
    for _doc, container in workloads(production):
        name, tag = split_image(container["image"])
        assert name != "ghcr.io/example/crm" and tag not in (None, "latest")
    for hpa in find_all(production, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["minReplicas"] >= 3
    for service, spec in SERVICES.items():
        if spec.has_worker:
            assert find(production, "Deployment", f"{service}-worker")["spec"]["replicas"] >= 3
        api = find(production, "Deployment", f"{service}-api")
        assert only_container(api)["resources"]["limits"]["cpu"] == "2"
        assert only_container(api)["readinessProbe"]["httpGet"]["path"] == "/ready"
    config = find(production, "ConfigMap", "crm-config")["data"]
    assert config["CRM_TRUSTED_PROXIES"] == "1"
    assert config.keys() == find(base, "ConfigMap", "crm-config")["data"].keys()


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_its_own_broker_user_limited_to_its_routing_keys(
    base: list[dict[str, Any]], service: str
) -> None:
    from shared.broker_users import broker_permissions

    allowed = broker_permissions(service)
    name = f"{service}-broker"
    cluster = {"name": find_all(base, "RabbitmqCluster")[0]["metadata"]["name"]}
    assert find(base, "User", name)["spec"]["rabbitmqClusterReference"] == cluster
    permission = find(base, "Permission", name)["spec"]
    assert permission["userReference"] == {"name": name} and permission["vhost"] == "/"
    assert permission["rabbitmqClusterReference"] == cluster
    assert permission["permissions"] == {
        "configure": allowed.configure,
        "write": allowed.write,
        "read": allowed.read,
    }
    topic = find(base, "TopicPermission", name)["spec"]
    assert topic["userReference"] == {"name": name} and topic["vhost"] == "/"
    assert topic["rabbitmqClusterReference"] == cluster
    assert topic["permissions"] == {
        "exchange": allowed.exchange,
        "write": allowed.topic_write,
        "read": allowed.topic_read,
    }
