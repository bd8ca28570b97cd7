"""Migration lint: no revision blocks a table the services use for longer than a catalogue change.

Every revision of every chain (the platform's, auth's, wallet's, transfer's, kyc's) is run
offline, upgrade and downgrade alike: Alembic's `as_sql` mode writes each statement it would
send, whatever wrote it (`op.execute` of a `sql/*.sql` file, `op.create_index`, `op.add_column`
with a foreign key, ...), instead of sending it. No database is needed. The statements are then
matched against three rules, by regular expressions over their text (comments removed; no SQL
parser, so the rules are kept to what a regex says plainly):

* CREATE [UNIQUE] INDEX on an existing table without CONCURRENTLY: the build holds SHARE on the
  table, every write waiting, for as long as it reads the table;
* DROP INDEX without CONCURRENTLY: ACCESS EXCLUSIVE on the index's table, and the request
  queues every read and write behind the transactions before it;
* on an existing table, ALTER TABLE ... ADD [CONSTRAINT name] CHECK | FOREIGN KEY without NOT
  VALID (the check scans the table under the ALTER's lock), ADD [CONSTRAINT name] UNIQUE |
  PRIMARY KEY | EXCLUDE without USING INDEX (an index built under that lock), and ADD COLUMN
  with REFERENCES or CHECK (the same scan).

"Existing" means not created by the same revision and direction (CREATE TABLE, or renamed from
such a table): a table made a statement earlier holds no row and no other session sees it. The
safe forms are the CONCURRENTLY index in `vaultpay_common.migrations.concurrently()` (w0009,
t0015) and the NOT VALID constraint validated there (w0011, t0026, auth 0010).

A fourth rule reads the revisions' source: none calls Alembic's `autocommit_block()` itself.
`concurrently()` is that block with the migration's lock_timeout lifted; in a bare one a
CONCURRENTLY build would give up behind any transaction older than LOCK_WAIT_LIMIT.

Revisions released before the rules are listed in RELEASED, each with why it stays: they never
run again where they ran, and the test fails when an entry no longer breaks a rule (so the
list only shrinks). A new revision is not added there: it follows the rules.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.environment import EnvironmentContext
from alembic.script import Script, ScriptDirectory

from vaultpay_auth.entrypoints.cli import AUTH_CHAIN
from vaultpay_common.migrations import PLATFORM_CHAIN, MigrationChain
from vaultpay_kyc.entrypoints.cli import KYC_CHAIN
from vaultpay_transfer.entrypoints.cli import TRANSFER_CHAIN
from vaultpay_wallet.entrypoints.cli import WALLET_CHAIN

CHAINS = (PLATFORM_CHAIN, AUTH_CHAIN, WALLET_CHAIN, TRANSFER_CHAIN, KYC_CHAIN)
Direction = Literal["upgrade", "downgrade"]

# Released revisions that break a rule, "chain:revision:direction": why each stays as it is.
# Nothing is added here for a new revision.
RELEASED = {
    # The table is rewritten under ACCESS EXCLUSIVE anyway (a stored generated column, its
    # docstring says so: "a day of records"); the index swap inside that lock adds little.
    "platform:p0003:upgrade": "CREATE INDEX and DROP INDEX on idempotency_records",
    "platform:p0003:downgrade": "CREATE INDEX and DROP INDEX on idempotency_records",
}


@dataclass(frozen=True)
class Unit:
    """One revision's upgrade or downgrade: the statements it sends, in order."""

    chain: str
    revision: str
    direction: Direction
    statements: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.chain}:{self.revision}:{self.direction}"


class _Statements(io.StringIO):
    """Alembic's output buffer in `as_sql` mode: one write per statement."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[str] = []

    def write(self, text: str) -> int:
        self.written.append(text)
        return len(text)


def _scripts(chain: MigrationChain) -> tuple[Config, ScriptDirectory]:
    config = Config()
    config.set_main_option("script_location", str(chain.script_location))
    # What `migrate_chain` gives a run; the names only appear in GRANTs.
    config.attributes.update(
        app_role="app_role",
        shared_role="shared_role",
        version_table=chain.version_table,
        drop_data=False,
    )
    return config, ScriptDirectory.from_config(config)


def _render(
    config: Config, scripts: ScriptDirectory, script: Script, direction: Direction
) -> list[str]:
    buffer = _Statements()
    with EnvironmentContext(config, scripts) as env:
        env.configure(dialect_name="postgresql", as_sql=True, output_buffer=buffer)
        with Operations.context(env.get_context()):
            getattr(script.module, direction)()
    return [s.strip().removesuffix(";").strip() for s in buffer.written if s.strip()]


def _units() -> Iterator[Unit]:
    for chain in CHAINS:
        config, scripts = _scripts(chain)
        for script in reversed(list(scripts.walk_revisions())):
            for direction in ("upgrade", "downgrade"):
                statements = _render(config, scripts, script, direction)
                yield Unit(chain.name, script.revision, direction, tuple(statements))


UNITS = list(_units())

_COMMENT = re.compile(r"--[^\n]*")
_NAME = r'"?(\w+)"?'
_CREATED = re.compile(rf"\bCREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_NAME}", re.I)
_RENAMED = re.compile(
    rf"\bALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?{_NAME}\s+RENAME\s+TO\s+{_NAME}", re.I
)
_CREATE_INDEX = re.compile(
    r"\bCREATE\s+(?:UNIQUE\s+)?INDEX\s+(?!CONCURRENTLY\b)(?:IF\s+NOT\s+EXISTS\s+)?"
    rf"{_NAME}\s+ON\s+(?:ONLY\s+)?{_NAME}",
    re.I,
)
_ANY_INDEX = re.compile(
    r"\bCREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
    rf"{_NAME}\s+ON\s+(?:ONLY\s+)?{_NAME}",
    re.I,
)
_DROP_INDEX = re.compile(rf"\bDROP\s+INDEX\s+(?!CONCURRENTLY\b)(?:IF\s+EXISTS\s+)?{_NAME}", re.I)
_ALTER_TABLE = re.compile(rf"^ALTER\s+TABLE\s+(?:ONLY\s+)?(?:IF\s+EXISTS\s+)?{_NAME}\s", re.I)
# One ADD clause of an ALTER TABLE: up to the next top-level ", ADD|DROP|ALTER|..." or the end.
_ADD_CLAUSE = re.compile(
    r"\bADD\s+(.*?)(?=,\s*(?:ADD|DROP|ALTER|VALIDATE|RENAME|SET|OWNER)\b|\Z)", re.I | re.S
)
_CHECKED = re.compile(r"^(?:CONSTRAINT\s+\S+\s+)?(?:CHECK|FOREIGN\s+KEY)\b", re.I)
_INDEXED = re.compile(r"^(?:CONSTRAINT\s+\S+\s+)?(?:UNIQUE|PRIMARY\s+KEY|EXCLUDE)\b", re.I)
_COLUMN_CHECKED = re.compile(r"^COLUMN\b.*\b(?:REFERENCES|CHECK)\b", re.I | re.S)


def _plain(statement: str) -> str:
    return " ".join(_COMMENT.sub("", statement).split())


def _index_tables() -> dict[str, str]:
    """Each index name any revision creates, with its table (what a DROP INDEX drops)."""
    found: dict[str, str] = {}
    for unit in UNITS:
        for statement in unit.statements:
            for index, table in _ANY_INDEX.findall(_plain(statement)):
                found.setdefault(index.lower(), table.lower())
    return found


INDEX_TABLES = _index_tables()


def violations(unit: Unit) -> list[str]:
    """What `unit` does to an existing table that blocks its users for longer than an instant."""
    new: set[str] = set()
    found: list[str] = []
    for raw in unit.statements:
        statement = _plain(raw)
        new.update(name.lower() for name in _CREATED.findall(statement))
        for old, renamed in _RENAMED.findall(statement):
            if old.lower() in new:
                new.add(renamed.lower())
        for index, table in _CREATE_INDEX.findall(statement):
            if table.lower() not in new:
                found.append(f"CREATE INDEX {index} ON {table} without CONCURRENTLY")
        for index in _DROP_INDEX.findall(statement):
            if INDEX_TABLES.get(index.lower()) not in new:
                found.append(f"DROP INDEX {index} without CONCURRENTLY")
        altered = _ALTER_TABLE.match(statement)
        if altered is None or altered.group(1).lower() in new:
            continue
        for clause in _ADD_CLAUSE.findall(statement[altered.end() :]):
            if _CHECKED.match(clause) and not re.search(r"\bNOT\s+VALID\b", clause, re.I):
                found.append(f"ALTER TABLE {altered.group(1)} ADD {clause} without NOT VALID")
            elif _INDEXED.match(clause) and not re.search(r"\bUSING\s+INDEX\b", clause, re.I):
                found.append(f"ALTER TABLE {altered.group(1)} ADD {clause} without USING INDEX")
            elif _COLUMN_CHECKED.match(clause):
                found.append(f"ALTER TABLE {altered.group(1)} ADD {clause}: a checked column")
    return found


def test_every_revision_of_every_chain_was_read() -> None:
    counts = {chain.name: 0 for chain in CHAINS}
    for unit in UNITS:
        counts[unit.chain] += 1
    assert all(count >= 2 for count in counts.values()), counts
    # The SQL files the revisions run are in what they send (t0015's, from transfer's sql/).
    [t0015] = [u for u in UNITS if u.key == "transfer:t0015:upgrade"]
    assert any("wallet_transactions_rare_status_idx" in s for s in t0015.statements)


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.key)
def test_no_revision_blocks_an_existing_table_for_a_scan_or_a_build(unit: Unit) -> None:
    if unit.key in RELEASED:
        assert violations(unit), f"{unit.key} breaks no rule now: remove it from RELEASED"
        return
    assert violations(unit) == []


def test_no_revision_opens_a_bare_autocommit_block() -> None:
    bare = [
        f"{chain.name}:{script.revision}"
        for chain in CHAINS
        for script in _scripts(chain)[1].walk_revisions()
        if "autocommit_block(" in Path(script.path).read_text(encoding="utf-8")
    ]
    assert bare == []


def _unit(*statements: str) -> Unit:
    return Unit("test", "x0001", "upgrade", statements)


def test_the_rules_flag_what_they_say_and_pass_the_safe_forms() -> None:
    assert violations(_unit("CREATE INDEX users_a_idx ON users (a)")) != []
    assert violations(_unit("CREATE UNIQUE INDEX users_b_key ON users (b) WHERE c")) != []
    assert violations(_unit("DROP INDEX IF EXISTS users_a_idx")) != []
    assert (
        violations(_unit("ALTER TABLE users ADD CONSTRAINT f FOREIGN KEY (d) REFERENCES users"))
        != []
    )
    assert violations(_unit("ALTER TABLE users ADD CHECK (a > 0)")) != []
    assert violations(_unit("ALTER TABLE users ADD CONSTRAINT u UNIQUE (a)")) != []
    assert violations(_unit("ALTER TABLE users ADD PRIMARY KEY (a)")) != []
    assert violations(_unit("ALTER TABLE users ADD COLUMN d uuid REFERENCES users (id)")) != []
    # One clause of several, and its own NOT VALID only.
    assert violations(
        _unit(
            "ALTER TABLE t ADD CONSTRAINT a CHECK (x > 0) NOT VALID, ADD CONSTRAINT b CHECK (y > 0)"
        )
    ) == ["ALTER TABLE t ADD CONSTRAINT b CHECK (y > 0) without NOT VALID"]

    assert violations(_unit("CREATE INDEX CONCURRENTLY users_a_idx ON users (a)")) == []
    assert violations(_unit("DROP INDEX CONCURRENTLY IF EXISTS users_a_idx")) == []
    assert (
        violations(
            _unit("ALTER TABLE users ADD CONSTRAINT f FOREIGN KEY (d) REFERENCES users NOT VALID")
        )
        == []
    )
    assert violations(_unit("ALTER TABLE users ADD CONSTRAINT u UNIQUE USING INDEX u_idx")) == []
    assert violations(_unit("ALTER TABLE users ADD COLUMN d timestamptz")) == []
    assert violations(_unit("ALTER TABLE users VALIDATE CONSTRAINT f")) == []
    assert violations(_unit("-- CREATE INDEX users_a_idx ON users (a)\nSELECT 1")) == []
    # A table the same revision creates (or made and renamed) is nobody else's yet.
    assert (
        violations(_unit("CREATE TABLE fresh (a int)", "CREATE INDEX fresh_a ON fresh (a)")) == []
    )
    assert (
        violations(
            _unit(
                "CREATE TABLE copy AS SELECT a FROM old",
                "ALTER TABLE copy RENAME TO kept",
                "ALTER TABLE kept ADD CONSTRAINT k CHECK (a > 0)",
            )
        )
        == []
    )
