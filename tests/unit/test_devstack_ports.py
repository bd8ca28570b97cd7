"""`make run`'s ports move with settings (review of 2026-12-04: only the gateway's could, and
a gRPC quickstart on 50051 or another Envoy's admin on 9901 made `make run` refuse for good)."""

from __future__ import annotations

import pytest

from vaultpay_devstack.mesh import MeshConfig
from vaultpay_devstack.procs import StartupError
from vaultpay_devstack.services import DEFAULT_PORTS


def test_every_port_of_make_run_has_a_setting() -> None:
    config = MeshConfig.from_env(
        {
            "VAULTPAY_GATEWAY_PORT": "18080",
            "VAULTPAY_ADMIN_PORT": " 19901 ",
            "VAULTPAY_AUTH_PORT": "15051",
            "VAULTPAY_KYC_PORT": "15054",
        }
    )
    assert (config.gateway_port, config.admin_port) == (18080, 19901)
    assert config.service_ports == DEFAULT_PORTS | {"auth": 15051, "kyc": 15054}


def test_unset_ports_keep_their_defaults() -> None:
    config = MeshConfig.from_env({})
    assert (config.gateway_port, config.admin_port) == (8080, 9901)
    assert (
        config.service_ports
        == DEFAULT_PORTS
        == {
            "auth": 50051,
            "wallet": 50052,
            "transfer": 50053,
            "kyc": 50054,
        }
    )


@pytest.mark.parametrize("value", ["x", "0", "65536", "-1", "80.5"])
def test_a_bad_port_is_refused_naming_its_variable(value: str) -> None:
    with pytest.raises(StartupError, match="VAULTPAY_WALLET_PORT must be a port number"):
        MeshConfig.from_env({"VAULTPAY_WALLET_PORT": value})
