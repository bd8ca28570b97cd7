"""The first audit design's DDL, frozen: auth's migration 0001 still runs it on a new database
(0003 then converts that table to the sealed chain). Nothing else should use it.
"""

from __future__ import annotations

__all__ = ["audit_table_ddl"]


def audit_table_ddl(app_role: str) -> list[str]:
    """Statements (run by migration 0001 as the table owner) for the old audit_events table."""
    return [
        """
        CREATE OR REPLACE FUNCTION audit_events_refuse_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$
        """,
        """
        CREATE TRIGGER audit_events_no_update_delete
            BEFORE UPDATE OR DELETE ON audit_events
            FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change()
        """,
        """
        CREATE TRIGGER audit_events_no_truncate
            BEFORE TRUNCATE ON audit_events
            FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change()
        """,
        "CREATE INDEX audit_events_actor_idx ON audit_events (actor_id, sequence)",
        "CREATE INDEX audit_events_target_idx ON audit_events (target_id, sequence)",
        "CREATE INDEX audit_events_created_idx ON audit_events (created_at)",
        f'REVOKE ALL ON audit_events FROM "{app_role}"',
        f'GRANT SELECT, INSERT ON audit_events TO "{app_role}"',
    ]
