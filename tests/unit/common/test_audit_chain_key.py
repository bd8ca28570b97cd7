"""wallet, transfer and kyc require their audit chain key (review of 2026-12-05).

The three share the `vaultpay` database and each runs an audit sealer over all of its rows.
Without `<PREFIX>_AUDIT_CHAIN_KEY`, each derived a chain key from its own root key: the one
chain was sealed under three keys, and every verifier reported it broken at the first row
another service had sealed. auth has a database of its own: its derived key stays right.

Everything that starts them passes it: `make run` (vaultpay_devstack.services.service_env,
the same value for the three), and the test fixtures (tests/support.py).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from tests.support import peer_service_fields
from vaultpay_auth.settings import AuthSettings
from vaultpay_common.config import SharedDatabaseSettings, load_settings
from vaultpay_devstack.credentials import MeshSecrets
from vaultpay_devstack.postgres import Provisioned
from vaultpay_devstack.redis import RedisServer
from vaultpay_devstack.services import DEFAULT_PORTS, SERVICES, EnvInputs, service_env
from vaultpay_kyc.settings import KycSettings
from vaultpay_transfer.settings import TransferSettings
from vaultpay_wallet.settings import WalletSettings

SHARED: dict[str, type[SharedDatabaseSettings]] = {
    "wallet": WalletSettings,
    "transfer": TransferSettings,
    "kyc": KycSettings,
}


def _key(fill: bytes) -> SecretStr:
    return SecretStr(base64.b64encode(fill * 32).decode())


def _without_chain_key() -> dict[str, Any]:
    fields = peer_service_fields()
    del fields["audit_chain_key"]
    return fields


@pytest.mark.parametrize("cls", SHARED.values(), ids=lambda c: c.__name__)
def test_a_service_of_the_shared_database_needs_its_chain_key(
    cls: type[SharedDatabaseSettings],
) -> None:
    with pytest.raises(ValidationError) as refused:
        cls(**_without_chain_key())
    assert [(e["loc"], e["type"]) for e in refused.value.errors()] == [
        (("audit_chain_key",), "missing")
    ]


@pytest.mark.parametrize("service", SHARED)
def test_start_up_without_it_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], service: str
) -> None:
    prefix = f"{service.upper()}_"
    for name in list(os.environ):
        if name.startswith(prefix):
            monkeypatch.delenv(name)
    for field, value in _without_chain_key().items():
        plain = value.get_secret_value() if isinstance(value, SecretStr) else value
        monkeypatch.setenv(f"{prefix}{field.upper()}", plain)

    with pytest.raises(SystemExit) as exited:
        load_settings(SHARED[service], f"vaultpay-{service}")

    assert exited.value.code == 2
    assert f"  {prefix}AUDIT_CHAIN_KEY: Field required" in capsys.readouterr().err


def test_the_three_seal_under_one_key_whatever_their_root_keys() -> None:
    chain = _key(b"k")
    keys = {
        cls(
            **{**peer_service_fields(), "key_encryption_key": _key(fill), "audit_chain_key": chain}
        ).audit_key
        for cls, fill in zip(SHARED.values(), (b"w", b"t", b"y"), strict=True)
    }
    assert keys == {base64.b64decode(chain.get_secret_value())}


def test_auth_alone_in_its_database_still_derives_its_chain_key() -> None:
    settings = AuthSettings(
        database_url=SecretStr("postgresql+asyncpg://u:p@127.0.0.1:1/vaultpay_auth"),
        redis_url=SecretStr("redis://127.0.0.1:1/0"),
        key_encryption_key=_key(b"a"),
    )
    assert settings.audit_chain_key is None
    assert settings.audit_key == settings.derived_key("audit-chain")


@pytest.mark.parametrize("operator", [False, True], ids=["server", "migrate"])
def test_make_run_gives_the_three_one_chain_key_they_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, operator: bool
) -> None:
    inputs = EnvInputs(
        profile="dev",
        ports=dict(DEFAULT_PORTS),
        databases=Provisioned("127.0.0.1", 5432),
        redis=RedisServer("127.0.0.1", 6379),
        smtp_port=2525,
        secrets=MeshSecrets.load(tmp_path),
        var_dir=tmp_path,
    )
    for name in list(os.environ):
        if name.startswith(("WALLET_", "TRANSFER_", "KYC_")):
            monkeypatch.delenv(name)
    audit_keys = set()
    for service in SERVICES:
        if service.name not in SHARED:
            continue
        for name, value in service_env(service, inputs, operator=operator).items():
            monkeypatch.setenv(name, value)
        settings = load_settings(SHARED[service.name], f"vaultpay-{service.name}")
        audit_keys.add(settings.audit_key)
    assert len(audit_keys) == 1
