"""VaultPay's Envoy gateway: renders the bootstrap from the contract's descriptor set.

from vaultpay_gateway import GatewaySettings, build_config, validate

settings = GatewaySettings(descriptor_set=Path("build/vaultpay.binpb"))
path = build_config(settings, Path("var/gateway/envoy.yaml"))   # and var/gateway/docs/
validate(path)

The OpenAPI document on its own: `vaultpay_gateway.openapi.build_openapi`.
"""

from __future__ import annotations

import os
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
from vaultpay_gateway.process import (
    EnvoyConfigError,
    admin_get,
    envoy_binary,
    envoy_command,
    validate,
)
from vaultpay_gateway.routes import IDENTITY_HEADER
from vaultpay_gateway.settings import (
    DEFAULT_RPC_LIMITS,
    DEFAULT_RPC_RATE_LIMITS,
    DEFAULT_UPSTREAMS,
    GATEWAY_SECRET_ENV_PREFIX,
    KYC_DOCUMENT_MAX_BYTES,
    GatewaySettings,
    HealthCheck,
    HostPort,
    JwtSettings,
    MiB,
    RateLimit,
    RpcLimits,
    SettingsError,
    UnixSocket,
    gateway_secret_env,
    identity_env_problems,
    kyc_file_limits,
)

__all__ = [
    "DEFAULT_RPC_LIMITS",
    "DEFAULT_RPC_RATE_LIMITS",
    "DEFAULT_UPSTREAMS",
    "DOCS_PATH",
    "ERROR_DOMAIN",
    "GATEWAY_ERRORS",
    "GATEWAY_SECRET_ENV_PREFIX",
    "IDENTITY_HEADER",
    "KYC_DOCUMENT_MAX_BYTES",
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
    "MiB",
    "RateLimit",
    "RpcLimits",
    "SettingsError",
    "UnixSocket",
    "admin_get",
    "body_schemas",
    "build_config",
    "envoy_binary",
    "envoy_command",
    "gateway_secret_env",
    "identity_env_problems",
    "kyc_file_limits",
    "load_contract",
    "render_bootstrap",
    "validate",
    "write_bootstrap",
    "write_docs_site",
]


def build_config(settings: GatewaySettings, out: Path) -> Path:
    """Reads the contract from `settings.descriptor_set` and writes the bootstrap to `out`.

    Unless `settings.serve_docs` is off, the API docs' files (OpenAPI document, Swagger UI)
    go to the folder `docs` beside `out`; the bootstrap serves them from there. An admin
    interface on a Unix socket gets its directory made (or narrowed to) 0700.
    """
    contract = load_contract(settings.descriptor_set)
    if isinstance(settings.admin, UnixSocket):
        _private_directory(settings.admin.path.parent)
    docs = (
        write_docs_site(settings.descriptor_set, out.parent / "docs")
        if settings.serve_docs
        else None
    )
    return write_bootstrap(render_bootstrap(settings, contract, docs), out)


def _private_directory(path: Path) -> None:
    """`path` exists and only its owner may enter it (where the admin socket goes)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_uid != os.getuid():
        raise SettingsError(f"{path} belongs to another user; the admin socket cannot go there")
    path.chmod(0o700)
