"""Every process compose or Kubernetes starts from a service's package gets each setting that
service requires (a field without a default), so none of them stops at start-up for want of
one. The audit chain key became required for wallet, transfer and kyc (review of 2026-12-05:
without it each sealed the shared `vaultpay` database under a key of its own); compose gives
the three one value, as `make run` does (tests/unit/common/test_audit_chain_key.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs; types-PyYAML is not locked
from pydantic_settings import BaseSettings

from vaultpay_auth.settings import AuthSettings
from vaultpay_kyc.settings import KycSettings
from vaultpay_transfer.settings import TransferSettings
from vaultpay_wallet.settings import WalletSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SETTINGS: dict[str, type[BaseSettings]] = {
    "auth": AuthSettings,
    "wallet": WalletSettings,
    "transfer": TransferSettings,
    "kyc": KycSettings,
}
_PACKAGE = re.compile(r"vaultpay_(auth|wallet|transfer|kyc)\.entrypoints\.")


def _required_variables(service: str) -> set[str]:
    cls = SETTINGS[service]
    prefix = str(cls.model_config.get("env_prefix", ""))
    return {
        f"{prefix}{name.upper()}" for name, info in cls.model_fields.items() if info.is_required()
    }


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _service_of(command: list[str] | str | None) -> str | None:
    found = _PACKAGE.search(" ".join(command) if isinstance(command, list) else command or "")
    return found.group(1) if found else None


def _compose_processes() -> list[tuple[str, str, set[str]]]:
    """(compose service, the VaultPay service it runs, its variables)."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    found = []
    for name, spec in compose["services"].items():
        service = _service_of(spec.get("command"))
        if service:
            found.append((name, service, set(spec.get("environment") or {})))
    return found


def _k8s_processes() -> list[tuple[str, str, set[str]]]:
    """(container, the VaultPay service it runs, the variables its ConfigMaps and Secrets
    give it: the ConfigMaps kustomize applies, the Secrets of secrets.example.yaml)."""
    sources: dict[tuple[str, str], set[str]] = {}
    manifests = [p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"]
    for path in manifests:
        for doc in _documents(path):
            if doc.get("kind") == "ConfigMap":
                sources[("configMap", doc["metadata"]["name"])] = set(doc.get("data") or {})
            if doc.get("kind") == "Secret":
                keys = set(doc.get("stringData") or {}) | set(doc.get("data") or {})
                sources[("secret", doc["metadata"]["name"])] = keys
    found = []
    for path in manifests:
        for doc in _documents(path):
            if doc.get("kind") not in {"Deployment", "StatefulSet", "Job"}:
                continue
            pod = doc["spec"]["template"]["spec"]
            for container in [*pod.get("initContainers", []), *pod["containers"]]:
                service = _service_of(container.get("command"))
                if not service:
                    continue
                given = {v["name"] for v in container.get("env", [])}
                for source in container.get("envFrom", []):
                    for kind in ("configMap", "secret"):
                        if ref := source.get(f"{kind}Ref"):
                            given |= sources.get((kind, ref["name"]), set())
                found.append((f"{path.relative_to(K8S)} {container['name']}", service, given))
    return found


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_every_process_gets_the_settings_its_service_requires(where: str) -> None:
    processes = _compose_processes() if where == "compose" else _k8s_processes()
    assert {service for _, service, _ in processes} == set(SETTINGS)
    missing = {
        name: sorted(_required_variables(service) - given)
        for name, service, given in processes
        if _required_variables(service) - given
    }
    assert missing == {}


def test_compose_gives_the_services_of_the_shared_database_one_chain_key() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    values = {
        compose["services"][name]["environment"][f"{service.upper()}_AUDIT_CHAIN_KEY"]
        for name, service, _ in _compose_processes()
        if service != "auth"
    }
    assert values == {"${VAULTPAY_AUDIT_CHAIN_KEY:?set it in deploy/.env}"}


def test_the_shared_database_services_require_the_chain_key() -> None:
    for service in ("wallet", "transfer", "kyc"):
        assert f"{service.upper()}_AUDIT_CHAIN_KEY" in _required_variables(service)
    assert "AUTH_AUDIT_CHAIN_KEY" not in _required_variables("auth")
