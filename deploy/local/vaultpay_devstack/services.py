"""The four services as the local mesh runs them, and the one place their environment is built.

Each service reads its settings from `<SERVICE>_*` variables (plus the SMTP pair). `service_env` is the only code that decides them, so `make run`, the e2e tests and a
developer starting one service by hand (`mesh.env_for("auth")`) agree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vaultpay_devstack.credentials import MeshSecrets
from vaultpay_devstack.postgres import Provisioned
from vaultpay_devstack.procs import LOOPBACK
from vaultpay_devstack.redis import RedisServer

__all__ = [
    "DEFAULT_PORTS",
    "SERVICES",
    "SERVICE_CLIENTS",
    "EnvInputs",
    "Profile",
    "ServiceSpec",
    "envoy_gateway_secrets",
    "gateway_secret",
    "service_env",
    "spec",
]

Profile = Literal["dev", "test"]


@dataclass(frozen=True)
class ServiceSpec:
    """How the mesh runs one service."""

    name: str
    database: Literal["auth", "vaultpay"]
    redis_db: int
    default_port: int

    @property
    def env_prefix(self) -> str:
        return self.name.upper()

    @property
    def server_module(self) -> str:
        return f"vaultpay_{self.name}.entrypoints.server"

    @property
    def cli_module(self) -> str:
        return f"vaultpay_{self.name}.entrypoints.cli"


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("auth", "auth", 0, 50051),
    ServiceSpec("wallet", "vaultpay", 1, 50052),
    ServiceSpec("transfer", "vaultpay", 1, 50053),
    ServiceSpec("kyc", "vaultpay", 1, 50054),
)
DEFAULT_PORTS: dict[str, int] = {s.name: s.default_port for s in SERVICES}
# Internal principals that get client credentials from auth (client-credentials grant).
SERVICE_CLIENTS: tuple[str, ...] = ("wallet", "transfer", "kyc")
_BCRYPT_ROUNDS: dict[Profile, int] = {"dev": 12, "test": 4}


def spec(name: str) -> ServiceSpec:
    """The spec of service `name` (auth, wallet, transfer, kyc)."""
    for service in SERVICES:
        if service.name == name:
            return service
    raise KeyError(f"unknown service {name!r}; known: {', '.join(s.name for s in SERVICES)}")


@dataclass(frozen=True)
class EnvInputs:
    """Everything a service's environment depends on."""

    profile: Profile
    ports: Mapping[str, int]
    databases: Provisioned
    redis: RedisServer
    smtp_port: int
    secrets: MeshSecrets
    var_dir: Path
    smtp_host: str = LOOPBACK
    bcrypt_rounds: int | None = None  # None: the profile's default
    db_pool_sizes: Mapping[str, int] = field(default_factory=dict)  # by service; else its own
    # By database name: which database it is (`postgres.database_identities`); the audit
    # checkpoints of one database are never read against another of the same name.
    database_ids: Mapping[str, str] = field(default_factory=dict)


def _checkpoint_dir(inputs: EnvInputs, logical: str, database: str) -> Path:
    """Where a database's audit checkpoints are kept: a folder of its own per database
    *identity* (the server's system identifier and the database's oid), not per name. Keyed
    by name alone, the checkpoints of a database thrown away (`rm -rf var/postgres`, a run
    against another server) were checked against the next one of that name, whose new chain
    cannot reach them: every service raised "rows deleted or rewritten" every second, nothing
    was sealed again and verify-ledger failed (review of 2026-12-05)."""
    identity = inputs.database_ids.get(database)
    folder = logical if identity is None else f"{logical}-{identity}"
    return inputs.var_dir / "audit-checkpoints" / folder


# The prefix of the variables Envoy reads each service's gateway secret from
# (vaultpay_gateway.GATEWAY_SECRET_ENV_PREFIX; the supervisor does not import the gateway).
ENVOY_SECRET_ENV_PREFIX = "VAULTPAY_GATEWAY_SECRET"  # noqa: S105 - a variable name


def gateway_secret(secrets: MeshSecrets, service: ServiceSpec) -> str:
    """The secret the gateway proves itself to `service` with: its <SERVICE>_GATEWAY_SECRET,
    and Envoy's VAULTPAY_GATEWAY_SECRET_<SERVICE>. Each service has its own (kept in the
    mesh's secrets file), so a service that is taken over cannot name a client address to
    another: it holds only its own secret."""
    return secrets.gateway_secret(service.name)


def envoy_gateway_secrets(secrets: MeshSecrets) -> dict[str, str]:
    """Envoy's environment for the gateway's identity: each service's secret under
    VAULTPAY_GATEWAY_SECRET_<SERVICE> (and never the old shared VAULTPAY_GATEWAY_SECRET)."""
    return {
        f"{ENVOY_SECRET_ENV_PREFIX}_{service.env_prefix}": gateway_secret(secrets, service)
        for service in SERVICES
    }


def service_env(
    service: ServiceSpec, inputs: EnvInputs, *, operator: bool = False
) -> dict[str, str]:
    """The VaultPay variables of one service (to be laid over the inherited environment).

    The table owner's DSN is given only to operator commands (`migrate`), never to the
    running service: a compromised service must not be able to rewrite its audit table.
    """
    p, dbs = service.env_prefix, inputs.databases
    if service.database == "auth":
        database, owner, app = dbs.auth_database, dbs.auth_owner_role, dbs.auth_app_role
    else:
        database, owner, app = (
            dbs.vaultpay_database,
            dbs.vaultpay_owner_role,
            dbs.app_role(service.name),
        )
    env = {
        f"{p}_KEY_ENCRYPTION_KEY": inputs.secrets.key_encryption_key(service.name),
        f"{p}_AUDIT_CHECKPOINT_DIR": str(_checkpoint_dir(inputs, service.database, database)),
        "VAULTPAY_SMTP_HOST": inputs.smtp_host,
        "VAULTPAY_SMTP_PORT": str(inputs.smtp_port),
        f"{p}_GRPC_ADDRESS": f"{LOOPBACK}:{inputs.ports[service.name]}",
        f"{p}_DATABASE_URL": dbs.url(app, database),
        f"{p}_DATABASE_APP_ROLE": app,
        f"{p}_REDIS_URL": inputs.redis.url(service.redis_db),
        f"{p}_GATEWAY_SECRET": gateway_secret(inputs.secrets, service),
    }
    if service.name in inputs.db_pool_sizes:
        env[f"{p}_DB_POOL_SIZE"] = str(inputs.db_pool_sizes[service.name])
    if operator:
        env[f"{p}_MIGRATION_DATABASE_URL"] = dbs.url(owner, database)
        if service.database != "auth":
            env[f"{p}_DATABASE_CHAIN_ROLES"] = json.dumps(dbs.chain_roles())
    if service.name == "auth":
        clients = ",".join(
            f"{c}:{inputs.secrets.service_client_secret(c)}" for c in SERVICE_CLIENTS
        )
        env["AUTH_SERVICE_CLIENTS"] = clients
        env["AUTH_BCRYPT_ROUNDS"] = str(inputs.bcrypt_rounds or _BCRYPT_ROUNDS[inputs.profile])
        return env
    for peer in SERVICES:
        if peer.name != service.name:
            env[f"{p}_{peer.env_prefix}_ADDRESS"] = f"{LOOPBACK}:{inputs.ports[peer.name]}"
    env[f"{p}_AUDIT_CHAIN_KEY"] = inputs.secrets.audit_chain_key(service.database)
    if service.name == "wallet":
        rounds = inputs.bcrypt_rounds or _BCRYPT_ROUNDS[inputs.profile]
        env["WALLET_PIN_BCRYPT_ROUNDS"] = str(rounds)
    env[f"{p}_SERVICE_CLIENT_ID"] = service.name
    env[f"{p}_SERVICE_CLIENT_SECRET"] = inputs.secrets.service_client_secret(service.name)
    return env
