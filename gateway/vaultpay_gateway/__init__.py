"""VaultPay's Envoy gateway: renders the bootstrap from the contract's descriptor set.

from vaultpay_gateway import GatewaySettings, build_config, validate

settings = GatewaySettings(descriptor_set=Path("build/vaultpay.binpb"))
path = build_config(settings, Path("var/gateway/envoy.yaml"))   # and var/gateway/docs/
validate(path)

The OpenAPI document on its own: `vaultpay_gateway.openapi.build_openapi`.
"""

from __future__ import annotations

from pathlib import Path

from vaultpay_gateway.body_schema import BodySchemas, body_schemas
from vaultpay_gateway.bootstrap import render_bootstrap, write_bootstrap
from vaultpay_gateway.contract import ApiContract, ContractError, load_contract
from vaultpay_gateway.docs import DOCS_PATH, OPENAPI_PATH, DocsSite, write_docs_site
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
    "DOCS_PATH",
    "ERROR_DOMAIN",
    "GATEWAY_ERRORS",
    "OPENAPI_PATH",
    "UNKNOWN_FIELD_REASON",
    "ApiContract",
    "BodySchemas",
    "ContractError",
    "DocsSite",
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
    "write_docs_site",
]


def build_config(settings: GatewaySettings, out: Path) -> Path:
    """Reads the contract from `settings.descriptor_set` and writes the bootstrap to `out`.

    Unless `settings.serve_docs` is off, the API docs' files (OpenAPI document, Swagger UI)
    go to the folder `docs` beside `out`; the bootstrap serves them from there.
    """
    contract = load_contract(settings.descriptor_set)
    docs = (
        write_docs_site(settings.descriptor_set, out.parent / "docs")
        if settings.serve_docs
        else None
    )
    return write_bootstrap(render_bootstrap(settings, contract, docs), out)
