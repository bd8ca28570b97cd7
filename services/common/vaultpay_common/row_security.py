"""Row-level security on a shared table, switched on only once every service has its policy.

The shared platform tables (`outbox_events`, `idempotency_records`) give each service's role
only its own rows through one policy per service, each created by that service's own chain.
But each service migrates only its own chains (kyc runs platform + kyc, wallet platform +
wallet, transfer platform + wallet + transfer), in whatever order a deployment runs them, and
with row-level security on, a role without a policy is denied every row: had the first chain
to run switched it on, the services not yet migrated (or a single role serving them all)
would have been refused their own writes, a PIN check or a KYC submission among them, until
their chain ran (review of 2026-12-03). So every chain that adds or drops a policy ends with
`row_security_follows_policies`: on exactly while all of the services' policies exist, off
otherwise, the state before any policy, which the previous release runs under.

`ServicePolicies` writes one table's policies: a service's role sees and writes the rows
whose `column` names that service (`<prefix>_<service>`), and the switch follows. A policy is
created `TO` the role its chain grants to when it runs; `migrate` with chain roles points it at
the service's role again at every run where it names another (`retarget_ddl`, from
`vaultpay_common.chain_isolation`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ISOLATED_SERVICES", "ServicePolicies", "row_security_follows_policies"]

# The services of the shared database, each with a policy of its own on each shared table.
ISOLATED_SERVICES = ("wallet", "transfer", "kyc")
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")


def row_security_follows_policies(table: str, policies: Sequence[str]) -> str:
    """A DO block: row-level security on `table` while every one of `policies` exists on it,
    off while any is missing."""
    for name in (table, *policies):
        if not _NAME.match(name):
            raise ValueError(f"not a plain name: {name!r}")
    names = ", ".join(f"'{policy}'" for policy in policies)
    return f"""DO $$
BEGIN
    IF (SELECT count(*) FROM pg_policies
        WHERE schemaname = current_schema() AND tablename = '{table}'
          AND policyname IN ({names})) = {len(set(policies))} THEN
        ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
    ELSE
        ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;
    END IF;
END
$$"""  # noqa: S608 (plain names, checked above)


@dataclass(frozen=True, slots=True)
class ServicePolicies:
    """The per-service policies of one shared table: policy `<prefix>_<service>` lets
    `app_role` see, write and delete only the rows whose `column` is `service` (what the
    table's grants allow of it). Policies add up: where one role serves several services, it
    gets each one's rows. The table's owner is not bound (no FORCE)."""

    table: str
    prefix: str
    column: str

    def add_ddl(self, service: str, app_role: str) -> list[str]:
        policy = self._policy(service)
        if not _NAME.match(app_role):
            raise ValueError(f"not a plain name: {app_role!r}")
        return [
            f'DROP POLICY IF EXISTS "{policy}" ON {self.table}',
            f'CREATE POLICY "{policy}" ON {self.table} TO "{app_role}"'
            f" USING ({self.column} = '{service}') WITH CHECK ({self.column} = '{service}')",
            self._switch(),
        ]

    def drop_ddl(self, service: str) -> list[str]:
        return [f'DROP POLICY IF EXISTS "{self._policy(service)}" ON {self.table}', self._switch()]

    def policy(self, service: str) -> str:
        """The name of `service`'s policy on the table (`<prefix>_<service>`)."""
        return self._policy(service)

    def retarget_ddl(self, service: str, app_role: str) -> list[str]:
        """Points `service`'s existing policy at `app_role` alone, its rows unchanged (a
        database whose policies were created for the group role, then given roles of its own:
        `vaultpay_common.chain_isolation`), and the switch follows, as after `add_ddl`."""
        policy = self._policy(service)
        if not _NAME.match(app_role):
            raise ValueError(f"not a plain name: {app_role!r}")
        return [f'ALTER POLICY "{policy}" ON {self.table} TO "{app_role}"', self._switch()]

    def _policy(self, service: str) -> str:
        for name in (self.table, self.prefix, self.column, service):
            if not _NAME.match(name):
                raise ValueError(f"not a plain name: {name!r}")
        return f"{self.prefix}_{service}"

    def _switch(self) -> str:
        policies = [f"{self.prefix}_{service}" for service in ISOLATED_SERVICES]
        return row_security_follows_policies(self.table, policies)
