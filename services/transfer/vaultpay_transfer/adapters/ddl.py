"""The ledger's schema, functions, triggers and grants, from `sql/*.sql` (run by the transfer
migrations and nowhere else).

A migration's SQL never changes once it shipped, so each revision reads its own files:

* t0001: `schema.sql`, `functions_t0001.sql` (the money functions as t0001 made them) and
  `protect.sql`; its downgrade `drop.sql`;
* t0002: `functions.sql` (the functions of today, CREATE OR REPLACE: owners and grants stay)
  and `t0002_upgrade.sql` (the index dropped CONCURRENTLY, so outside a transaction); its
  downgrade `t0002_downgrade.sql` (the index built CONCURRENTLY), then `functions_t0001.sql`
  again as CREATE OR REPLACE;
* t0003: `t0003_upgrade.sql` (no wallet closes with a withdrawal pending); its downgrade
  `t0003_downgrade.sql`;
* t0004: `t0004_upgrade.sql` (the payout lease finds its payouts by key, whatever the
  planner guesses); its downgrade is t0002's lease, read from `functions.sql`.
* t0005: `t0005_upgrade.sql` (the held movements' functions: a PIN-checked movement's key
  stays locked from its stored-answer lookup to its COMMIT); its downgrade
  `t0005_downgrade.sql`.
* t0006: `t0006_upgrade.sql` (a daily limit's refusal also tells the month's limit and
  usage); its downgrade is t0002's limit check, read from `functions.sql`.
* t0010: `t0010_upgrade.sql` (the idempotency claim and record refuse a method that is not
  transfer's); its downgrade is t0002's claim and record, read from `functions.sql`.
* t0011: `t0011_upgrade.sql` (a payout of a wallet that staff froze is held, not paid out:
  `payouts.held_since` and `transfer_hold_payout_if_frozen`); its downgrade
  `t0011_downgrade.sql`.
* t0012: `t0012_upgrade.sql` (the money functions take a movement's time under its wallet's
  row lock); its downgrade is t0002's four, read from `functions.sql`.
* t0013: `t0013_upgrade.sql` (the payout lease backs off with the payout's attempts); its
  downgrade is t0004's lease, read from `t0004_upgrade.sql`.
* t0014: `t0014_upgrade.sql` (the payout lease is fenced: the lease returns its end, and
  `transfer_claim_payout_for_bank` replaces `transfer_hold_payout_if_frozen`); its downgrade
  `t0014_downgrade.sql`, then t0013's lease (`t0013_upgrade.sql`) with the lease's privileges
  as t0014 gives them, and t0011's hold check with its privileges (`t0011_upgrade.sql`).
* t0015: `t0015_upgrade.sql` (the staff listing's rare categories and statuses get partial
  indexes that a P2P send never writes; built CONCURRENTLY, so outside a transaction); its
  downgrade `t0015_downgrade.sql`.
* t0016: `t0016_upgrade.sql` (a limit's refusal by SendMoney's, TopUp's or Withdraw's
  function tells the time it was decided at, `decided_at`); its downgrade is t0012's three,
  read from `t0012_upgrade.sql`.
* t0017: `t0017_upgrade.sql` (a payout changes only along its progress: PENDING -> SETTLED |
  RETURNED once, its money and destination never, a finished one never, none deleted); its
  downgrade `t0017_downgrade.sql`.
* t0018: `t0018_upgrade.sql` (GetTransferStats' rare categories by completion time: a partial
  index on completed_at of their counted rows, which a P2P send never writes; built
  CONCURRENTLY, so outside a transaction); its downgrade `t0018_downgrade.sql`.
* t0019: `t0019_upgrade.sql` (TopUp's function answers a payment reference already credited
  before the wallet's other refusals, under the wallet's row lock); its downgrade is t0016's
  TopUp function, read from `t0016_upgrade.sql`.
* t0020: `t0020_upgrade.sql` (transfer_caps fails closed when a window's base, the admin
  override or the tier default, is missing, whatever the user's own limit; TopUp's function
  answers a credited reference before the wallet's other refusals only when it credited this
  wallet; the payout's settle and return reply a finished payout's withdrawal row with
  ALREADY_FINISHED); its downgrade is t0002's transfer_caps and settle, read from
  `functions.sql`, t0019's TopUp function, read from `t0019_upgrade.sql`, and t0012's return,
  read from `t0012_upgrade.sql`.
* t0021: `t0021_upgrade.sql` (a payout's attempts count its bank calls: the lease counts none
  and backs off with the bank calls made so far; the claim before the bank call counts one
  when it lets the payout go to the bank, and returns the count; transfer's role may read
  `wallets.user_id`, for the ledger verifier); its downgrade `t0021_downgrade.sql` (the
  column's grant revoked, the claim dropped), then t0014's claim with its privileges and
  t0014's lease as CREATE OR REPLACE (both read from `t0014_upgrade.sql`).
* t0022: `t0022_upgrade.sql` (transfer's role may read `wallet_freezes`' wallet_id, source
  and until: a WALLET_FROZEN the ledger answers tells the freeze that holds the wallet, read
  by the ledger adapter after the refusal); its downgrade `t0022_downgrade.sql` (the
  columns' grant revoked).
* t0023: `t0023_upgrade.sql` (SendMoney's, Withdraw's and TopUp's functions answer a request
  id that already moved the user's money before any other refusal; the held movement's
  look-up, `transfer_hold_lookup`, reads again after it takes the key); its downgrade
  `t0023_downgrade.sql` (the look-up dropped), then t0016's send and withdraw and t0020's
  top-up as their own files have them.
* t0024: `t0024_upgrade.sql` (an owner's rows other than COMPLETED P2P sides get a partial
  index, which a P2P send never writes: a history filtered by type or by a status other than
  COMPLETED reads a page's worth of it, not the owner's whole history; built CONCURRENTLY, so
  outside a transaction); its downgrade `t0024_downgrade.sql`.
* t0025: `t0025_upgrade.sql` (PUBLIC's EXECUTE of t0003's close guard,
  `transfer_refuse_close_with_pending_withdrawal`, a SECURITY DEFINER trigger function, is
  revoked: no role can attach it to a table of its own and probe the ledger with it; the
  trigger on `wallets` fires without it); its downgrade `t0025_downgrade.sql`.
* t0026: `t0026_upgrade.sql` (a wallet-side row carries a reversed amount only once settled,
  COMPLETED or REVERSED; a REVERSED one is reversed in full, a COMPLETED one at most in part:
  three CHECKs added NOT VALID, each then validated outside the revision's transaction); its
  downgrade `t0026_downgrade.sql`.
* t0027: `t0027_upgrade.sql` (GetTransferStats reads closed hours from a rollup,
  `transfer_stats_hourly` and `transfer_stats_rollup`, written by transfer's rollup job); its
  downgrade `t0027_downgrade.sql`.
* t0028: `t0028_upgrade.sql` (the payouts the bank returned, WITHDRAW CREDIT rows, get
  partial indexes of their own, everyone's and each owner's, CONCURRENTLY); its downgrade
  `t0028_downgrade.sql`.
"""

from __future__ import annotations

import re
from importlib.resources import files

from vaultpay_common.audit.tables import split_sql

__all__ = [
    "ledger_ddl",
    "ledger_drop_ddl",
    "ledger_t0002_ddl",
    "ledger_t0002_downgrade_ddl",
    "ledger_t0002_downgrade_index_ddl",
    "ledger_t0002_index_ddl",
    "ledger_t0003_ddl",
    "ledger_t0003_downgrade_ddl",
    "ledger_t0004_ddl",
    "ledger_t0004_downgrade_ddl",
    "ledger_t0005_ddl",
    "ledger_t0005_downgrade_ddl",
    "ledger_t0006_ddl",
    "ledger_t0006_downgrade_ddl",
    "ledger_t0010_ddl",
    "ledger_t0010_downgrade_ddl",
    "ledger_t0011_ddl",
    "ledger_t0011_downgrade_ddl",
    "ledger_t0012_ddl",
    "ledger_t0012_downgrade_ddl",
    "ledger_t0013_ddl",
    "ledger_t0013_downgrade_ddl",
    "ledger_t0014_ddl",
    "ledger_t0014_downgrade_ddl",
    "ledger_t0015_ddl",
    "ledger_t0015_downgrade_ddl",
    "ledger_t0016_ddl",
    "ledger_t0016_downgrade_ddl",
    "ledger_t0017_ddl",
    "ledger_t0017_downgrade_ddl",
    "ledger_t0018_ddl",
    "ledger_t0018_downgrade_ddl",
    "ledger_t0019_ddl",
    "ledger_t0019_downgrade_ddl",
    "ledger_t0020_ddl",
    "ledger_t0020_downgrade_ddl",
    "ledger_t0021_ddl",
    "ledger_t0021_downgrade_ddl",
    "ledger_t0022_ddl",
    "ledger_t0022_downgrade_ddl",
    "ledger_t0023_ddl",
    "ledger_t0023_downgrade_ddl",
    "ledger_t0024_ddl",
    "ledger_t0024_downgrade_ddl",
    "ledger_t0025_ddl",
    "ledger_t0025_downgrade_ddl",
    "ledger_t0026_ddl",
    "ledger_t0026_downgrade_ddl",
    "ledger_t0026_validate_ddl",
    "ledger_t0027_ddl",
    "ledger_t0027_downgrade_ddl",
    "ledger_t0028_ddl",
    "ledger_t0028_downgrade_ddl",
]

_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")
_T0001_FILES = ("schema.sql", "functions_t0001.sql", "protect.sql")
_T0001_FUNCTIONS = "functions_t0001.sql"
_CREATE_FUNCTION = re.compile(r"^CREATE FUNCTION ", re.MULTILINE)
_LEASE = re.compile(r"^CREATE OR REPLACE FUNCTION transfer_lease_payouts\(")
_LIMIT_REFUSAL = re.compile(r"^CREATE OR REPLACE FUNCTION transfer_limit_refusal\(")
_IDEMPOTENCY = re.compile(r"^CREATE OR REPLACE FUNCTION transfer_(?:claim|remember)\(")
_LEASE_PRIVILEGES = re.compile(
    r"^(?:REVOKE ALL|GRANT EXECUTE) ON FUNCTION transfer_lease_payouts\(integer, double precision\)"
)
_HOLD_CHECK = re.compile(
    r"^(?:CREATE FUNCTION|REVOKE ALL ON FUNCTION|GRANT EXECUTE ON FUNCTION)"
    r" transfer_hold_payout_if_frozen\("
)
_TIMED = re.compile(
    r"^CREATE OR REPLACE FUNCTION transfer_(?:send_money|top_up|withdraw|return_payout)\("
)
_LIMITED = re.compile(r"^CREATE OR REPLACE FUNCTION transfer_(?:send_money|top_up|withdraw)\(")
_TOP_UP = re.compile(r"^CREATE OR REPLACE FUNCTION transfer_top_up\(")
_SEND_OR_WITHDRAW = re.compile(r"^CREATE OR REPLACE FUNCTION transfer_(?:send_money|withdraw)\(")
_CAPS = re.compile(r"^CREATE OR REPLACE FUNCTION transfer_caps\(")
_SETTLE = re.compile(r"^CREATE OR REPLACE FUNCTION transfer_settle_payout\(")
_RETURN = re.compile(r"^CREATE OR REPLACE FUNCTION transfer_return_payout\(")
_T0014_LEASE = re.compile(r"^CREATE FUNCTION transfer_lease_payouts\(")
_T0014_CLAIM = re.compile(
    r"^(?:CREATE FUNCTION |REVOKE ALL ON FUNCTION\n    |GRANT EXECUTE ON FUNCTION\n    )"
    r"transfer_claim_payout_for_bank\("
)


def _script(name: str) -> str:
    return files("vaultpay_transfer.adapters").joinpath("sql", name).read_text(encoding="utf-8")


def _for_role(name: str, app_role: str) -> list[str]:
    if not _ROLE.match(app_role):
        raise ValueError(f"unsafe role name {app_role!r}")
    return split_sql(_script(name).replace("__APP_ROLE__", f'"{app_role}"'))


def ledger_ddl(app_role: str) -> list[str]:
    """Every statement creating the ledger for `app_role`, in order (t0001)."""
    return [statement for name in _T0001_FILES for statement in _for_role(name, app_role)]


def ledger_drop_ddl() -> list[str]:
    """t0001's downgrade."""
    return split_sql(_script("drop.sql"))


def ledger_t0002_ddl() -> list[str]:
    """t0002: the money functions of today over t0001's, in the revision's transaction."""
    statements = split_sql(_script("functions.sql"))
    if any(not s.startswith("CREATE OR REPLACE FUNCTION ") for s in statements):
        raise ValueError("functions.sql holds CREATE OR REPLACE FUNCTION statements only")
    return statements


def ledger_t0002_index_ddl() -> list[str]:
    """t0002's index drop, after `ledger_t0002_ddl` committed: CONCURRENTLY, so outside a
    transaction (the plain DROP INDEX it shipped with took ACCESS EXCLUSIVE on
    wallet_transactions)."""
    return split_sql(_script("t0002_upgrade.sql"))


def ledger_t0002_downgrade_index_ddl() -> list[str]:
    """t0002's downgrade, first: the index built again CONCURRENTLY, outside a transaction (the
    plain CREATE INDEX it shipped with held SHARE on wallet_transactions for the build)."""
    return split_sql(_script("t0002_downgrade.sql"))


def ledger_t0002_downgrade_ddl() -> list[str]:
    """t0002's downgrade, after `ledger_t0002_downgrade_index_ddl`: t0001's functions over
    today's, in the revision's transaction."""
    t0001 = _CREATE_FUNCTION.sub("CREATE OR REPLACE FUNCTION ", _script(_T0001_FUNCTIONS))
    return split_sql(t0001)


def ledger_t0003_ddl() -> list[str]:
    """t0003: the trigger refusing to close a wallet with a withdrawal still pending."""
    return split_sql(_script("t0003_upgrade.sql"))


def ledger_t0003_downgrade_ddl() -> list[str]:
    """t0003's downgrade: the trigger and its function go."""
    return split_sql(_script("t0003_downgrade.sql"))


def ledger_t0004_ddl() -> list[str]:
    """t0004: the payout worker's lease without a join the planner can turn into a scan."""
    return split_sql(_script("t0004_upgrade.sql"))


def ledger_t0004_downgrade_ddl() -> list[str]:
    """t0004's downgrade: t0002's lease, as `functions.sql` (t0002's own file) creates it."""
    return [s for s in split_sql(_script("functions.sql")) if _LEASE.match(s)]


def ledger_t0005_ddl(app_role: str) -> list[str]:
    """t0005: the held movements' functions, executable by `app_role` only."""
    return _for_role("t0005_upgrade.sql", app_role)


def ledger_t0005_downgrade_ddl() -> list[str]:
    """t0005's downgrade: the held movements' functions go."""
    return split_sql(_script("t0005_downgrade.sql"))


def ledger_t0006_ddl() -> list[str]:
    """t0006: the limit check whose daily refusal also tells the month's limit and usage."""
    return split_sql(_script("t0006_upgrade.sql"))


def ledger_t0006_downgrade_ddl() -> list[str]:
    """t0006's downgrade: t0002's limit check, as `functions.sql` (t0002's own file) has it."""
    return [s for s in split_sql(_script("functions.sql")) if _LIMIT_REFUSAL.match(s)]


def ledger_t0010_ddl() -> list[str]:
    """t0010: the idempotency claim and record of the money functions take transfer's methods
    only (insufficient_privilege for any other)."""
    return split_sql(_script("t0010_upgrade.sql"))


def ledger_t0010_downgrade_ddl() -> list[str]:
    """t0010's downgrade: t0002's claim and record, as `functions.sql` (t0002's own file) has
    them."""
    return [s for s in split_sql(_script("functions.sql")) if _IDEMPOTENCY.match(s)]


def ledger_t0011_ddl(app_role: str) -> list[str]:
    """t0011: the payout hold of a staff-frozen wallet, executable by `app_role` only."""
    return _for_role("t0011_upgrade.sql", app_role)


def ledger_t0011_downgrade_ddl() -> list[str]:
    """t0011's downgrade: the hold check and its column go."""
    return split_sql(_script("t0011_downgrade.sql"))


def ledger_t0012_ddl() -> list[str]:
    """t0012: SendMoney's, TopUp's, Withdraw's and the payout return's functions take the
    movement's time right after they lock its wallet(s), not before the claim and the wait."""
    return split_sql(_script("t0012_upgrade.sql"))


def ledger_t0012_downgrade_ddl() -> list[str]:
    """t0012's downgrade: t0002's four, as `functions.sql` (t0002's own file) has them."""
    return [s for s in split_sql(_script("functions.sql")) if _TIMED.match(s)]


def ledger_t0013_ddl() -> list[str]:
    """t0013: the payout lease backs off, `p_lease_seconds * 2^least(attempts, 6)` long."""
    return split_sql(_script("t0013_upgrade.sql"))


def ledger_t0013_downgrade_ddl() -> list[str]:
    """t0013's downgrade: t0004's lease, as `t0004_upgrade.sql` (t0004's own file) has it."""
    return ledger_t0004_ddl()


def ledger_t0014_ddl(app_role: str) -> list[str]:
    """t0014: the payout lease returns its end (dropped and created again, executable by
    `app_role` only), and the fenced claim before the bank call replaces t0011's hold check."""
    return _for_role("t0014_upgrade.sql", app_role)


def ledger_t0014_downgrade_ddl(app_role: str) -> list[str]:
    """t0014's downgrade: the claim and the lease go; t0013's lease comes back (its own file)
    with the privileges t0014 gives the lease, then t0011's hold check with its privileges
    (its own file; not its column, which t0014 kept)."""
    lease_privileges = [s for s in ledger_t0014_ddl(app_role) if _LEASE_PRIVILEGES.match(s)]
    hold_check = [s for s in ledger_t0011_ddl(app_role) if _HOLD_CHECK.match(s)]
    return (
        split_sql(_script("t0014_downgrade.sql"))
        + ledger_t0013_ddl()
        + lease_privileges
        + hold_check
    )


def ledger_t0015_ddl() -> list[str]:
    """t0015: partial indexes of the rare categories and statuses (the staff listing's filters),
    CONCURRENTLY: each statement must run outside a transaction."""
    return split_sql(_script("t0015_upgrade.sql"))


def ledger_t0015_downgrade_ddl() -> list[str]:
    """t0015's downgrade: both indexes go, CONCURRENTLY (outside a transaction too)."""
    return split_sql(_script("t0015_downgrade.sql"))


def ledger_t0016_ddl() -> list[str]:
    """t0016: SendMoney's, TopUp's and Withdraw's functions add the time they decided at
    (`decided_at`) to a limit's refusal; nothing else in them changes."""
    return split_sql(_script("t0016_upgrade.sql"))


def ledger_t0016_downgrade_ddl() -> list[str]:
    """t0016's downgrade: t0012's three, as `t0012_upgrade.sql` (t0012's own file) has them."""
    return [s for s in ledger_t0012_ddl() if _LIMITED.match(s)]


def ledger_t0017_ddl() -> list[str]:
    """t0017: the payouts' triggers (a payout changes only along its progress)."""
    return split_sql(_script("t0017_upgrade.sql"))


def ledger_t0017_downgrade_ddl() -> list[str]:
    """t0017's downgrade: the triggers and their function go."""
    return split_sql(_script("t0017_downgrade.sql"))


def ledger_t0018_ddl() -> list[str]:
    """t0018: the partial index of the counted rare-category rows by completion time
    (GetTransferStats), CONCURRENTLY: each statement must run outside a transaction."""
    return split_sql(_script("t0018_upgrade.sql"))


def ledger_t0018_downgrade_ddl() -> list[str]:
    """t0018's downgrade: the index goes, CONCURRENTLY (outside a transaction too)."""
    return split_sql(_script("t0018_downgrade.sql"))


def ledger_t0019_ddl() -> list[str]:
    """t0019: TopUp's function answers PAYMENT_REFERENCE_USED for a reference already credited
    right after it locks the wallet's row, before the wallet's other refusals."""
    return split_sql(_script("t0019_upgrade.sql"))


def ledger_t0019_downgrade_ddl() -> list[str]:
    """t0019's downgrade: t0016's TopUp function, as `t0016_upgrade.sql` (t0016's own file) has
    it."""
    return [s for s in ledger_t0016_ddl() if _TOP_UP.match(s)]


def ledger_t0020_ddl() -> list[str]:
    """t0020: transfer_caps fails closed (a cap of 0) for a window with neither an admin
    override nor a tier default, even when the user set their own limit; TopUp's function
    answers PAYMENT_REFERENCE_USED before the wallet's other refusals only for a reference
    credited to this wallet (one credited to another is refused by its INSERT, as before
    t0019); the payout's settle and return answer ALREADY_FINISHED with the payout's
    withdrawal row, as their OK does (`row_to_json`: COMPLETED when it was settled, FAILED
    when returned), the shape every release's adapter parses."""
    return split_sql(_script("t0020_upgrade.sql"))


def ledger_t0020_downgrade_ddl() -> list[str]:
    """t0020's downgrade: t0002's transfer_caps and settle, as `functions.sql` (t0002's own
    file) has them, t0019's TopUp function, as `t0019_upgrade.sql` (t0019's own file) has it,
    and t0012's return, as `t0012_upgrade.sql` (t0012's own file) has it."""
    caps = [s for s in split_sql(_script("functions.sql")) if _CAPS.match(s)]
    settle = [s for s in split_sql(_script("functions.sql")) if _SETTLE.match(s)]
    returned = [s for s in ledger_t0012_ddl() if _RETURN.match(s)]
    return caps + ledger_t0019_ddl() + settle + returned


def ledger_t0021_ddl(app_role: str) -> list[str]:
    """t0021: the payout lease counts no attempt and backs off with the bank calls made so far
    (CREATE OR REPLACE: its type of result is t0014's); the claim before the bank call counts
    the attempt when it lets the payout go to the bank and returns the count (`attempts`: a new
    type of result, so dropped and created again, executable by `app_role` only); `app_role`
    may read `wallets.user_id` (the ledger verifier compares each history row's owner)."""
    return _for_role("t0021_upgrade.sql", app_role)


def ledger_t0021_downgrade_ddl(app_role: str) -> list[str]:
    """t0021's downgrade: the grant of `wallets.user_id` is revoked and its claim goes, then
    t0014's claim comes back with its privileges and
    t0014's lease goes over t0021's (CREATE OR REPLACE), as `t0014_upgrade.sql` (t0014's own
    file) has them."""
    t0014 = ledger_t0014_ddl(app_role)
    claim = [s for s in t0014 if _T0014_CLAIM.match(s)]
    lease = [
        s.replace("CREATE FUNCTION ", "CREATE OR REPLACE FUNCTION ", 1)
        for s in t0014
        if _T0014_LEASE.match(s)
    ]
    return _for_role("t0021_downgrade.sql", app_role) + claim + lease


def ledger_t0022_ddl(app_role: str) -> list[str]:
    """t0022: `app_role` may read `wallet_freezes`' wallet_id, source and until (which freeze
    holds a wallet the ledger refused WALLET_FROZEN, and when it ends), nothing more."""
    return _for_role("t0022_upgrade.sql", app_role)


def ledger_t0022_downgrade_ddl(app_role: str) -> list[str]:
    """t0022's downgrade: the columns' grant is revoked."""
    return _for_role("t0022_downgrade.sql", app_role)


def ledger_t0023_ddl(app_role: str) -> list[str]:
    """t0023: SendMoney's, Withdraw's and TopUp's functions answer IDEMPOTENCY_KEY_REUSED for a
    request id that already moved the user's money first under the wallet's lock (TopUp after
    a reference credited to this wallet), so a retry whose stored answer expired is never
    refused for a payment that went through; `transfer_hold_lookup` (executable by
    `app_role` only) looks up a held movement's stored answer, takes its key, and looks again
    on a new snapshot when it took it."""
    return _for_role("t0023_upgrade.sql", app_role)


def ledger_t0023_downgrade_ddl(app_role: str) -> list[str]:
    """t0023's downgrade: the look-up goes, then t0016's send and withdraw and t0020's top-up
    come back, as `t0016_upgrade.sql` and `t0020_upgrade.sql` (their own files) have them."""
    send_withdraw = [s for s in ledger_t0016_ddl() if _SEND_OR_WITHDRAW.match(s)]
    top_up = [s for s in ledger_t0020_ddl() if _TOP_UP.match(s)]
    return _for_role("t0023_downgrade.sql", app_role) + send_withdraw + top_up


def ledger_t0024_ddl() -> list[str]:
    """t0024: the partial index of an owner's rows other than COMPLETED P2P sides (the
    histories' type and rare-status filters), CONCURRENTLY: outside a transaction."""
    return split_sql(_script("t0024_upgrade.sql"))


def ledger_t0024_downgrade_ddl() -> list[str]:
    """t0024's downgrade: the index goes, CONCURRENTLY (outside a transaction too)."""
    return split_sql(_script("t0024_downgrade.sql"))


def ledger_t0025_ddl() -> list[str]:
    """t0025: PUBLIC's EXECUTE of the close guard's trigger function (SECURITY DEFINER) is
    revoked; only its owner keeps it, and the trigger on `wallets` still fires."""
    return split_sql(_script("t0025_upgrade.sql"))


def ledger_t0025_downgrade_ddl() -> list[str]:
    """t0025's downgrade: PUBLIC's EXECUTE of the close guard's function is given back."""
    return split_sql(_script("t0025_downgrade.sql"))


_VALIDATE = re.compile(r"^ALTER TABLE \w+ VALIDATE CONSTRAINT \w+\Z")


def ledger_t0026_ddl() -> list[str]:
    """t0026: the three CHECKs on a wallet-side row's status and reversed amount, added NOT
    VALID (no scan), in the revision's transaction; repeatable (each is dropped first)."""
    return [s for s in split_sql(_script("t0026_upgrade.sql")) if not _VALIDATE.match(s)]


def ledger_t0026_validate_ddl() -> list[str]:
    """t0026's validations of its CHECKs, one statement each, after `ledger_t0026_ddl`
    committed: each to run in a transaction of its own (SHARE UPDATE EXCLUSIVE: writes go on
    while it scans)."""
    return [s for s in split_sql(_script("t0026_upgrade.sql")) if _VALIDATE.match(s)]


def ledger_t0026_downgrade_ddl() -> list[str]:
    """t0026's downgrade: the three CHECKs go."""
    return split_sql(_script("t0026_downgrade.sql"))


def ledger_t0027_ddl(app_role: str) -> list[str]:
    """t0027: the statistics rollup's two tables, written and read by `app_role` only."""
    return _for_role("t0027_upgrade.sql", app_role)


def ledger_t0027_downgrade_ddl() -> list[str]:
    """t0027's downgrade: both tables go."""
    return split_sql(_script("t0027_downgrade.sql"))


def ledger_t0028_ddl() -> list[str]:
    """t0028: the partial indexes of the returned payouts (WITHDRAW CREDIT rows), everyone's
    and each owner's, CONCURRENTLY: outside a transaction."""
    return split_sql(_script("t0028_upgrade.sql"))


def ledger_t0028_downgrade_ddl() -> list[str]:
    """t0028's downgrade: both indexes go, CONCURRENTLY (outside a transaction too)."""
    return split_sql(_script("t0028_downgrade.sql"))
