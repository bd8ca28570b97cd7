-- Gives __TO_ROLE__ every privilege __FROM_ROLE__ holds on the tables named in __TABLES__
-- (their columns included) and on the functions named in __FUNCTIONS__ (every overload), then
-- revokes them from __FROM_ROLE__. Filled in by vaultpay_common.migrations.move_privileges_ddl.
DO $$
DECLARE
    from_role constant regrole := __FROM_ROLE__;
    to_role constant text := __TO_ROLE__;
    moved_tables constant text[] := __TABLES__;
    moved_functions constant text[] := __FUNCTIONS__;
    statement text;
BEGIN
    FOR statement IN
        SELECT m.sql FROM (
            SELECT 1, format('GRANT %s ON TABLE %I TO %I', a.privilege_type, c.relname, to_role)
            FROM pg_class AS c, aclexplode(c.relacl) AS a
            WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY (moved_tables)
              AND a.grantee = from_role
            UNION ALL
            SELECT 1, format('GRANT %s (%I) ON TABLE %I TO %I',
                             a.privilege_type, t.attname, c.relname, to_role)
            FROM pg_attribute AS t JOIN pg_class AS c ON c.oid = t.attrelid,
                 aclexplode(t.attacl) AS a
            WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY (moved_tables)
              AND a.grantee = from_role
            UNION ALL
            SELECT 1, format('GRANT EXECUTE ON FUNCTION %s TO %I', p.oid::regprocedure, to_role)
            FROM pg_proc AS p, aclexplode(p.proacl) AS a
            WHERE p.pronamespace = 'public'::regnamespace AND p.proname = ANY (moved_functions)
              AND a.grantee = from_role AND a.privilege_type = 'EXECUTE'
            UNION ALL
            -- Revoking a table's privileges revokes its columns' too.
            SELECT 2, format('REVOKE ALL ON TABLE %I FROM %I', c.relname, from_role)
            FROM pg_class AS c
            WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY (moved_tables)
            UNION ALL
            SELECT 2, format('REVOKE ALL ON FUNCTION %s FROM %I', p.oid::regprocedure, from_role)
            FROM pg_proc AS p
            WHERE p.pronamespace = 'public'::regnamespace AND p.proname = ANY (moved_functions)
        ) AS m(step, sql)
        ORDER BY m.step  -- every grant before the first revoke
    LOOP
        EXECUTE statement;
    END LOOP;
END
$$;
