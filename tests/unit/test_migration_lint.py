"""Migration lint: no revision blocks a table the services use for longer than a catalogue change.

Every revision of every chain (the platform's, auth's, wallet's, transfer's, kyc's) is run
offline, upgrade and downgrade alike: Alembic's `as_sql` mode writes each statement it would
send, whatever wrote it (`op.execute` of a `sql/*.sql` file, `op.create_index`, `op.add_column`
with a foreign key, ...), instead of sending it. No database is needed. A unit's statements are
cut into segments at the edges of `concurrently()`'s block, which the offline output marks
(COMMIT, SET lock_timeout = 0, ..., SET lock_timeout = LOCK_WAIT_LIMIT, BEGIN): the revision's
transaction before and after it, the block (each statement committed on its own) between. The
statements are then matched against these rules, by regular expressions over their text
(comments removed; names bare, "quoted" or schema-qualified; no SQL parser, so the rules are
kept to what a regex says plainly):

* CREATE [UNIQUE] INDEX, named or not, on an existing table without CONCURRENTLY: the build
  holds SHARE on the table, every write waiting, for as long as it reads the table;
* DROP INDEX without CONCURRENTLY: ACCESS EXCLUSIVE on the index's table, and the request
  queues every read and write behind the transactions before it;
* REINDEX without CONCURRENTLY, VACUUM FULL and CLUSTER of an existing table (or of every
  table): the table or its indexes rebuilt under a lock that stops its writers or every use;
* on an existing table, ALTER TABLE ... ADD [CONSTRAINT name] CHECK | FOREIGN KEY without NOT
  VALID (the check scans the table under the ALTER's lock), ADD [CONSTRAINT name] UNIQUE |
  PRIMARY KEY | EXCLUDE without USING INDEX (an index built under that lock), ADD [COLUMN] with
  REFERENCES or CHECK (the same scan), UNIQUE or PRIMARY KEY (the same build), GENERATED ...
  STORED or AS IDENTITY, a serial type or a volatile DEFAULT (the table rewritten), ALTER
  [COLUMN] ... TYPE (rewritten, or read, and its indexes rebuilt) and ALTER [COLUMN] ... SET
  NOT NULL (every row read under ACCESS EXCLUSIVE) unless a CHECK (column IS NOT NULL) was
  validated before it;
* VALIDATE CONSTRAINT in the transaction that added the constraint or took a lock on its table
  stronger than VALIDATE's own (another ALTER TABLE of it, LOCK TABLE, CREATE TRIGGER): the scan
  runs under that lock (auth 0010 as first written);
* in `concurrently()`'s block, nothing but CREATE [UNIQUE] INDEX CONCURRENTLY, DROP INDEX
  CONCURRENTLY, REINDEX ... CONCURRENTLY, ALTER TABLE ... VALIDATE CONSTRAINT and its SET
  lock_timeout edges: anything else would run there with lock waits unbounded, outside the
  revision's transaction; and no SET lock_timeout to 0 in the revision's transaction.

"Existing" means not created by the same revision and direction (CREATE TABLE, or renamed from
such a table): a table made a statement earlier holds no row and no other session sees it. The
safe forms are the CONCURRENTLY index in `vaultpay_common.migrations.concurrently()` (w0009,
t0015) and the NOT VALID constraint validated there (w0011, t0026, auth 0010).

A last rule reads the revisions' source: none calls Alembic's `autocommit_block()` itself.
`concurrently()` is that block with the migration's lock_timeout lifted; in a bare one a
CONCURRENTLY build would give up behind any transaction older than LOCK_WAIT_LIMIT.

Revisions released before a rule are listed in RELEASED with what they break, each with why it
stays: they never run again where they ran, and the test fails when a listed breach is no
longer found (so the list only shrinks) as when an unlisted one is. A new revision is not added
there: it follows the rules. The rules themselves are tested on hand-made statements, each
flagged and its safe form passed, so that none is lost unnoticed.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
from alembic import op
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.environment import EnvironmentContext
from alembic.script import Script, ScriptDirectory

from vaultpay_auth.entrypoints.cli import AUTH_CHAIN
from vaultpay_common.migrations import PLATFORM_CHAIN, MigrationChain, concurrently
from vaultpay_kyc.entrypoints.cli import KYC_CHAIN
from vaultpay_transfer.entrypoints.cli import TRANSFER_CHAIN
from vaultpay_wallet.entrypoints.cli import WALLET_CHAIN

CHAINS = (PLATFORM_CHAIN, AUTH_CHAIN, WALLET_CHAIN, TRANSFER_CHAIN, KYC_CHAIN)
Direction = Literal["upgrade", "downgrade"]

# Released revisions that break a rule, "chain:revision:direction": each breach the lint finds
# in it, and why it stays as it is. Nothing is added here for a new revision.
RELEASED: dict[str, dict[str, str]] = {
    # The table is rewritten under ACCESS EXCLUSIVE anyway (a stored generated column, its
    # docstring says so: "a day of records"); the index swap inside that lock adds little.
    "platform:p0003:upgrade": {
        "ALTER TABLE idempotency_records ADD COLUMN service: a generated column (the table"
        " rewritten under the ALTER's lock)": "the rewrite is the revision: each record's service",
        "CREATE INDEX idempotency_records_service_created_idx ON idempotency_records without"
        " CONCURRENTLY": "built under the rewrite's lock, held anyway",
        "DROP INDEX idempotency_records_created_idx without CONCURRENTLY": "the same lock",
    },
    "platform:p0003:downgrade": {
        "CREATE INDEX idempotency_records_created_idx ON idempotency_records without"
        " CONCURRENTLY": "undoes p0003 (a day of records), in the lock of its DROP COLUMN",
        "DROP INDEX idempotency_records_service_created_idx without CONCURRENTLY": "the same",
    },
    # op.alter_column(..., nullable=False) after the ADD COLUMN and the UPDATE that fills it, in
    # one transaction: the ADD's ACCESS EXCLUSIVE is held already, and signing_keys holds a row
    # per key rotation (a handful), so the scan adds nothing anyone waits for.
    "auth:0002:upgrade": {
        "ALTER TABLE signing_keys ALTER COLUMN not_before SET NOT NULL: every row read under"
        " ACCESS EXCLUSIVE (no validated CHECK (not_before IS NOT NULL) before it)": "a few"
        " rows, under the ADD COLUMN's lock already held",
    },
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
    return _render_body(config, scripts, getattr(script.module, direction))


def _render_body(config: Config, scripts: ScriptDirectory, body: Callable[[], None]) -> list[str]:
    buffer = _Statements()
    with EnvironmentContext(config, scripts) as env:
        env.configure(dialect_name="postgresql", as_sql=True, output_buffer=buffer)
        with Operations.context(env.get_context()):
            body()
    return [s.strip().removesuffix(";").strip() for s in buffer.written if s.strip()]


def _units() -> Iterator[Unit]:
    for chain in CHAINS:
        config, scripts = _scripts(chain)
        for script in reversed(list(scripts.walk_revisions())):
            for direction in ("upgrade", "downgrade"):
                statements = _render(config, scripts, script, direction)
                yield Unit(chain.name, script.revision, direction, tuple(statements))


UNITS = list(_units())

_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
# A name as a statement writes it: bare or "quoted", schema-qualified or not (`_key`).
_IDENT = r'(?:"[^"]+"|\w+)'
_QNAME = rf"{_IDENT}(?:\s*\.\s*{_IDENT})*"
_TABLE = rf"(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<table>{_QNAME})\s*\*?"
_CREATED = re.compile(
    rf"\bCREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<table>{_QNAME})", re.I
)
_RENAMED = re.compile(rf"^ALTER\s+TABLE\s+{_TABLE}\s+RENAME\s+TO\s+(?P<new>{_IDENT})$", re.I)
# Named or not ("CREATE INDEX ON t (a)": PostgreSQL names it).
_INDEX = re.compile(
    r"\bCREATE\s+(?:UNIQUE\s+)?INDEX\s+(?P<concurrently>CONCURRENTLY\s+)?"
    rf"(?:IF\s+NOT\s+EXISTS\s+)?(?:(?P<index>{_QNAME})\s+)?ON\s+(?:ONLY\s+)?(?P<table>{_QNAME})",
    re.I,
)
_DROP_INDEX = re.compile(
    r"\bDROP\s+INDEX\s+(?P<concurrently>CONCURRENTLY\s+)?(?:IF\s+EXISTS\s+)?"
    rf"(?P<indexes>{_QNAME}(?:\s*,\s*{_QNAME})*)",
    re.I,
)
_REINDEX = re.compile(
    r"^REINDEX\s+(?:\((?P<options>[^)]*)\)\s*)?(?P<kind>INDEX|TABLE|SCHEMA|DATABASE|SYSTEM)\b"
    rf"\s*(?P<concurrently>CONCURRENTLY\b)?\s*(?P<name>{_QNAME})?",
    re.I,
)
_VACUUM = re.compile(
    r"^VACUUM\b\s*(?:\((?P<options>[^)]*)\)|(?P<full>FULL\b))?"
    r"(?:\s*\b(?:FULL|FREEZE|VERBOSE|ANALYZE|ANALYSE)\b)*\s*(?P<tables>.*)$",
    re.I | re.S,
)
_CLUSTER = re.compile(
    rf"^CLUSTER\b(?:\s*\([^)]*\))?(?:\s+VERBOSE\b)?(?:\s+(?P<table>{_QNAME}))?", re.I
)
_FULL_OPTION = re.compile(r"\bFULL\b(?!\s+(?:FALSE|OFF|0)\b)", re.I)
_CONCURRENTLY_OPTION = re.compile(r"\bCONCURRENTLY\b(?!\s+(?:FALSE|OFF|0)\b)", re.I)
_LOCK = re.compile(
    r"^LOCK\s+(?:TABLE\s+)?(?P<tables>.+?)(?:\s+IN\s+(?P<mode>[A-Z ]+?)\s+MODE)?(?:\s+NOWAIT)?$",
    re.I | re.S,
)
_WEAK_LOCKS = {"ACCESS SHARE", "ROW SHARE", "ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE"}
_TRIGGER = re.compile(
    rf"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:CONSTRAINT\s+)?TRIGGER\s+{_IDENT}\s.*?\bON\s+"
    rf"(?:ONLY\s+)?(?P<table>{_QNAME})",
    re.I | re.S,
)
_UNBOUNDED_LOCK_WAITS = re.compile(
    r"^SET\s+(?:SESSION\s+|LOCAL\s+)?lock_timeout\s*(?:=|TO)\s*'?0(?:ms|s|min)?'?$", re.I
)
_ALTER_TABLE = re.compile(rf"^ALTER\s+TABLE\s+{_TABLE}\s+(?P<actions>.+)$", re.I | re.S)
# Clauses of an ALTER TABLE (cut at its top-level commas).
_ADD = re.compile(r"^ADD\s+(?P<body>.+)$", re.I | re.S)
_CONSTRAINT = re.compile(
    rf"^(?:CONSTRAINT\s+(?P<name>{_IDENT})\s+)?"
    r"(?P<kind>CHECK|FOREIGN\s+KEY|UNIQUE|PRIMARY\s+KEY|EXCLUDE)\b",
    re.I,
)
_CHECKED = re.compile(r"^(?:CHECK|FOREIGN\s+KEY)$", re.I)
_NOT_NULL_CHECK = re.compile(
    rf"\bCHECK\s*\(\s*\(?\s*(?P<column>{_IDENT})\s+IS\s+NOT\s+NULL\s*\)?\s*\)", re.I
)
_COLUMN = re.compile(
    rf"^(?:COLUMN\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(?P<column>{_IDENT})\s*(?P<definition>.*)$",
    re.I | re.S,
)
# What an added column's definition costs: (pattern, why), the first that matches.
_COLUMN_COSTS = (
    (
        re.compile(r"\b(?:REFERENCES|CHECK)\b", re.I),
        "a checked column (every row checked under the ALTER's lock)",
    ),
    (
        re.compile(r"\b(?:UNIQUE|PRIMARY\s+KEY)\b", re.I),
        "an indexed column (its index built under the ALTER's lock)",
    ),
    (
        re.compile(
            r"\bGENERATED\b.*\bSTORED\b|\bGENERATED\s+(?:ALWAYS|BY\s+DEFAULT)\s+AS\s+IDENTITY\b",
            re.I | re.S,
        ),
        "a generated column (the table rewritten under the ALTER's lock)",
    ),
    (
        re.compile(
            r"^(?:small|big)?serial[248]?\b|\bDEFAULT\b.*\b(?:gen_random_uuid|uuid_generate_v[14]"
            r"|random|clock_timestamp|timeofday|nextval)\s*\(",
            re.I | re.S,
        ),
        "a volatile default (the table rewritten under the ALTER's lock)",
    ),
)
_ALTER_COLUMN = re.compile(
    rf"^ALTER\s+(?:COLUMN\s+)?(?P<column>{_IDENT})\s+(?P<change>.+)$", re.I | re.S
)
_SET_NOT_NULL = re.compile(r"^SET\s+NOT\s+NULL$", re.I)
_NEW_TYPE = re.compile(r"^(?:SET\s+DATA\s+)?TYPE\b", re.I)
_VALIDATE = re.compile(rf"^VALIDATE\s+CONSTRAINT\s+(?P<name>{_IDENT})$", re.I)
# What concurrently()'s block may run: each statement commits on its own there, so anything
# else would hold its locks without the revision's transaction (and its lock_timeout is 0).
_IN_BLOCK = (
    re.compile(r"^SET\s+(?:SESSION\s+)?lock_timeout\s*(?:=|TO)\s*\S+$", re.I),
    re.compile(r"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\b", re.I),
    re.compile(r"^DROP\s+INDEX\s+CONCURRENTLY\b", re.I),
    re.compile(
        rf"^ALTER\s+TABLE\s+{_TABLE}\s+VALIDATE\s+CONSTRAINT\s+{_IDENT}"
        rf"(?:\s*,\s*VALIDATE\s+CONSTRAINT\s+{_IDENT})*$",
        re.I,
    ),
)
_BLOCK_EDGE = re.compile(r"^(?P<edge>COMMIT|BEGIN)(?:\s+(?:TRANSACTION|WORK))?$", re.I)
_DOLLAR_QUOTE = re.compile(r"\$\w*\$")


def _plain(statement: str) -> str:
    return " ".join(_COMMENT.sub("", statement).split())


def _key(name: str) -> str:
    """The table or index a name means: its last part, unquoted (folded to lower case if bare)."""
    parts: list[tuple[str, str]] = re.findall(r'"([^"]+)"|(\w+)', name)
    quoted, bare = parts[-1]
    return quoted or bare.lower()


def _cut(text: str, separator: str) -> list[str]:
    """`text` cut at each `separator` outside parentheses, quotes and dollar quotes."""
    parts: list[str] = []
    depth = start = i = 0
    while i < len(text):
        char = text[i]
        if char in "'\"":
            end = text.find(char, i + 1)
            i = len(text) if end < 0 else end + 1
            continue
        tag = _DOLLAR_QUOTE.match(text, i) if char == "$" else None
        if tag is not None:
            end = text.find(tag.group(), tag.end())
            i = len(text) if end < 0 else end + len(tag.group())
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
        i += 1
    parts.append(text[start:].strip())
    return [part for part in parts if part]


@dataclass(frozen=True)
class Segment:
    """Statements of a unit between the edges of `concurrently()`'s block: the revision's
    transaction (`in_block` false), or the block, where each statement commits on its own.
    Rendered offline, the block begins with COMMIT (then SET lock_timeout = 0) and ends with
    BEGIN (after SET lock_timeout = LOCK_WAIT_LIMIT)."""

    in_block: bool
    statements: tuple[str, ...]


def segments(unit: Unit) -> list[Segment]:
    found = [Segment(False, ())]
    for raw in unit.statements:
        for statement in _cut(_plain(raw), ";"):
            edge = _BLOCK_EDGE.match(statement)
            if edge is not None:
                found.append(Segment(edge.group("edge").upper() == "COMMIT", ()))
            else:
                last = found[-1]
                found[-1] = Segment(last.in_block, (*last.statements, statement))
    return [segment for segment in found if segment.statements]


def _index_tables() -> dict[str, str]:
    """Each index name any revision creates, with its table (what a DROP INDEX drops)."""
    found: dict[str, str] = {}
    for unit in UNITS:
        for segment in segments(unit):
            for statement in segment.statements:
                for index in _INDEX.finditer(statement):
                    if index.group("index"):
                        found.setdefault(_key(index.group("index")), _key(index.group("table")))
    return found


INDEX_TABLES = _index_tables()


def _short(statement: str) -> str:
    return statement if len(statement) <= 80 else statement[:77] + "..."


def _concurrent(reindex: re.Match[str]) -> bool:
    return bool(
        reindex.group("concurrently") or _CONCURRENTLY_OPTION.search(reindex.group("options") or "")
    )


def _runs_in_block(statement: str) -> bool:
    reindex = _REINDEX.match(statement)
    if reindex is not None:
        return _concurrent(reindex)
    return any(allowed.match(statement) for allowed in _IN_BLOCK)


@dataclass
class _Scan:
    """What `violations` knows while it reads a unit."""

    new: set[str] = field(default_factory=set)  # tables the unit made (nobody else's yet)
    validated: set[str] = field(default_factory=set)  # constraints checked against every row
    not_null_checks: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    # In the current transaction: tables locked above SHARE UPDATE EXCLUSIVE, constraints added.
    locked: set[str] = field(default_factory=set)
    added: set[str] = field(default_factory=set)
    found: list[str] = field(default_factory=list)


def violations(unit: Unit) -> list[str]:
    """What `unit` does to an existing table that blocks its users for longer than an instant."""
    scan = _Scan()
    for segment in segments(unit):
        scan.locked, scan.added = set(), set()
        for statement in segment.statements:
            _read(scan, statement, in_block=segment.in_block)
    return scan.found


def _read(scan: _Scan, statement: str, *, in_block: bool) -> None:
    new, found = scan.new, scan.found
    new.update(_key(created.group("table")) for created in _CREATED.finditer(statement))
    renamed = _RENAMED.match(statement)
    if renamed is not None and _key(renamed.group("table")) in new:
        new.add(_key(renamed.group("new")))
    if in_block and not _runs_in_block(statement):
        found.append(
            f"{_short(statement)} in concurrently(): only CONCURRENTLY index statements and"
            " VALIDATE CONSTRAINT run there"
        )
        return
    if not in_block and _UNBOUNDED_LOCK_WAITS.match(statement):
        found.append(f"{statement} in the revision's transaction: its lock waits unbounded")
    for index in _INDEX.finditer(statement):
        table = _key(index.group("table"))
        if index.group("concurrently") or table in new:
            continue
        scan.locked.add(table)
        found.append(
            f"CREATE INDEX {index.group('index') or '(unnamed)'} ON {index.group('table')}"
            " without CONCURRENTLY"
        )
    for dropped in _DROP_INDEX.finditer(statement):
        if dropped.group("concurrently"):
            continue
        for name in _cut(dropped.group("indexes"), ","):
            if INDEX_TABLES.get(_key(name)) not in new:
                found.append(f"DROP INDEX {name} without CONCURRENTLY")
    _read_rewrites(scan, statement)
    locked = _LOCK.match(statement)
    if locked is not None and (locked.group("mode") or "").upper() not in _WEAK_LOCKS:
        for table in _cut(locked.group("tables"), ","):
            scan.locked.add(_key(re.sub(r"^ONLY\s+|\s*\*$", "", table, flags=re.I)))
    trigger = _TRIGGER.match(statement)
    if trigger is not None:
        scan.locked.add(_key(trigger.group("table")))
    altered = _ALTER_TABLE.match(statement)
    if altered is not None and _key(altered.group("table")) not in new:
        for clause in _cut(altered.group("actions"), ","):
            _read_clause(scan, altered.group("table"), clause, in_block=in_block)


def _read_rewrites(scan: _Scan, statement: str) -> None:
    """REINDEX (not CONCURRENTLY), VACUUM FULL, CLUSTER: an existing table rebuilt under a lock
    that stops its writers (REINDEX) or every use of it (VACUUM FULL, CLUSTER)."""
    new, found = scan.new, scan.found
    reindex = _REINDEX.match(statement)
    if reindex is not None and not _concurrent(reindex):
        kind, name = reindex.group("kind").upper(), reindex.group("name")
        table = None  # a schema, the database: every table in it
        if kind == "INDEX" and name:
            table = INDEX_TABLES.get(_key(name))
        elif kind == "TABLE" and name:
            table = _key(name)
        if table not in new:
            found.append(f"REINDEX {kind} {name or ''} without CONCURRENTLY".replace("  ", " "))
    vacuum = _VACUUM.match(statement)
    if vacuum is not None and (
        vacuum.group("full") or _FULL_OPTION.search(vacuum.group("options") or "")
    ):
        tables = [re.sub(r"\s*\(.*$", "", t) for t in _cut(vacuum.group("tables"), ",")]
        if not tables or any(_key(table) not in new for table in tables):
            found.append(
                f"VACUUM FULL {', '.join(tables) or '(every table)'}: rewritten under ACCESS"
                " EXCLUSIVE"
            )
    cluster = _CLUSTER.match(statement)
    if cluster is not None and (
        cluster.group("table") is None or _key(cluster.group("table")) not in new
    ):
        found.append(
            f"CLUSTER {cluster.group('table') or '(every clustered table)'}: rewritten under"
            " ACCESS EXCLUSIVE"
        )


def _read_clause(scan: _Scan, table: str, clause: str, *, in_block: bool) -> None:
    """One clause of an ALTER TABLE of an existing table."""
    found, key = scan.found, _key(table)
    validate = _VALIDATE.match(clause)
    if validate is not None:
        name = _key(validate.group("name"))
        scan.validated.add(name)
        if in_block:
            return
        if name in scan.added:
            found.append(
                f"ALTER TABLE {table} VALIDATE CONSTRAINT {validate.group('name')} in the"
                " transaction that added it: the scan runs under the ADD's lock"
            )
        elif key in scan.locked:
            found.append(
                f"ALTER TABLE {table} VALIDATE CONSTRAINT {validate.group('name')} in a"
                f" transaction that locked {table}: the scan runs under that lock"
            )
        return
    scan.locked.add(key)  # every other clause takes more than SHARE UPDATE EXCLUSIVE
    add = _ADD.match(clause)
    if add is not None:
        _read_added(scan, table, add.group("body"))
        return
    column = _ALTER_COLUMN.match(clause)
    if column is None:
        return
    name, change = column.group("column"), column.group("change")
    if _SET_NOT_NULL.match(change):
        proofs = scan.not_null_checks.get((key, _key(name)), set())
        if not proofs & scan.validated:
            found.append(
                f"ALTER TABLE {table} ALTER COLUMN {name} SET NOT NULL: every row read under"
                f" ACCESS EXCLUSIVE (no validated CHECK ({name} IS NOT NULL) before it)"
            )
    elif _NEW_TYPE.match(change):
        found.append(
            f"ALTER TABLE {table} ALTER COLUMN {name} TYPE: the table rewritten (or read) and"
            " its indexes rebuilt under ACCESS EXCLUSIVE"
        )


def _read_added(scan: _Scan, table: str, body: str) -> None:
    """The body of an ADD clause: a table constraint, or a column."""
    found = scan.found
    constraint = _CONSTRAINT.match(body)
    if constraint is not None:
        name = constraint.group("name")
        not_valid = re.search(r"\bNOT\s+VALID\b", body, re.I) is not None
        if name is not None:
            scan.added.add(_key(name))
            if not not_valid:
                scan.validated.add(_key(name))  # checked as it is added
            checked = _NOT_NULL_CHECK.search(body)
            if checked is not None:
                proven = (_key(table), _key(checked.group("column")))
                scan.not_null_checks.setdefault(proven, set()).add(_key(name))
        if _CHECKED.match(constraint.group("kind")) and not not_valid:
            found.append(f"ALTER TABLE {table} ADD {body} without NOT VALID")
        elif not _CHECKED.match(constraint.group("kind")) and not re.search(
            r"\bUSING\s+INDEX\b", body, re.I
        ):
            found.append(f"ALTER TABLE {table} ADD {body} without USING INDEX")
        return
    column = _COLUMN.match(body)
    if column is None:
        return
    for cost, why in _COLUMN_COSTS:
        if cost.search(column.group("definition")):
            found.append(f"ALTER TABLE {table} ADD COLUMN {column.group('column')}: {why}")
            return


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
    released = RELEASED.get(unit.key, {})
    found = violations(unit)
    gone = [breach for breach in released if breach not in found]
    assert gone == [], f"{unit.key} no longer breaks these: remove them from RELEASED"
    new = [breach for breach in found if breach not in released]
    assert new == [], f"{unit.key} blocks an existing table (see the rules above)"


def test_every_released_entry_names_a_revision() -> None:
    assert set(RELEASED) <= {unit.key for unit in UNITS}


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


# -- the rules themselves, on hand-made statements -------------------------------------------


def _block(*statements: str) -> tuple[str, ...]:
    """`statements` as `concurrently()` writes them offline: inside its block's edges."""
    config, scripts = _scripts(PLATFORM_CHAIN)

    def body() -> None:
        with concurrently():
            for statement in statements:
                op.execute(statement)

    return tuple(_render_body(config, scripts, body))


def test_the_units_are_cut_at_the_edges_concurrently_writes() -> None:
    block = _block("CREATE INDEX CONCURRENTLY a_idx ON a (x)")
    assert block[0] == "COMMIT" and block[-1] == "BEGIN", block
    assert segments(_unit("SELECT 1", *block, "SELECT 2")) == [
        Segment(False, ("SELECT 1",)),
        Segment(True, block[1:-1]),
        Segment(False, ("SELECT 2",)),
    ]


def test_a_validation_in_the_transaction_that_took_the_lock_is_flagged() -> None:
    """(a) auth 0010 as first written: the scan ran under the ADD's lock on users."""
    add = "ALTER TABLE users ADD CONSTRAINT f FOREIGN KEY (d) REFERENCES users NOT VALID"
    validate = "ALTER TABLE users VALIDATE CONSTRAINT f"
    assert violations(_unit(add, validate)) == [
        "ALTER TABLE users VALIDATE CONSTRAINT f in the transaction that added it: the scan"
        " runs under the ADD's lock"
    ]
    assert violations(_unit(f"{add}, VALIDATE CONSTRAINT f")) != []
    assert violations(_unit("ALTER TABLE users ADD COLUMN d uuid", validate)) != []
    assert violations(_unit("LOCK TABLE users IN SHARE MODE", validate)) != []
    assert (
        violations(
            _unit(
                "CREATE TRIGGER t BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION f()",
                validate,
            )
        )
        != []
    )

    assert violations(_unit(add, *_block(validate))) == []  # after the ADD's transaction
    assert violations(_unit(validate, "ALTER TABLE users ADD COLUMN d uuid")) == []
    assert violations(_unit("LOCK TABLE users IN ROW EXCLUSIVE MODE", validate)) == []


def test_unnamed_indexes_are_flagged() -> None:
    """(b)"""
    assert violations(_unit("CREATE INDEX ON users (a)")) == [
        "CREATE INDEX (unnamed) ON users without CONCURRENTLY"
    ]
    assert violations(_unit("CREATE UNIQUE INDEX IF NOT EXISTS ON users (a)")) != []
    assert violations(_unit("CREATE INDEX ON ONLY public.users (a)")) != []

    assert violations(_unit(*_block("CREATE INDEX CONCURRENTLY ON users (a)"))) == []
    assert violations(_unit("CREATE TABLE t (a int)", "CREATE INDEX ON t (a)")) == []


def test_indexed_columns_are_flagged() -> None:
    """(c) a column's own UNIQUE or PRIMARY KEY builds its index under the ALTER's lock."""
    assert violations(_unit("ALTER TABLE users ADD COLUMN k int UNIQUE")) == [
        "ALTER TABLE users ADD COLUMN k: an indexed column (its index built under the ALTER's lock)"
    ]
    assert violations(_unit("ALTER TABLE users ADD COLUMN k int PRIMARY KEY")) != []
    assert violations(_unit("ALTER TABLE users ADD k int CONSTRAINT k_key UNIQUE")) != []
    assert violations(_unit("ALTER TABLE users ADD d uuid REFERENCES users (id)")) != []

    assert violations(_unit("ALTER TABLE users ADD COLUMN k int NOT NULL DEFAULT 0")) == []
    assert violations(_unit("CREATE TABLE t (a int)", "ALTER TABLE t ADD k int UNIQUE")) == []


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE users ALTER COLUMN a SET NOT NULL",
        "ALTER TABLE users ALTER a TYPE bigint",
        "ALTER TABLE users ALTER COLUMN a SET DATA TYPE text USING a::text",
        "ALTER TABLE users ADD COLUMN g int GENERATED ALWAYS AS (a * 2) STORED",
        "ALTER TABLE users ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY",
        "ALTER TABLE users ADD COLUMN s bigserial",
        "ALTER TABLE users ADD COLUMN u uuid DEFAULT gen_random_uuid()",
        "REINDEX TABLE users",
        "REINDEX INDEX users_a_idx",
        "REINDEX (VERBOSE) SCHEMA public",
        "VACUUM FULL users",
        "VACUUM (FULL, ANALYZE) public.users",
        "VACUUM FULL",
        "CLUSTER users USING users_pkey",
    ],
)
def test_rewrites_and_scans_under_the_strongest_lock_are_flagged(statement: str) -> None:
    """(d)"""
    assert violations(_unit(statement)) != []


def test_the_safe_forms_of_those_pass() -> None:
    # A table the unit made is nobody else's yet.
    made = "CREATE TABLE t (a int)"
    for statement in (
        "ALTER TABLE t ALTER COLUMN a SET NOT NULL",
        "ALTER TABLE t ALTER a TYPE bigint",
        "ALTER TABLE t ADD COLUMN g int GENERATED ALWAYS AS (a * 2) STORED",
        "REINDEX TABLE t",
        "VACUUM FULL t",
        "CLUSTER t USING t_pkey",
    ):
        assert violations(_unit(made, statement)) == [], statement
    check = "ALTER TABLE users ADD CONSTRAINT a_nn CHECK (a IS NOT NULL) NOT VALID"
    validate = "ALTER TABLE users VALIDATE CONSTRAINT a_nn"
    not_null = "ALTER TABLE users ALTER COLUMN a SET NOT NULL"
    assert violations(_unit(check, *_block(validate), not_null)) == []
    assert violations(_unit(check, not_null)) != []  # not validated: the scan again
    assert violations(_unit("ALTER TABLE users ADD COLUMN d int DEFAULT 0")) == []
    assert violations(_unit("ALTER TABLE users ADD COLUMN t timestamptz DEFAULT now()")) == []
    assert violations(_unit("ALTER TABLE users ALTER COLUMN a DROP NOT NULL")) == []
    assert violations(_unit("VACUUM (ANALYZE) users", "VACUUM users")) == []
    assert violations(_unit(*_block("REINDEX INDEX CONCURRENTLY users_a_idx"))) == []


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE users ADD COLUMN x int",
        "ALTER TABLE users VALIDATE CONSTRAINT f, ADD COLUMN x int",
        "UPDATE users SET a = 1",
        "CREATE TABLE t (a int)",
        "LOCK TABLE users",
        "REINDEX TABLE users",
    ],
)
def test_only_concurrent_statements_run_in_concurrently(statement: str) -> None:
    """(e) in the block, lock waits are unbounded and each statement commits on its own."""
    assert (
        f"{statement} in concurrently(): only CONCURRENTLY index statements and VALIDATE"
        " CONSTRAINT run there"
    ) in violations(_unit(*_block(statement)))


def test_what_runs_in_concurrently_and_unbounded_waits_outside_it() -> None:
    assert (
        violations(
            _unit(
                *_block(
                    "DROP INDEX CONCURRENTLY IF EXISTS users_a_idx",
                    "CREATE UNIQUE INDEX CONCURRENTLY users_a_idx ON users (a)",
                    "REINDEX (VERBOSE) INDEX CONCURRENTLY users_a_idx",
                    "ALTER TABLE ONLY users VALIDATE CONSTRAINT f",
                )
            )
        )
        == []
    )
    assert violations(_unit("SET LOCAL lock_timeout = 0")) != []
    assert violations(_unit("SET LOCAL lock_timeout = '5s'")) == []


def test_names_are_read_whole_only_schema_qualified_and_quoted() -> None:
    """(f) `ALTER TABLE ONLY public.x` was read as a table named ONLY."""
    assert (
        violations(
            _unit(
                "CREATE TABLE public.fresh (a int)",
                "ALTER TABLE ONLY public.fresh ADD CONSTRAINT c CHECK (a > 0)",
                "CREATE INDEX fresh_a ON public.fresh (a)",
            )
        )
        == []
    )
    assert (
        violations(
            _unit(
                'CREATE TABLE "Fresh" (a int)',
                'ALTER TABLE IF EXISTS ONLY "Fresh" ADD CHECK (a > 0)',
            )
        )
        == []
    )
    assert violations(_unit("ALTER TABLE ONLY public.users ADD CHECK (a > 0)")) == [
        "ALTER TABLE public.users ADD CHECK (a > 0) without NOT VALID"
    ]
    assert (
        violations(_unit("CREATE TABLE fresh (a int)", 'ALTER TABLE "Fresh" ADD CHECK (a > 0)'))
        != []
    )
    assert violations(_unit('DROP INDEX public."users_A_idx"')) == [
        'DROP INDEX public."users_A_idx" without CONCURRENTLY'
    ]
