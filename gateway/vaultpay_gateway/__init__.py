"""VaultPay's Envoy gateway: renders the bootstrap from the contract's descriptor set.

from vaultpay_gateway import GatewaySettings, build_config, validate

settings = GatewaySettings(descriptor_set=Path("build/vaultpay.binpb"))
path = build_config(settings, Path("var/gateway/envoy.yaml"))
validate(path)
"""

from __future__ import annotations

from pathlib import Path

from vaultpay_gateway.body_schema import BodySchemas, body_schemas
from vaultpay_gateway.bootstrap import render_bootstrap, write_bootstrap
from vaultpay_gateway.contract import ApiContract, ContractError, load_contract
from vaultpay_gateway.errors import (
    ERROR_DOMAIN,
    GATEWAY_ERRORS,
    UNKNOWN_FIELD_REASON,
    GatewayError,
)
from vaultpay_gateway.process import EnvoyConfigError, envoy_binary, envoy_command, validate
from vaultpay_gateway.settings import (
    DEFAULT_UPSTREAMS,
    GatewaySettings,
    HealthCheck,
    HostPort,
    JwtSettings,
    RateLimit,
    SettingsError,
)

__all__ = [
    "DEFAULT_UPSTREAMS",
    "ERROR_DOMAIN",
    "GATEWAY_ERRORS",
    "UNKNOWN_FIELD_REASON",
    "ApiContract",
    "BodySchemas",
    "ContractError",
    "EnvoyConfigError",
    "GatewayError",
    "GatewaySettings",
    "HealthCheck",
    "HostPort",
    "JwtSettings",
    "RateLimit",
    "SettingsError",
    "body_schemas",
    "build_config",
    "envoy_binary",
    "envoy_command",
    "load_contract",
    "render_bootstrap",
    "validate",
    "write_bootstrap",
]


def build_config(settings: GatewaySettings, out: Path) -> Path:
    """Reads the contract from `settings.descriptor_set` and writes the bootstrap to `out`."""
    return write_bootstrap(render_bootstrap(settings, load_contract(settings.descriptor_set)), out)
