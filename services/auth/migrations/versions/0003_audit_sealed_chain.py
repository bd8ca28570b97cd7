"""The audit log becomes a sealed chain: writers append without a lock, a sealer chains later.

The old table's rows are kept (same sequence, time and content) and become unsealed rows, which
the sealer chains in sequence order; their old prev_hash/row_hash columns go. The app role
loses INSERT: it writes through audit_append()/audit_seal() only (vaultpay_common.audit).

Both directions copy `audit_events` and then drop it. The copy reads a snapshot: a row appended
and committed after it, before the drop, went with the old table, lost without a word (a later
review). So `audit_events` is locked first, IN EXCLUSIVE MODE: appends (and the sealer's seals)
wait for the revision to commit instead of landing in the table being dropped; reads go on. The
copy's snapshot is taken after the lock is granted, so it holds every row committed before. The
lock is waited for within the migration's lock_timeout (`run_env`), and held to the commit (the
copy's length grows with the log).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_common.audit import audit_ddl, audit_drop_ddl, audit_table_ddl

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    app_role = context.config.attributes["app_role"]
    # Appends wait from here to the commit: none lands in the old table after the copy.
    op.execute("LOCK TABLE audit_events IN EXCLUSIVE MODE")
    op.execute(
        "CREATE TABLE audit_events_before_0003 AS SELECT sequence, created_at, actor_id, "
        "actor_role, action, target_type, target_id, request_id, details FROM audit_events"
    )
    op.execute("DROP TABLE audit_events")
    op.execute("DROP FUNCTION audit_events_refuse_change()")
    for statement in audit_ddl(app_role):
        op.execute(statement)
    # The rows this migration moves count as inserted by its own (finished, once committed)
    # transaction: the sealer seals them in its first round after the upgrade.
    op.execute(
        "INSERT INTO audit_events (sequence, created_at, actor_id, actor_role, action, "
        "target_type, target_id, request_id, details, xact_id) "
        "SELECT sequence, created_at, actor_id, actor_role, action, target_type, target_id, "
        "request_id, details, pg_current_xact_id() FROM audit_events_before_0003 "
        "ORDER BY sequence"
    )
    op.execute(
        "SELECT setval('audit_events_sequence_seq', "
        "coalesce((SELECT max(sequence) FROM audit_events), 0) + 1, false)"
    )
    op.execute("DROP TABLE audit_events_before_0003")


def downgrade() -> None:
    """Back to one table without hashes: the old chain cannot be rebuilt without the key, so
    the restored rows carry empty hashes (the old verifier reports them as broken)."""
    app_role = context.config.attributes["app_role"]
    # As the upgrade: appends and seals wait from here to the commit.
    op.execute("LOCK TABLE audit_events IN EXCLUSIVE MODE")
    op.execute(
        "CREATE TABLE audit_events_after_0003 AS SELECT sequence, created_at, actor_id, "
        "actor_role, action, target_type, target_id, request_id, details FROM audit_events"
    )
    for statement in audit_drop_ddl():
        op.execute(statement)
    op.execute("ALTER TABLE audit_events_after_0003 RENAME TO audit_events")
    op.execute("ALTER TABLE audit_events ADD COLUMN prev_hash varchar(64) NOT NULL DEFAULT ''")
    op.execute("ALTER TABLE audit_events ADD COLUMN row_hash varchar(64) NOT NULL DEFAULT ''")
    op.execute("ALTER TABLE audit_events ALTER COLUMN prev_hash DROP DEFAULT")
    op.execute("ALTER TABLE audit_events ALTER COLUMN row_hash DROP DEFAULT")
    op.execute("ALTER TABLE audit_events ADD PRIMARY KEY (sequence)")
    for column in (
        "created_at",
        "actor_id",
        "actor_role",
        "action",
        "target_type",
        "target_id",
        "request_id",
        "details",
    ):
        op.execute(f"ALTER TABLE audit_events ALTER COLUMN {column} SET NOT NULL")
    for statement in audit_table_ddl(app_role):
        op.execute(statement)
