"""`make run` and the e2e mesh give each service a gateway secret of its own (review of
2026-12-05): with one secret for all, a service that was taken over (the kyc process) held
the secret every other service believed, and could call transfer's SendMoney or auth's Login
naming any client address. Envoy gets each service's secret under the variable the gateway's
routes read (VAULTPAY_GATEWAY_SECRET_<SERVICE>), and never the old shared one."""

from __future__ import annotations

from pathlib import Path

from vaultpay_devstack.credentials import MeshSecrets
from vaultpay_devstack.postgres import Provisioned
from vaultpay_devstack.redis import RedisServer
from vaultpay_devstack.services import (
    DEFAULT_PORTS,
    SERVICES,
    EnvInputs,
    envoy_gateway_secrets,
    service_env,
)
from vaultpay_gateway import (
    GATEWAY_SECRET_ENV_PREFIX,
    GatewaySettings,
    gateway_secret_env,
    identity_env_problems,
)


def _inputs(var_dir: Path) -> EnvInputs:
    return EnvInputs(
        profile="test",
        ports=dict(DEFAULT_PORTS),
        databases=Provisioned("127.0.0.1", 5432),
        redis=RedisServer("127.0.0.1", 6379),
        smtp_port=2525,
        secrets=MeshSecrets.load(var_dir),
        var_dir=var_dir,
    )


def test_each_service_gets_its_own_gateway_secret_and_envoy_each_one(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path)
    envoy = envoy_gateway_secrets(inputs.secrets)
    own = {s.name: service_env(s, inputs)[f"{s.env_prefix}_GATEWAY_SECRET"] for s in SERVICES}

    assert len(set(own.values())) == len(SERVICES) == 4
    assert envoy == {gateway_secret_env(name): secret for name, secret in own.items()}
    assert GATEWAY_SECRET_ENV_PREFIX not in envoy
    for service in SERVICES:
        others = {secret for name, secret in own.items() if name != service.name}
        assert not others & set(service_env(service, inputs).values()), service.name
    # What the gateway's routes read, as its own check of Envoy's environment sees it.
    assert identity_env_problems(GatewaySettings(descriptor_set=tmp_path / "x"), envoy) == []


def test_the_secrets_are_kept_across_runs(tmp_path: Path) -> None:
    first = envoy_gateway_secrets(MeshSecrets.load(tmp_path))

    assert envoy_gateway_secrets(MeshSecrets.load(tmp_path)) == first
    assert envoy_gateway_secrets(MeshSecrets.load(tmp_path / "another")) != first
