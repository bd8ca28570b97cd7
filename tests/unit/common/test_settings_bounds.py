"""Numeric settings out of their bounds stop a service at start-up (exit 2, the variable named),
not later (review of 2026-12-05): a pool of 0 connections (SQLAlchemy: no limit), a message
limit of -1 (gRPC: none), a negative statement timeout (PostgreSQL refuses it at connect), a
peer timeout or a periodic job's interval of 0, negative or NaN, an unknown log level (a
traceback from `configure_logging`).

A service that changes a shared setting's default (wallet's and transfer's pool, kyc's message
limit) keeps its bounds.
"""

from __future__ import annotations

import base64
import logging
import os
from typing import Any

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from tests.support import peer_service_fields
from vaultpay_auth.settings import AuthSettings
from vaultpay_common.config import ServiceSettings, load_settings
from vaultpay_common.logging import configure_logging
from vaultpay_kyc.settings import KycSettings
from vaultpay_transfer.settings import TransferSettings
from vaultpay_wallet.settings import WalletSettings

SERVICES: dict[str, type[ServiceSettings]] = {
    "AUTH_": AuthSettings,
    "WALLET_": WalletSettings,
    "TRANSFER_": TransferSettings,
    "KYC_": KycSettings,
}
PEERS = ("WALLET_", "TRANSFER_", "KYC_")


def _required(prefix: str) -> dict[str, Any]:
    if prefix == "AUTH_":
        return {
            "database_url": "postgresql+asyncpg://u:p@127.0.0.1:1/db",
            "redis_url": "redis://127.0.0.1:1/0",
            "key_encryption_key": base64.b64encode(bytes(32)).decode(),
        }
    fields = peer_service_fields()
    return {
        k: v.get_secret_value() if hasattr(v, "get_secret_value") else v for k, v in fields.items()
    }


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Each service's required settings in the environment, nothing else of theirs."""
    for name in list(os.environ):
        if name.startswith(tuple(SERVICES)):
            monkeypatch.delenv(name)
    for prefix in SERVICES:
        for field, value in _required(prefix).items():
            monkeypatch.setenv(f"{prefix}{field.upper()}", str(value))
    return monkeypatch


def _refused_naming(
    prefix: str, variable: str, value: str, monkeypatch: pytest.MonkeyPatch, err: Any
) -> str:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exited:
        load_settings(SERVICES[prefix], f"vaultpay-{prefix[:-1].lower()}")
    assert exited.value.code == 2
    said: str = err.readouterr().err
    assert f"  {variable}: " in said, said
    return said


SHARED_BAD = [
    ("DB_POOL_SIZE", "0"),
    ("DB_POOL_SIZE", "-4"),
    ("MAX_MESSAGE_BYTES", "-1"),
    ("MAX_MESSAGE_BYTES", "0"),
    ("MAX_MESSAGE_BYTES", "100"),
    ("MAX_MESSAGE_BYTES", str(2**31)),
    ("DB_STATEMENT_TIMEOUT_MS", "-1"),
    ("DB_STATEMENT_TIMEOUT_MS", str(2**31)),
    ("AUDIT_SEAL_INTERVAL_SECONDS", "0"),
    ("AUDIT_SEAL_INTERVAL_SECONDS", "-1"),
    ("AUDIT_SEAL_INTERVAL_SECONDS", "nan"),
    ("AUDIT_SEAL_INTERVAL_SECONDS", "inf"),
    ("SHUTDOWN_GRACE_SECONDS", "-1"),
    ("SHUTDOWN_GRACE_SECONDS", "nan"),
    ("LOG_LEVEL", "verbose"),
    ("LOG_LEVEL", "NOTSET"),
    ("LOG_LEVEL", ""),
]


@pytest.mark.parametrize("prefix", SERVICES)
@pytest.mark.parametrize(("name", "value"), SHARED_BAD)
def test_a_shared_setting_out_of_bounds_stops_every_service(
    environment: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    prefix: str,
    name: str,
    value: str,
) -> None:
    _refused_naming(prefix, f"{prefix}{name}", value, environment, capsys)


OWN_BAD = [
    *(
        (prefix, "PEER_TIMEOUT_SECONDS", value)
        for prefix in PEERS
        for value in ("0", "-3", "nan", "inf")
    ),
    *(
        (prefix, "OUTBOX_POLL_SECONDS", value)
        for prefix in PEERS
        for value in ("0", "-1", "nan", "inf")
    ),
    *(("WALLET_", "FREEZE_SWEEP_SECONDS", value) for value in ("0", "-1", "nan", "inf")),
    ("WALLET_", "MAX_WATCH_STREAMS_PER_USER", "0"),
    ("WALLET_", "MAX_WATCH_STREAMS", "0"),
    *(("KYC_", "ROTATION_RESUME_SECONDS", value) for value in ("0", "-1", "nan", "inf")),
    *(("KYC_", "ROTATION_SETTLE_SECONDS", value) for value in ("-1", "nan", "inf")),
    *(("AUTH_", "KEY_RELOAD_SECONDS", value) for value in ("0", "-1", "nan", "inf")),
    ("AUTH_", "KEY_PUBLISH_LEAD_SECONDS", "-1"),
    ("AUTH_", "REFRESH_TOKEN_TTL_SECONDS", "0"),
    ("AUTH_", "LOGIN_FAILURE_WINDOW_SECONDS", "0"),
    ("AUTH_", "LOGIN_FAILURES_PER_ACCOUNT", "0"),
    ("AUTH_", "LOGIN_FAILURES_PER_IP", "0"),
    # The revocation feed's bounds held already; infinity passed them.
    ("WALLET_", "REVOCATION_MAX_STALENESS_SECONDS", "inf"),
]


@pytest.mark.parametrize(("prefix", "name", "value"), OWN_BAD)
def test_a_service_setting_out_of_bounds_stops_that_service(
    environment: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    prefix: str,
    name: str,
    value: str,
) -> None:
    _refused_naming(prefix, f"{prefix}{name}", value, environment, capsys)


@pytest.mark.parametrize(
    ("prefix", "name", "value"),
    [("WALLET_", "DB_POOL_SIZE", "0"), ("TRANSFER_", "DB_POOL_SIZE", "0")]
    + [("KYC_", "MAX_MESSAGE_BYTES", v) for v in ("-1", str(2**31))],
)
def test_a_changed_default_keeps_the_shared_bound(
    environment: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    prefix: str,
    name: str,
    value: str,
) -> None:
    """wallet and transfer default to 64 connections, kyc to a larger message: declared
    again in the subclass, a plain `int` had dropped the base class's bound."""
    said = _refused_naming(prefix, f"{prefix}{name}", value, environment, capsys)
    assert "(settings)" not in said  # the field's own bound, not kyc's check across fields


@pytest.mark.parametrize("cls", SERVICES.values(), ids=lambda c: c.__name__)
def test_no_seconds_setting_takes_a_negative_or_non_finite_value(cls: type[BaseSettings]) -> None:
    """Every `*_seconds` field of every service, as declared now or added later."""
    prefix = next(p for p, c in SERVICES.items() if c is cls)
    seconds = [name for name in cls.model_fields if name.endswith("_seconds")]
    assert len(seconds) >= 3
    for name in seconds:
        for value in ("-1", "nan", "inf", "-inf"):
            with pytest.raises(ValidationError) as refused:
                cls(**{**_required(prefix), name: value})
            assert {e["loc"] for e in refused.value.errors()} == {(name,)}, (name, value)


@pytest.mark.parametrize("prefix", SERVICES)
def test_defaults_are_within_their_bounds_and_unchanged(
    environment: pytest.MonkeyPatch, prefix: str
) -> None:
    settings = load_settings(SERVICES[prefix], "vaultpay-test")
    assert settings.log_level == "INFO"
    assert settings.db_statement_timeout_ms == 10_000
    assert settings.audit_seal_interval_seconds == 1.0
    assert settings.shutdown_grace_seconds == 10.0
    expected_pool = 64 if prefix in ("WALLET_", "TRANSFER_") else 32
    assert settings.db_pool_size == expected_pool
    expected_bytes = 10 * 2**20 + 64 * 1024 if prefix == "KYC_" else 4 * 2**20
    assert settings.max_message_bytes == expected_bytes


@pytest.mark.parametrize(
    ("given", "level"),
    [
        ("warning", "WARNING"),
        ("Debug", "DEBUG"),
        (" ERROR ", "ERROR"),
        ("critical", "CRITICAL"),
        ("warn", "WARNING"),
        ("FATAL", "CRITICAL"),
    ],
)
def test_a_log_level_is_read_in_any_case(
    environment: pytest.MonkeyPatch, given: str, level: str
) -> None:
    """`configure_logging` upper-cased the level and Python's logging took WARN and FATAL:
    what worked before still does (review of 2026-12-04)."""
    environment.setenv("WALLET_LOG_LEVEL", given)
    settings = load_settings(WalletSettings, "vaultpay-wallet")
    assert settings.log_level == level
    root = logging.getLogger()
    handlers, root_level = root.handlers[:], root.level
    try:
        configure_logging("wallet", settings.log_level)
        assert logging.getLevelName(root.level) == settings.log_level
    finally:
        root.handlers[:], root.level = handlers, root_level


def test_edge_values_within_the_bounds_are_accepted(environment: pytest.MonkeyPatch) -> None:
    for name, value in {
        "WALLET_DB_POOL_SIZE": "1",
        "WALLET_MAX_MESSAGE_BYTES": str(64 * 1024),
        "WALLET_DB_STATEMENT_TIMEOUT_MS": "0",  # PostgreSQL's "no bound"
        "WALLET_SHUTDOWN_GRACE_SECONDS": "0",
        "WALLET_AUDIT_SEAL_INTERVAL_SECONDS": "0.05",
        "WALLET_PEER_TIMEOUT_SECONDS": "0.5",
    }.items():
        environment.setenv(name, value)
    settings = load_settings(WalletSettings, "vaultpay-wallet")
    assert (settings.db_pool_size, settings.db_statement_timeout_ms) == (1, 0)
    assert settings.shutdown_grace_seconds == 0
