"""The audit log of the `vaultpay` database end to end: a staff action through the gateway is
listed to admins, sealed into the hash chain by the running service, and the operator's
`vaultpay-wallet verify-audit` finds a row that the table owner rewrote behind the triggers.

The mesh (and its audit chain) lives for the whole test session, so the tampered row is put
back exactly as it was in a `finally`, and the chain is verified intact again before the test
ends: later tests and the session's own checks see an untouched chain.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Gateway
from tests.e2e.wallet_support import new_person, rid, staff_token, user_id_of
from vaultpay_devstack.mesh import Mesh
from vaultpay_devstack.postgres import run_sql
from vaultpay_devstack.workspace import python_env

WALLET_CLI = Path(sys.executable).parent / "vaultpay-wallet"
SEAL_PATIENCE_S = 20.0


@dataclass(frozen=True)
class Verdict:
    exit_code: int
    report: str


def verify_audit(mesh: Mesh) -> Verdict:
    """The operator's command, with exactly the settings the wallet service runs with."""
    done = subprocess.run(
        [str(WALLET_CLI), "verify-audit"],
        env=python_env(mesh.env_for("wallet")),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Verdict(done.returncode, done.stdout + done.stderr)


def _owner_dsn(mesh: Mesh) -> str:
    dbs = mesh.databases
    assert dbs is not None
    return dbs.url(dbs.vaultpay_owner_role, dbs.vaultpay_database, driver="postgresql")


def _as_owner_behind_the_triggers(mesh: Mesh, sequence: int, details_json: str) -> None:
    """What someone holding the owner's password can do: switch the append-only trigger off,
    rewrite a row, switch it on again (all in one transaction, so no one else ever sees the
    trigger off)."""

    async def rewrite(conn: Any) -> None:
        async with conn.transaction():
            await conn.execute(
                "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete"
            )
            status = await conn.execute(
                "UPDATE audit_events SET details = $2::jsonb WHERE sequence = $1",
                sequence,
                details_json,
            )
            assert status == "UPDATE 1", status
            await conn.execute(
                "ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update_delete"
            )

    run_sql(_owner_dsn(mesh), rewrite)


def _stored_row(mesh: Mesh, sequence: int) -> tuple[str, int]:
    """The row's details exactly as stored (jsonb text) and the position of its seal."""

    async def read(conn: Any) -> tuple[str, int]:
        row = await conn.fetchrow(
            "SELECT e.details::text AS details, s.position FROM audit_events e"
            " JOIN audit_seals s ON s.sequence = e.sequence WHERE e.sequence = $1",
            sequence,
        )
        assert row is not None, f"audit row {sequence} is not sealed"
        return str(row["details"]), int(row["position"])

    return run_sql(_owner_dsn(mesh), read)


def _sealed_freeze_event(
    gateway: Gateway, admin: str, wallet_id: str, reason: str
) -> dict[str, Any]:
    """The wallet.frozen event of `wallet_id` as admins list it, once the sealer chained it
    (its row_hash is set then); polls with a deadline."""
    deadline = time.monotonic() + SEAL_PATIENCE_S
    while True:
        listed = gateway.call(
            "GET", f"/v1/admin/audit-logs?targetId={wallet_id}&action=wallet.frozen", token=admin
        )
        assert listed.status == 200, listed.body
        events = listed.body.get("events", [])
        assert len(events) == 1, events
        event: dict[str, Any] = events[0]
        assert event["details"]["reason"] == reason, event
        if event.get("rowHash"):
            return event
        assert time.monotonic() < deadline, f"not sealed within {SEAL_PATIENCE_S} s: {event}"
        time.sleep(0.1)


def test_verify_audit_finds_a_row_rewritten_by_the_owner(gateway: Gateway, mesh: Mesh) -> None:
    person = new_person(gateway)
    admin = staff_token(mesh, gateway, "ADMIN")
    reason = f"e2e audit {uuid.uuid4().hex[:8]}"
    frozen = gateway.call(
        "POST",
        f"/v1/admin/wallets/{person.wallet_id}:freeze",
        {"requestId": rid(), "reason": reason},
        token=admin,
    )
    assert frozen.status == 200, frozen.body

    event = _sealed_freeze_event(gateway, admin, person.wallet_id, reason)
    assert event["actorId"] == user_id_of(admin)
    assert event["targetType"] == "wallet" and event["targetId"] == person.wallet_id
    assert len(event["rowHash"]) == 64
    sequence = int(event["sequence"])

    before = verify_audit(mesh)
    assert before.exit_code == 0, before.report
    assert "audit chain intact" in before.report

    original, position = _stored_row(mesh, sequence)
    assert reason in original
    tampered = original.replace(reason, "routine check")
    try:
        _as_owner_behind_the_triggers(mesh, sequence, tampered)
        listed = gateway.call(
            "GET", f"/v1/admin/audit-logs?targetId={person.wallet_id}", token=admin
        ).body["events"]
        assert [
            e["details"].get("reason") for e in listed if e["sequence"] == event["sequence"]
        ] == ["routine check"], "the rewrite really reached the table"

        after = verify_audit(mesh)
        assert after.exit_code == 1, after.report
        assert f"BROKEN at position {position} (sequence {sequence})" in after.report
        assert "row content does not match its seal" in after.report
    finally:
        _as_owner_behind_the_triggers(mesh, sequence, original)

    restored = verify_audit(mesh)
    assert restored.exit_code == 0, restored.report
    assert "audit chain intact" in restored.report
    assert _stored_row(mesh, sequence) == (original, position)


def test_reading_the_audit_log_is_itself_audited(gateway: Gateway, mesh: Mesh) -> None:
    """Its rows name users, wallets and staff addresses: a page shown to staff writes
    `audit_events.listed` with the filters, the rows shown and the reader's address, as
    auth's ListAuthAuditEvents does (review of 2026-12-04 night)."""
    person = new_person(gateway)
    admin = staff_token(mesh, gateway, "ADMIN")
    shown = gateway.call("GET", f"/v1/admin/audit-logs?targetId={person.wallet_id}", token=admin)
    assert shown.status == 200, shown.body
    sequences = ",".join(e["sequence"] for e in shown.body.get("events", []))
    reads = gateway.call(
        "GET",
        f"/v1/admin/audit-logs?action=audit_events.listed&actorId={user_id_of(admin)}",
        token=admin,
    )
    assert reads.status == 200, reads.body
    mine = [e for e in reads.body["events"] if e["details"].get("target_id") == person.wallet_id]
    assert len(mine) == 1, reads.body
    details = mine[0]["details"]
    assert details["sequences"] == sequences
    assert details["count"] == str(len(shown.body.get("events", [])))
    assert details["ip"], details
    assert mine[0]["actorRole"] == "ADMIN"
