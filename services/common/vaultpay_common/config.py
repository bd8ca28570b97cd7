"""Typed settings, validated at start-up. Each service subclasses `ServiceSettings` (or
`PeerServiceSettings` when it calls other services) with its own env prefix (AUTH_, WALLET_, …);
nothing else in the code reads os.environ.

    class WalletSettings(PeerServiceSettings):
        model_config = SettingsConfigDict(env_prefix="WALLET_", extra="ignore", frozen=True)
        grpc_address: str = "127.0.0.1:50052"

Keys: every service has one root key kept outside the database (`<PREFIX>_KEY_ENCRYPTION_KEY`);
each purpose gets its own key derived from it (`derived_key("password-pepper")`), so one leaked
derived key reveals nothing about the others. The audit chain key is shared by the services of
one database, so it is its own setting (`<PREFIX>_AUDIT_CHAIN_KEY`); without it the chain is keyed
by a key derived from the root key (right for a database one service owns alone: auth's). The
services of the shared `vaultpay` database (wallet, transfer, kyc: `SharedDatabaseSettings`)
must set it: each seals every unsealed row of that database, so keys derived from three root
keys would seal one chain under three keys, and every verifier would find it broken.

Bounds: a number that would stop a service later (a pool of no connection, a periodic job
every 0 s, a NaN timeout, an unknown log level) is refused at start-up, naming its variable.
Where a subclass changes a default, it keeps the bound by declaring the field with the same
annotated type (`Seconds`, `PoolSize`, `MessageBytes`).
"""

from __future__ import annotations

import base64
import binascii
import re
import sys
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import (
    AliasChoices,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from vaultpay_common.db import asyncpg_dsn

__all__ = [
    "MessageBytes",
    "PeerServiceSettings",
    "PoolSize",
    "Seconds",
    "ServiceSettings",
    "SharedDatabaseSettings",
    "SmtpSettings",
    "decode_key32",
]

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")

# A wait or the period of a job, in seconds: above 0 and finite (a period of 0 spins the
# event loop; NaN or infinity never runs the job or never gives up).
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
# Connections the engine keeps open: at least one (a pool of 0 is SQLAlchemy's "no limit").
PoolSize = Annotated[int, Field(ge=1)]
# gRPC's largest message, both ways: gRPC reads -1 as no limit, 0 refuses every non-empty one,
# and a C int holds no more than 2**31 - 1; a floor of 64 KiB refuses such slips.
MessageBytes = Annotated[int, Field(ge=64 * 1024, le=2**31 - 1)]
# The levels `configure_logging` is given (read in any case, kept upper case).
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
_LEVEL_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL"}


def decode_key32(value: str) -> bytes:
    """Base64 text of exactly 32 bytes (an AES-256 / HMAC-SHA256 key), or ValueError."""
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError("must be base64") from exc
    if len(raw) != 32:
        raise ValueError("must decode to exactly 32 bytes")
    return raw


class ServiceSettings(BaseSettings):
    """Settings every gRPC service has."""

    # Subclasses inherit both. allow_inf_nan: no float setting means anything as NaN or
    # infinity. hide_input_in_errors: settings built outside `load_settings` (tests, tools) would
    # quote the input (a DSN, a key, AUTH_SERVICE_CLIENTS) in pydantic's own message.
    model_config = SettingsConfigDict(
        extra="ignore", frozen=True, allow_inf_nan=False, hide_input_in_errors=True
    )

    grpc_address: str = "127.0.0.1:0"
    log_level: LogLevel = "INFO"
    database_url: SecretStr
    # The table owner's DSN, used only by the `migrate` command, never by the running service.
    migration_database_url: SecretStr | None = None
    # The login role the service runs as; migrations grant it exactly what it needs.
    database_app_role: str = "vaultpay_app"
    # `migrate` only: the role each migration chain grants to, where the services of one
    # database log in as roles of their own, as JSON: {"platform": "vaultpay_app", "wallet":
    # "vaultpay_wallet_app", "transfer": "vaultpay_transfer_app", "kyc": "vaultpay_kyc_app"}.
    # "platform" (the outbox, idempotency records and audit) is the group role every service's
    # role is a member of. Set, it names every chain the service's `migrate` runs and the
    # platform's (`migrate` refuses it otherwise); unset, every chain grants to
    # database_app_role.
    database_chain_roles: dict[str, str] = Field(default_factory=dict)
    redis_url: SecretStr
    # base64 of 32 random bytes, kept outside the database; every purpose key derives from it.
    key_encryption_key: SecretStr
    # base64 of 32 bytes shared by the services of one database; derived from the root key when
    # unset.
    audit_chain_key: SecretStr | None = None
    # Where signed audit checkpoints are kept (outside the database); None: no checkpoints.
    audit_checkpoint_dir: Path | None = None
    # How often the audit sealer chains newly committed rows.
    audit_seal_interval_seconds: Seconds = 1.0
    # How long in-flight calls may finish after SIGTERM before they are cancelled (0: none).
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    # Largest request/response message; KYC uploads stream in chunks below this.
    max_message_bytes: MessageBytes = 4 * 1024 * 1024
    # Connections kept open once opened (as many more may open under a burst, and close when
    # returned). Sized so the steady load of a busy process does not overflow: at 10, 32
    # concurrent SendMoney calls opened and closed a PostgreSQL session for every third send
    # (a backend started and a SCRAM handshake each; the bench's PostgreSQL CPU per send was
    # 7.4 ms at 10, 4.8 ms at 20). wallet and transfer, on the money path, default to 64.
    # PostgreSQL's max_connections must cover every process's pool and overflow (devstack:
    # 400; auth and kyc 64 each at most, wallet and transfer 128).
    db_pool_size: PoolSize = 32
    # Upper bound of any SQL statement when the caller gave no (shorter) deadline; 0 is
    # PostgreSQL's "no bound", and it refuses (at connect) a negative value or one above a C int.
    db_statement_timeout_ms: int = Field(default=10_000, ge=0, le=2**31 - 1)
    # This service's own secret, shared with the gateway alone (its Envoy sends it to this
    # service as x-vaultpay-gateway-identity, from VAULTPAY_GATEWAY_SECRET_<SERVICE>; every
    # service has a different one): calls that carry it may name their client's address
    # (x-envoy-external-address). None: no caller may; every call is recorded under its peer
    # address (one that presents an identity anyway is said at WARNING).
    gateway_secret: SecretStr | None = Field(default=None, min_length=32)
    # While the gateway secret is rotated: the old one, also accepted. Rotate by setting the
    # new secret here with the old one as previous, then Envoy's
    # VAULTPAY_GATEWAY_SECRET_<SERVICE> to the new one, then removing this.
    gateway_previous_secret: SecretStr | None = Field(default=None, min_length=32)
    # Service tokens are addressed to the one service they call ("vaultpay:wallet"). True:
    # also accept a service token addressed to the whole mesh, as builds before scoped
    # service tokens (and this build with request_scoped_service_tokens False) ask for,
    # during a rolling update or a rollback across that change; back to False once every
    # service runs this build and asks for scoped tokens (such a token is a key to every
    # service while accepted).
    accept_unscoped_service_tokens: bool = False

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        """Any case, and the spellings Python's logging took before the level was checked
        (WARN, FATAL), so a deployment that set one still starts."""
        if not isinstance(value, str):
            return value
        level = value.strip().upper()
        return _LEVEL_ALIASES.get(level, level)

    @model_validator(mode="after")
    def _previous_gateway_secret_beside_a_current_one(self) -> Self:
        if self.gateway_previous_secret is not None and self.gateway_secret is None:
            raise ValueError(
                "gateway_previous_secret is accepted only beside gateway_secret (the new one)"
            )
        return self

    @field_validator("key_encryption_key", "audit_chain_key")
    @classmethod
    def _is_key32(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            decode_key32(value.get_secret_value())
        return value

    @field_validator("database_url", "migration_database_url")
    @classmethod
    def _asyncpg_url(cls, value: SecretStr | None) -> SecretStr | None:
        """The services and their CLIs talk to PostgreSQL through asyncpg: a plain
        `postgresql://` URL would fail later, on the first query, naming a missing driver
        (`migrate` with such an owner DSN exited 70, "failed unexpectedly", with a
        traceback)."""
        if value is not None and not value.get_secret_value().startswith("postgresql+asyncpg://"):
            raise ValueError("must start with postgresql+asyncpg://")
        if value is not None:
            asyncpg_dsn(value.get_secret_value())  # its options: a ValueError names the bad one
        return value

    @field_validator("database_app_role")
    @classmethod
    def _plain_identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError("must be a plain lower-case identifier")
        return value

    @field_validator("database_chain_roles")
    @classmethod
    def _plain_role_names(cls, value: dict[str, str]) -> dict[str, str]:
        for chain, role in value.items():
            if not _IDENTIFIER.match(chain) or not _IDENTIFIER.match(role):
                raise ValueError(f"{chain!r}: {role!r} is not a plain lower-case identifier")
        return value

    @cached_property
    def kek_bytes(self) -> bytes:
        return decode_key32(self.key_encryption_key.get_secret_value())

    def derived_key(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose, derived (HKDF-SHA256) from the root key.

        Purposes in use: "password-pepper", "pin-pepper", "audit-chain", "audit-checkpoint",
        "page-token", "ip-hash", "outbox-secrets", "request-fingerprint".
        """
        hkdf = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=f"vaultpay-{purpose}".encode()
        )
        return hkdf.derive(self.kek_bytes)

    @cached_property
    def fingerprint_key(self) -> bytes:
        """The key of the secret fields in idempotency fingerprints (grpc/idempotency.py)."""
        return self.derived_key("request-fingerprint")

    @cached_property
    def audit_key(self) -> bytes:
        """The key of this database's audit chain."""
        if self.audit_chain_key is not None:
            return decode_key32(self.audit_chain_key.get_secret_value())
        return self.derived_key("audit-chain")

    @cached_property
    def audit_checkpoint_key(self) -> bytes:
        """Signs the audit checkpoints (derived from the chain key: same holders)."""
        hkdf = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"vaultpay-audit-checkpoint"
        )
        return hkdf.derive(self.audit_key)


class PeerServiceSettings(ServiceSettings):
    """A service that authenticates its callers through auth and calls its peers.

    `service_client_id`/`secret` are this service's client credentials at auth (its service
    identity); `<peer>_address` are where the other services listen.
    """

    auth_address: str = "127.0.0.1:50051"
    wallet_address: str = "127.0.0.1:50052"
    transfer_address: str = "127.0.0.1:50053"
    kyc_address: str = "127.0.0.1:50054"
    service_client_id: str
    service_client_secret: SecretStr
    jwt_issuer: str = "vaultpay-auth"
    jwt_audience: str = "vaultpay"
    # How long a call to a peer may take before it is given up as unavailable.
    peer_timeout_seconds: Seconds = 3.0
    # Ask auth for a token per peer, addressed to it alone. False only during the first
    # phase of a rolling update from a build before scoped service tokens, whose services
    # refuse a scoped one: one unscoped token for every peer (README, "A service token works
    # only where it is sent").
    request_scoped_service_tokens: bool = True
    # The strict path answers from auth's revocation feed, long-polled (auth holds a poll
    # with nothing new up to `revocation_wait_seconds`, answering as soon as a revocation
    # commits; polls start at most every `revocation_poll_seconds`), while the last complete
    # poll is at most `revocation_max_staleness_seconds` old (a revoked token is refused
    # within that bound); after that it asks auth (IntrospectToken) on every strict call
    # until the feed recovers. False: always ask auth.
    revocation_feed: bool = True
    revocation_poll_seconds: float = Field(default=0.25, gt=0)
    revocation_wait_seconds: float = Field(default=0.5, ge=0)
    revocation_max_staleness_seconds: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _feed_polls_within_its_bound(self) -> Self:
        bound = self.revocation_max_staleness_seconds
        if self.revocation_poll_seconds >= bound or self.revocation_wait_seconds >= bound:
            raise ValueError(
                "revocation_poll_seconds and revocation_wait_seconds must be below"
                " revocation_max_staleness_seconds"
            )
        return self


class SharedDatabaseSettings(PeerServiceSettings):
    """A service of the shared `vaultpay` database (wallet, transfer, kyc).

    Each of them runs an audit sealer over every row of that database, so the chain has one
    key: `<PREFIX>_AUDIT_CHAIN_KEY`, the same value for all three, is required (a key derived
    from each service's own root key sealed rows under three keys: every verifier reported
    the chain broken at the first row another service sealed)."""

    audit_chain_key: SecretStr


class SmtpSettings(BaseSettings):
    """Where outgoing mail goes: a local sink in development (plain SMTP, no login), a relay's
    submission port in production (587: STARTTLS, then a login).

    A login is refused at start-up unless STARTTLS protects it, and a password without a
    username, or a username or password that is not ASCII; an empty variable counts as unset
    (a compose `${VAR:-}`)."""

    # hide_input_in_errors: the services build these outside `load_settings`, and pydantic's
    # own message would quote the input (the password) in a traceback.
    model_config = SettingsConfigDict(
        env_prefix="VAULTPAY_SMTP_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    host: str = "127.0.0.1"
    port: int = 1025
    # The From header: an address the relay lets `username` send as.
    sender: str = "VaultPay <no-reply@vaultpay.local>"
    # STARTTLS before anything else, the server's certificate verified (against the system's
    # CAs, or `ca_file`'s) with its name checked against `host`; a server that offers no
    # STARTTLS gets no mail (never a fall-back to plain text).
    starttls: bool = False
    # PEM file of the CAs the relay's certificate is checked against, instead of the system's.
    ca_file: FilePath | None = None
    # Log in (SMTP AUTH) after STARTTLS; None: no login.
    username: str | None = None
    password: SecretStr | None = None

    @field_validator("ca_file", "username", "password", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("username", "password")
    @classmethod
    def _ascii_only(cls, value: str | SecretStr | None) -> str | SecretStr | None:
        # smtplib encodes the login as ASCII: a UnicodeEncodeError on every mail, its text
        # quoting a character of the password. Refused here, never quoted (the variable only).
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if text is not None and not text.isascii():
            raise ValueError("must be ASCII (smtplib sends the login as ASCII)")
        return value

    @model_validator(mode="after")
    def _login_only_over_tls(self) -> Self:
        if self.password is not None and self.username is None:
            raise ValueError("VAULTPAY_SMTP_PASSWORD is set without VAULTPAY_SMTP_USERNAME")
        if self.username is not None and self.password is None:
            raise ValueError("VAULTPAY_SMTP_USERNAME is set without VAULTPAY_SMTP_PASSWORD")
        if self.username is not None and not self.starttls:
            raise ValueError(
                "VAULTPAY_SMTP_USERNAME needs VAULTPAY_SMTP_STARTTLS=true (the password would"
                " cross the network in plain text)"
            )
        if self.ca_file is not None and not self.starttls:
            raise ValueError("VAULTPAY_SMTP_CA_FILE needs VAULTPAY_SMTP_STARTTLS=true")
        return self


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def _settings_type_named(title: str, env_prefix: str) -> type[BaseSettings] | None:
    """The settings class a ValidationError is about: its name (the error's title) and prefix."""
    pending: list[type[BaseSettings]] = [BaseSettings]
    while pending:
        cls = pending.pop()
        if cls.__name__ == title and cls.model_config.get("env_prefix", "") == env_prefix:
            return cls
        pending.extend(cls.__subclasses__())
    return None


def _aliased_variables(settings_type: type[BaseSettings] | None) -> dict[str, str]:
    """{the name pydantic puts in an error's location: the variable(s) to set} for the fields
    read under a validation alias: pydantic-settings reads the alias as it is, unprefixed."""
    found: dict[str, str] = {}
    for info in (settings_type.model_fields if settings_type else {}).values():
        alias = info.validation_alias
        if isinstance(alias, str):
            found[alias] = alias
        elif isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
            # The location names the first choice; any of them is read.
            names = [c for c in alias.choices if isinstance(c, str)]
            found[alias.choices[0]] = " or ".join(names)
    return found


def _variable(loc: Sequence[Any], env_prefix: str, aliased: dict[str, str]) -> str:
    if not loc:
        return "(settings)"  # a check across several settings: its message names them
    if str(loc[0]) in aliased:
        return aliased[str(loc[0])]
    return f"{env_prefix}{'_'.join(str(p) for p in loc).upper()}"


def settings_problem(
    exc: ValidationError,
    prog: str,
    env_prefix: str,
    settings_type: type[BaseSettings] | None = None,
) -> str:
    """What is missing or wrong in `prog`'s settings, by environment variable (a field read
    under a validation alias by that alias, unprefixed); never a value (pydantic's own text
    quotes the input, which holds keys and passwords). Without `settings_type`, the settings
    class is the one the error names, with `env_prefix`."""
    aliased = _aliased_variables(settings_type or _settings_type_named(exc.title, env_prefix))
    problems = [
        f"  {_variable(e['loc'], env_prefix, aliased)}: {e['msg']}"
        for e in exc.errors(include_input=False, include_url=False)
    ]
    service = prog.removeprefix("vaultpay-")
    return "\n".join(
        [
            f"error: {prog} cannot read its settings:",
            *problems,
            "In a checkout running `make run`, load them with:",
            f'  eval "$(.venv/bin/python -m vaultpay_devstack.cli env {service})"',
        ]
    )


def unparsable_setting(exc: SettingsError, prog: str, env_prefix: str) -> str:
    """A setting pydantic-settings could not parse at all (bad JSON in a mapping): its variable,
    never its value (the message names the field and the source only)."""
    field = re.search(r'field "([^"]+)"', str(exc))
    name = f"{env_prefix}{field.group(1).upper()}" if field else "a setting"
    return f"error: {prog} cannot read its settings:\n  {name}: cannot be parsed (JSON expected)"


def load_settings(settings_type: type[SettingsT], prog: str) -> SettingsT:
    """`settings_type()` from the environment; a bad or missing one prints `settings_problem`
    (or `unparsable_setting`) to stderr and exits 2 (a process's start-up, never a request)."""
    prefix = str(settings_type.model_config.get("env_prefix", ""))
    try:
        return settings_type()
    except ValidationError as exc:
        print(settings_problem(exc, prog, prefix, settings_type), file=sys.stderr)
    except SettingsError as exc:
        print(unparsable_setting(exc, prog, prefix), file=sys.stderr)
    raise SystemExit(2)
