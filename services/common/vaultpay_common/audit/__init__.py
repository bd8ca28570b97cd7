"""Append-only, hash-chained audit log: one per database, written in the action's transaction,
chained afterwards by a background sealer, anchored outside the database by signed checkpoints.

    await AuditLog().append(conn, AuditEntry("user.role_changed", "user", user_id, details))
    sealed = await AuditSealer(engine, chain_key, checkpoints).seal_once()    # periodically
    result = await verify_audit(engine, chain_key, checkpoints); print(result.report())

Modules: `model` (pure: entries, canonical form, chain and checkpoint checks), `tables` (Core
tables, DDL from `sql/*.sql`), `store` (append, list), `sealer`, `checkpoints`, `verify`.

Writers never wait for each other. `audit_append()` (a SECURITY DEFINER function; the app role
has no INSERT privilege) inserts a row with the next `sequence`, the time and the inserting
top-level transaction id `xact_id = pg_current_xact_id()`. There is no lock and no hash on the
write path; the row is chained later.

Sealing. Sequences are allocated at insert, but transactions commit in another order: row 7
may become visible after row 9, or never (rollback: a gap). A sealing round therefore reads
H = pg_snapshot_xmin(pg_current_snapshot()), the oldest transaction still running, and seals
only unsealed rows with xact_id < H, in sequence order, each at the next dense `position` of
audit_seals with `row_hash = HMAC(chain_key, prev_hash || canonical(position, row))`. Why that
is sound:
- every transaction below H has finished, so each of its rows is either committed (and visible
  to the round) or rolled back (and never will be): the set of rows below H is final;
- a transaction that starts later gets an id >= H, so no row can ever join that set;
- hence a round that finishes (fewer rows than its batch) leaves every row below H sealed, and
  the next round of that sealer only has to look at xact_id >= H (the xact_id index keeps
  rounds cheap); rows of a transaction that commits late are sealed in a later round, at a
  later position — the chain order is the seal order, not the sequence order;
- a row is sealed at most once (audit_seals.sequence is UNIQUE), and positions are dense and
  linked, so the chain has no room for a row to be slipped in or left out unnoticed.
xact_id is the top-level id even inside savepoints, and xid8 does not wrap around. audit_seal()
itself refuses rows whose transaction may still run, assigns the position and refuses a
prev_hash that is not the current head. One sealer works at a time: a round starts with
pg_try_advisory_xact_lock and is skipped if another sealer holds it (audit_seal takes the same
lock, so even a stray caller is serialised); writers never take it.

What the database enforces: the app role reads both tables and writes only through
audit_append()/audit_seal(), which assign sequence, time, position and link themselves (a row
with a chosen sequence, which once blocked every later append, cannot be written); a trigger
refuses UPDATE/DELETE/TRUNCATE on both tables for everyone. The chain key is not in the
database, so a seal written by anyone else (audit_seal is callable by the app role) carries a
hash the verifier rejects; it does not block later seals, which simply chain on from it.

What the chain proves, and the checkpoint adds. Changing or deleting a sealed row, or a seal
in the middle, breaks the chain at that position. Deleting the newest rows with their seals
leaves a shorter valid chain, so after each round the sealer stores a signed checkpoint
(position, head hash, time; HMAC under a key derived from the chain key for that purpose only)
outside the database; the verifier requires the chain to reach it with the same hash, and the
sealer refuses to continue a chain that lost it (it would otherwise overwrite the evidence).
Known limits: rows not sealed yet can be deleted unnoticed (the window is one seal interval);
rows deleted after the latest checkpoint (the last round's seals, if the checkpoint write
failed) only show as a shorter chain; whoever holds the chain key can forge everything.
"""

from vaultpay_common.audit.checkpoints import (
    CheckpointConflictError,
    CheckpointInvalidError,
    CheckpointStore,
    CheckpointUnwritableError,
    FileCheckpointStore,
)
from vaultpay_common.audit.legacy import audit_table_ddl
from vaultpay_common.audit.model import (
    GENESIS_HASH,
    AuditEntry,
    AuditQuery,
    AuditRecord,
    AuditRow,
    AuditVerification,
    ChainBreak,
    Checkpoint,
    StaffViewer,
    compute_row_hash,
    staff_listing,
)
from vaultpay_common.audit.sealer import AuditChainBrokenError, AuditSealer
from vaultpay_common.audit.store import AuditLog, list_audit_events
from vaultpay_common.audit.tables import (
    audit_action_index_ddl,
    audit_action_index_drop_ddl,
    audit_ddl,
    audit_drop_ddl,
    audit_tables,
)
from vaultpay_common.audit.verify import verify_audit

__all__ = [
    "GENESIS_HASH",
    "AuditChainBrokenError",
    "AuditEntry",
    "AuditLog",
    "AuditQuery",
    "AuditRecord",
    "AuditRow",
    "AuditSealer",
    "AuditVerification",
    "ChainBreak",
    "Checkpoint",
    "CheckpointConflictError",
    "CheckpointInvalidError",
    "CheckpointStore",
    "CheckpointUnwritableError",
    "FileCheckpointStore",
    "StaffViewer",
    "audit_action_index_ddl",
    "audit_action_index_drop_ddl",
    "audit_ddl",
    "audit_drop_ddl",
    "audit_table_ddl",
    "audit_tables",
    "compute_row_hash",
    "list_audit_events",
    "staff_listing",
    "verify_audit",
]
