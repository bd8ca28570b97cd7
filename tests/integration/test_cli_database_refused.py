"""An operator command whose settings name a user, password or database that PostgreSQL
refuses exits 2 (bad settings, as a missing setting does), in one line naming the variable to
check, never the password, rather than a traceback and exit 1, which `verify-ledger` and
`verify-audit` answer for a broken ledger or chain."""

from __future__ import annotations

import pytest

from tests.support import use_transfer_settings
from vaultpay_devstack.infra import Infra
from vaultpay_transfer.entrypoints.cli import cli

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("user", "password", "database"),
    [
        ("postgres", "wrong-canary-password", "postgres"),
        ("no_such_role", "canary", "postgres"),
        ("", "", "no_such_database"),  # the server's own superuser and password
    ],
)
def test_a_refused_login_exits_2_naming_the_setting(
    infra: Infra,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    user: str,
    password: str,
    database: str,
) -> None:
    pg = infra.postgres
    user, password = user or pg.superuser, password or pg.password or "trust-needs-none"
    url = f"postgresql+asyncpg://{user}:{password}@{pg.host}:{pg.port}/{database}"
    use_transfer_settings(monkeypatch, url)

    assert cli.main(["verify-ledger"]) == 2

    said = capsys.readouterr()
    [line] = said.err.splitlines()
    assert line.startswith("error: the database refused the connection ("), line
    assert "check TRANSFER_DATABASE_URL" in line
    assert password not in said.err and "Traceback" not in said.err
