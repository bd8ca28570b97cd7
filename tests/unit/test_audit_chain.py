from datetime import UTC, datetime, timedelta
from typing import Any

from vaultpay_common.audit import GENESIS_HASH, compute_row_hash, verify_audit_chain

KEY = b"k" * 32


def _chain(n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    prev = GENESIS_HASH
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for seq in range(1, n + 1):
        fields: dict[str, Any] = {
            "actor_id": "u1",
            "actor_role": "ADMIN",
            "action": "user.role_changed",
            "target_type": "user",
            "target_id": f"t{seq}",
            "request_id": "r",
            "details": {"new_role": "MODERATOR"},
        }
        created = start + timedelta(seconds=seq)
        row_hash = compute_row_hash(KEY, prev, seq, created, fields)
        rows.append(
            {
                "sequence": seq,
                "created_at": created,
                "prev_hash": prev,
                "row_hash": row_hash,
                **fields,
            }
        )
        prev = row_hash
    return rows


def test_intact_chain_verifies() -> None:
    result = verify_audit_chain(_chain(5), KEY)
    assert result.ok
    assert result.rows_checked == 5


def test_changed_content_is_detected_at_that_row() -> None:
    rows = _chain(5)
    rows[2]["details"] = {"new_role": "SUPER_ADMIN"}
    result = verify_audit_chain(rows, KEY)
    assert not result.ok
    assert result.first_bad_sequence == 3


def test_deleted_row_is_detected() -> None:
    rows = _chain(5)
    del rows[1]
    result = verify_audit_chain(rows, KEY)
    assert not result.ok
    assert result.first_bad_sequence == 3


def test_rehashed_row_breaks_the_link_to_the_next() -> None:
    rows = _chain(4)
    forged = dict(rows[1], action="user.deactivated")
    hashed = {
        k: forged[k]
        for k in (
            "actor_id",
            "actor_role",
            "action",
            "target_type",
            "target_id",
            "request_id",
            "details",
        )
    }
    forged["row_hash"] = compute_row_hash(KEY, forged["prev_hash"], 2, forged["created_at"], hashed)
    rows[1] = forged
    result = verify_audit_chain(rows, KEY)
    assert not result.ok
    assert result.first_bad_sequence == 3


def test_a_chain_rebuilt_without_the_key_does_not_verify() -> None:
    rows = _chain(3)
    prev = GENESIS_HASH
    for row in rows:  # an attacker with table access recomputes every hash with a guess
        hashed = {
            k: row[k]
            for k in (
                "actor_id",
                "actor_role",
                "action",
                "target_type",
                "target_id",
                "request_id",
                "details",
            )
        }
        row["prev_hash"] = prev
        row["row_hash"] = compute_row_hash(
            b"g" * 32, prev, row["sequence"], row["created_at"], hashed
        )
        prev = row["row_hash"]
    result = verify_audit_chain(rows, KEY)
    assert not result.ok
    assert result.first_bad_sequence == 1
