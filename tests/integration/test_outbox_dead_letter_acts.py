"""Staff's acts on dead letters in a `vaultpay` database migrated as the services' `migrate`
does it (each chain granting to its service's role, row-level security on): a service's CLI,
logged in as its own role, replays and discards its dead letters and audits each in the
database's audit log (platform p0001's `audit_append`, through the platform's group role); and
platform p0006, which lets an event be DISCARDED, goes down (the discarded events dead letters
again) and up again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from tests.integration.databases import fresh_databases
from vaultpay_common.cli import ServiceCli
from vaultpay_common.config import ServiceSettings
from vaultpay_common.migrations import PLATFORM_CHAIN, migrate_chain, upgrade_all
from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import Provisioned, run_sql
from vaultpay_kyc.entrypoints.cli import KYC_CHAIN
from vaultpay_transfer.entrypoints.cli import TRANSFER_CHAIN, WALLET_CHAIN

pytestmark = pytest.mark.integration

CHAINS = [PLATFORM_CHAIN, WALLET_CHAIN, TRANSFER_CHAIN, KYC_CHAIN]


@pytest.fixture(scope="module")
def dbs(infra: Infra) -> Iterator[Provisioned]:
    with fresh_databases(infra, "dl") as provisioned:
        upgrade_all(
            CHAINS,
            provisioned.vaultpay_owner_dsn,
            provisioned.vaultpay_app_role,
            chain_roles=provisioned.chain_roles(),
        )
        yield provisioned


def _owner(dbs: Provisioned, sql: str, *args: Any) -> list[Any]:
    owner = dbs.url(dbs.vaultpay_owner_role, dbs.vaultpay_database, driver="postgresql")

    async def fetch(conn: Any) -> list[Any]:
        return list(await conn.fetch(sql, *args))

    return run_sql(owner, fetch)


def _dead_letter(dbs: Provisioned, producer: str) -> str:
    event_id = str(uuid.uuid4())
    _owner(
        dbs,
        "INSERT INTO outbox_events (event_id, producer, topic, payload, status, attempts,"
        " dead_at, last_error) VALUES ($1::uuid, $2, 'mail.send', '{}', 'DEAD', 1, now(),"
        " 'PermanentDeliveryError: refused')",
        event_id,
        producer,
    )
    return event_id


def _status(dbs: Provisioned, event_id: str) -> str:
    [row] = _owner(dbs, "SELECT status FROM outbox_events WHERE event_id = $1::uuid", event_id)
    return str(row["status"])


def _audited(dbs: Provisioned, event_id: str) -> list[tuple[str, str]]:
    rows = _owner(
        dbs,
        "SELECT actor_id, action FROM audit_events WHERE target_id = $1 ORDER BY sequence",
        event_id,
    )
    return [(row["actor_id"], row["action"]) for row in rows]


def _status_check(dbs: Provisioned) -> tuple[bool, str]:
    [row] = _owner(
        dbs,
        "SELECT convalidated, pg_get_constraintdef(oid) AS definition FROM pg_constraint"
        " WHERE conname = 'outbox_events_status_valid'",
    )
    return bool(row["convalidated"]), str(row["definition"])


async def test_wallets_cli_as_its_own_role_replays_and_discards_and_audits_both(
    dbs: Provisioned, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("getpass.getuser", lambda: "asha")
    replayed, discarded = _dead_letter(dbs, "wallet"), _dead_letter(dbs, "wallet")
    settings = ServiceSettings(
        database_url=dbs.app_dsn("wallet"),
        redis_url="redis://127.0.0.1:1/0",  # never used by these commands
        key_encryption_key="A" * 43 + "=",
    )
    cli = ServiceCli("vaultpay-test", lambda: settings, chains=[], outbox_producer="wallet")

    def run(*argv: str) -> int:
        return cli.main(list(argv))

    assert await asyncio.to_thread(run, "replay-dead-letter", "--event-id", replayed) == 0
    assert (
        await asyncio.to_thread(
            run, "discard-dead-letter", "--event-id", discarded, "--reason", "erased user"
        )
        == 0
    ), capsys.readouterr().err
    assert (_status(dbs, replayed), _status(dbs, discarded)) == ("PENDING", "DISCARDED")
    assert _audited(dbs, replayed) == [("operator:asha", "outbox.dead_letter_replayed")]
    assert _audited(dbs, discarded) == [("operator:asha", "outbox.dead_letter_discarded")]

    # Kyc's dead letter is not wallet's to act on (row-level security hides it anyway).
    kycs = _dead_letter(dbs, "kyc")
    assert await asyncio.to_thread(run, "replay-dead-letter", "--event-id", kycs) == 2
    assert _status(dbs, kycs) == "DEAD" and _audited(dbs, kycs) == []


def test_p0006_lets_an_event_be_discarded_and_its_downgrade_makes_it_a_dead_letter_again(
    dbs: Provisioned,
) -> None:
    assert _status_check(dbs) == (
        True,
        "CHECK ((status = ANY (ARRAY['PENDING'::text, 'DELIVERED'::text, 'DEAD'::text,"
        " 'DISCARDED'::text])))",
    )
    discarded = _dead_letter(dbs, "transfer")
    _owner(
        dbs, "UPDATE outbox_events SET status = 'DISCARDED' WHERE event_id = $1::uuid", discarded
    )
    platform_role = dbs.chain_roles()["platform"]

    migrate_chain(
        PLATFORM_CHAIN, dbs.vaultpay_owner_dsn, platform_role, action="downgrade", revision="p0005"
    )
    assert _status(dbs, discarded) == "DEAD"  # listed and replayable again
    validated, definition = _status_check(dbs)
    assert validated and "DISCARDED" not in definition
    with pytest.raises(asyncpg.CheckViolationError):
        _owner(
            dbs,
            "UPDATE outbox_events SET status = 'DISCARDED' WHERE event_id = $1::uuid",
            discarded,
        )

    migrate_chain(PLATFORM_CHAIN, dbs.vaultpay_owner_dsn, platform_role)
    assert _status_check(dbs)[0]
    _owner(
        dbs, "UPDATE outbox_events SET status = 'DISCARDED' WHERE event_id = $1::uuid", discarded
    )
    assert _status(dbs, discarded) == "DISCARDED"
