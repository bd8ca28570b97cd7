"""The audit log without a database: entries, the canonical form of a row, the hash chain over
sealed rows, and signed checkpoints of its head. Pure Python (no sqlalchemy), so it is unit
tested in milliseconds and importable from domain code.

The chain: seal number `position` (dense from 1) covers the row with sequence `sequence` and
stores `row_hash = HMAC-SHA256(chain_key, prev_hash || canonical(position, row))`, with
`prev_hash` the row_hash of position - 1 (`GENESIS_HASH` for position 1). Changing a sealed row,
dropping or reordering seals breaks the chain at that position; dropping the newest seals
does not, which is what the signed checkpoint of the head is for.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from vaultpay_common.context import Role

__all__ = [
    "GENESIS_HASH",
    "AuditEntry",
    "AuditQuery",
    "AuditRecord",
    "AuditRow",
    "AuditVerification",
    "ChainBreak",
    "ChainVerifier",
    "Checkpoint",
    "Seal",
    "StaffViewer",
    "canonical_row",
    "check_against_checkpoint",
    "checkpoint_is_authentic",
    "compute_row_hash",
    "seal_rows",
    "sign_checkpoint",
    "staff_listing",
]

GENESIS_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audited action. `details` must hold no secrets (PINs, passwords, tokens)."""

    action: str
    target_type: str
    target_id: str
    details: Mapping[str, str] = field(default_factory=dict)
    # Set when the actor is not the caller's principal, e.g. the user who just signed in
    # through a public RPC.
    actor_id: str = ""
    actor_role: str = ""


@dataclass(frozen=True, slots=True)
class StaffViewer:
    """The staff member reading users' data through an admin API, and their client address:
    the actor (and the `ip` detail) of the audit rows of staff reads, which wallet and kyc
    build in their `domain/staff_reads.py`."""

    actor_id: str
    actor_role: Role
    client_ip: str = ""


def staff_listing(
    viewer: StaffViewer,
    action: str,
    target_type: str,
    filters: Mapping[str, str],
    shown_as: str,
    shown: Iterable[str],
    *,
    continued: bool | None = None,
) -> AuditEntry:
    """A page of a staff listing of users' data: the filters set (none: no key), whether it
    continued an earlier page (when told), how many rows and which (`shown_as`: their ids),
    and the reader's address; the actor is the viewer. Never what the rows showed."""
    ids = list(shown)
    details = dict(filters)
    if continued is not None:
        details["continued"] = str(continued).lower()
    details.update({"count": str(len(ids)), shown_as: ",".join(ids), "ip": viewer.client_ip})
    return AuditEntry(
        action,
        target_type,
        "",
        details,
        actor_id=viewer.actor_id,
        actor_role=viewer.actor_role.name,
    )


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters for listing audit events; empty/None means "any"."""

    actor_id: str = ""
    action: str = ""
    target_id: str = ""
    start: datetime | None = None
    end: datetime | None = None

    def set_filters(self) -> dict[str, str]:
        """The filters set, named as the listing requests name them: what the audit row of a
        staff read of the log records of it."""
        filters = {
            "actor_id": self.actor_id,
            "action": self.action,
            "target_id": self.target_id,
            "start_time": self.start.isoformat() if self.start is not None else "",
            "end_time": self.end.isoformat() if self.end is not None else "",
        }
        return {name: value for name, value in filters.items() if value}


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An audit event as listed; `row_hash`/`position` come from its seal ("" / None if unsealed)."""

    sequence: int
    created_at: datetime
    actor_id: str
    actor_role: str
    action: str
    target_type: str
    target_id: str
    request_id: str
    details: dict[str, str]
    row_hash: str = ""
    position: int | None = None


@dataclass(frozen=True, slots=True)
class AuditRow:
    """The columns of an audit row that the chain covers."""

    sequence: int
    created_at: datetime
    actor_id: str
    actor_role: str
    action: str
    target_type: str
    target_id: str
    request_id: str
    details: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class Seal:
    """One link of the chain (a row of audit_seals)."""

    position: int
    sequence: int
    prev_hash: str
    row_hash: str


def canonical_row(position: int, row: AuditRow) -> bytes:
    """The bytes hashed for `row` at `position`: sorted-key compact JSON, UTC microseconds."""
    body = {
        "position": position,
        "sequence": row.sequence,
        "created_at": row.created_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor_id": row.actor_id,
        "actor_role": row.actor_role,
        "action": row.action,
        "target_type": row.target_type,
        "target_id": row.target_id,
        "request_id": row.request_id,
        "details": dict(row.details),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def compute_row_hash(key: bytes, prev_hash: str, position: int, row: AuditRow) -> str:
    mac = hmac.new(key, prev_hash.encode(), hashlib.sha256)
    mac.update(canonical_row(position, row))
    return mac.hexdigest()


def seal_rows(key: bytes, head: Seal | None, rows: Iterable[AuditRow]) -> list[Seal]:
    """The seals that append `rows`, in the given order, after `head` (None: empty chain)."""
    position = 0 if head is None else head.position
    prev_hash = GENESIS_HASH if head is None else head.row_hash
    seals: list[Seal] = []
    for row in rows:
        position += 1
        row_hash = compute_row_hash(key, prev_hash, position, row)
        seals.append(Seal(position, row.sequence, prev_hash, row_hash))
        prev_hash = row_hash
    return seals


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """Where verification failed first, and why (position 0: the checkpoint itself)."""

    position: int
    reason: str
    sequence: int | None = None

    def __str__(self) -> str:
        """As an operator reads it: "at position 3 (sequence 7): <reason>"; the checkpoint
        itself (position 0) by its reason alone."""
        if self.position == 0:
            return self.reason
        where = f"at position {self.position}"
        if self.sequence is not None:
            where += f" (sequence {self.sequence})"
        return f"{where}: {self.reason}"


class ChainVerifier:
    """Checks seals fed in position order; remembers the first break and the hash at `anchor`.

    Seals after a break are still counted but no longer checked (every later hash depends on
    the broken one, so they prove nothing).
    """

    def __init__(self, key: bytes, *, anchor: int | None = None) -> None:
        self._key = key
        self._anchor = anchor
        self.seen = 0
        self.verified = 0
        self.head_hash = GENESIS_HASH
        self.anchor_hash: str | None = None
        self.broken: ChainBreak | None = None

    def feed(self, seal: Seal, row: AuditRow | None) -> None:
        self.seen += 1
        if self.broken is not None:
            return
        expected_position = self.verified + 1
        if seal.position != expected_position:
            self._break(expected_position, "seal missing (gap in positions)", None)
        elif seal.prev_hash != self.head_hash:
            self._break(seal.position, "prev_hash does not link to the previous seal", seal)
        elif row is None:
            self._break(seal.position, "the sealed row is missing", seal)
        elif row.sequence != seal.sequence:
            self._break(seal.position, "the seal names another row", seal)
        elif not hmac.compare_digest(
            compute_row_hash(self._key, seal.prev_hash, seal.position, row), seal.row_hash
        ):
            self._break(seal.position, "row content does not match its seal", seal)
        else:
            self.verified = seal.position
            self.head_hash = seal.row_hash
            if seal.position == self._anchor:
                self.anchor_hash = seal.row_hash

    def _break(self, position: int, reason: str, seal: Seal | None) -> None:
        self.broken = ChainBreak(position, reason, None if seal is None else seal.sequence)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The head of the chain at some time, signed and kept outside the database."""

    position: int
    head_hash: str
    created_at: datetime
    signature: str = ""

    def payload(self) -> bytes:
        body = {
            "position": self.position,
            "head_hash": self.head_hash,
            "created_at": self.created_at.astimezone(UTC).isoformat(timespec="microseconds"),
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_checkpoint(key: bytes, position: int, head_hash: str, created_at: datetime) -> Checkpoint:
    """`key` is the checkpoint key (derived from the chain key for this purpose only)."""
    if created_at.tzinfo is None:
        raise ValueError("a checkpoint's time must be timezone-aware")
    unsigned = Checkpoint(position, head_hash, created_at)
    signature = hmac.new(key, unsigned.payload(), hashlib.sha256).hexdigest()
    return Checkpoint(position, head_hash, created_at, signature)


def checkpoint_is_authentic(key: bytes, checkpoint: Checkpoint) -> bool:
    expected = hmac.new(key, checkpoint.payload(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, checkpoint.signature)


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """What `verify_audit` found. `ok` is False only when something is provably wrong."""

    sealed: int
    verified: int
    broken: ChainBreak | None
    unsealed: int
    oldest_unsealed_age: timedelta | None
    checkpoint: Checkpoint | None
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.broken is None

    @property
    def anchored(self) -> bool:
        """The chain reaches a signed checkpoint with the same hash (or nothing is sealed)."""
        return self.ok and (self.checkpoint is not None or self.sealed == 0)

    def report(self) -> str:
        lines = [f"audit chain: {self.sealed} rows sealed, {self.verified} verified"]
        if self.broken is not None and self.broken.position == 0:
            lines.append(f"audit chain BROKEN: {self.broken}")
        elif self.broken is not None:
            lines.append(f"audit chain BROKEN {self.broken}")
        else:
            lines.append("audit chain intact")
        if self.unsealed:
            age = self.oldest_unsealed_age or timedelta()
            lines.append(
                f"not sealed yet: {self.unsealed} rows, the oldest {age.total_seconds():.1f} s old"
            )
        else:
            lines.append("not sealed yet: none")
        if self.checkpoint is not None:
            lines.append(
                f"checkpoint: position {self.checkpoint.position} of "
                f"{self.checkpoint.created_at.isoformat()}"
                + (" reached, hash matches" if self.ok else "")
            )
        lines.extend(f"WARNING: {warning}" for warning in self.warnings)
        return "\n".join(lines)


def check_against_checkpoint(chain: ChainVerifier, checkpoint: Checkpoint) -> ChainBreak | None:
    """The chain must reach `checkpoint` with the same hash: else rows were deleted or rewritten.

    `chain` must have been built with `anchor=checkpoint.position`.
    """
    if chain.broken is not None and chain.broken.position <= checkpoint.position:
        return chain.broken
    if chain.verified < checkpoint.position and chain.broken is None:
        return ChainBreak(
            chain.verified + 1,
            f"rows deleted after position {chain.verified}: the signed checkpoint of "
            f"{checkpoint.created_at.isoformat()} records position {checkpoint.position}",
        )
    if chain.anchor_hash is not None and not hmac.compare_digest(
        chain.anchor_hash, checkpoint.head_hash
    ):
        return ChainBreak(
            checkpoint.position,
            "the chain differs from the signed checkpoint at this position (rewritten)",
        )
    return chain.broken
