"""Idempotency keys, the reply codec and `run_once`, on the in-memory fakes."""

from __future__ import annotations

import ast
import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum, IntEnum, StrEnum
from pathlib import Path

import pytest

import vaultpay_common.idempotency as idempotency
from tests.fakes.idempotency import FakeIdempotencyRecords
from tests.fakes.uow import FakeUnitOfWork
from vaultpay_common.errors import ErrorKind, ValidationError
from vaultpay_common.idempotency import (
    DataclassCodec,
    IdempotencyKey,
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
    UnsupportedTypeError,
    request_fingerprint,
    run_once,
    stored_reply,
)

METHOD = "/vaultpay.wallet.v1.WalletService/SetPin"


class Tier(IntEnum):
    BASIC = 1
    FULL = 2


class Colour(Enum):
    RED = "r"


class State(StrEnum):
    ACTIVE = "ACTIVE"
    FROZEN = "FROZEN"


@dataclass(frozen=True)
class Limits:
    daily_minor: int
    tier: Tier


@dataclass(frozen=True)
class Reply:
    wallet_id: str
    balance_minor: int
    active: bool
    state: State
    colour: Colour
    changed_at: datetime
    limits: Limits
    previous: Limits | None
    tags: list[str]
    history: tuple[Limits, ...]
    pair: tuple[int, str]
    note: str | None = None
    extra: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Done:
    transaction_id: str


@dataclass(frozen=True)
class WithFloat:
    amount: float


@dataclass(frozen=True)
class WithDict:
    values: dict[str, int]


@dataclass(frozen=True)
class WithDecimal:
    amount: Decimal


@dataclass(frozen=True)
class WithUnion:
    value: int | str


@dataclass(frozen=True)
class WithBytes:
    blob: bytes


def _key(request_id: str | None = None, body: bytes = b"pin=1234") -> IdempotencyKey:
    return IdempotencyKey.for_request(
        caller="user-1", method=METHOD, request_id=request_id or str(uuid.uuid4()), payload=body
    )


def _reply(**changes: object) -> Reply:
    limits = Limits(100_000, Tier.BASIC)
    values: dict[str, object] = {
        "wallet_id": "VPY-ABC123",
        "balance_minor": 125_050,
        "active": True,
        "state": State.FROZEN,
        "colour": Colour.RED,
        "changed_at": datetime(2026, 11, 25, 10, 30, 1, 123456, tzinfo=UTC),
        "limits": limits,
        "previous": None,
        "tags": ["a", "b"],
        "history": (limits, Limits(5, Tier.FULL)),
        "pair": (7, "seven"),
        "note": "hello",
    }
    values.update(changes)
    return Reply(**values)  # type: ignore[arg-type]


# --- keys and fingerprints ---------------------------------------------------------------


def test_the_fingerprint_is_the_hex_sha256_of_the_request() -> None:
    assert request_fingerprint(b"abc") == hashlib.sha256(b"abc").hexdigest()


def test_a_request_id_is_kept_in_its_canonical_lower_case_form() -> None:
    raw = uuid.uuid4()
    key = IdempotencyKey("user-1", METHOD, str(raw).upper(), request_fingerprint(b""))
    assert key.request_id == str(raw)


@pytest.mark.parametrize(
    "spelling",
    ["not-a-uuid", "{%s}", "urn:uuid:%s", "HEX", " %s", "%s\n"],
)
def test_a_request_id_in_any_but_the_canonical_spelling_is_invalid_argument(
    spelling: str,
) -> None:
    # One id, one spelling (QA of 2026-12-03): a send keyed "{U}" replayed for "U", and the
    # client could not look it up by the id it had sent.
    raw = uuid.uuid4()
    value = raw.hex if spelling == "HEX" else spelling.replace("%s", str(raw))
    with pytest.raises(ValidationError) as caught:
        _key(value)
    assert [v.field for v in caught.value.violations] == ["request_id"]


def test_the_nil_uuid_is_refused_as_a_request_id() -> None:
    # QA of 2026-12-03: a client that always sends the nil UUID would have every later request
    # answered IDEMPOTENCY_KEY_REUSED or replayed, and learn why only by reading the ids.
    for spelling in ("00000000-0000-0000-0000-000000000000", str(uuid.UUID(int=0)).upper()):
        with pytest.raises(ValidationError) as caught:
            _key(spelling)
        assert [v.field for v in caught.value.violations] == ["request_id"]
        assert "nil UUID" in caught.value.violations[0].description


@pytest.mark.parametrize(
    ("caller", "method", "fingerprint"),
    [
        ("", METHOD, "0" * 64),
        ("u", "", "0" * 64),
        ("u", METHOD, "ABC"),
        ("u", METHOD, "F" * 64),
        ("u", METHOD, "0" * 64 + "\n"),
    ],
)
def test_a_key_refuses_missing_parts_and_malformed_fingerprints(
    caller: str, method: str, fingerprint: str
) -> None:
    with pytest.raises(ValueError, match=r"idempotency key|fingerprint"):
        IdempotencyKey(caller, method, str(uuid.uuid4()), fingerprint)


def test_the_errors_have_the_contracts_kinds_and_reasons() -> None:
    assert IdempotencyKeyReusedError().kind is ErrorKind.FAILED_PRECONDITION
    assert IdempotencyKeyReusedError().reason == "IDEMPOTENCY_KEY_REUSED"
    assert IdempotencyKeyInUseError().kind is ErrorKind.ABORTED
    assert IdempotencyKeyInUseError().reason == "IDEMPOTENCY_KEY_IN_USE"


# --- the reply codec ---------------------------------------------------------------------


def test_the_codec_round_trips_every_supported_type_exactly() -> None:
    codec = DataclassCodec(Reply)
    for value in (_reply(), _reply(previous=Limits(1, Tier.FULL), note=None, extra=("x",))):
        restored = codec.loads(codec.dumps(value))
        assert restored == value
        assert type(restored.history) is tuple
        assert type(restored.limits.tier) is Tier


def test_the_codec_keeps_the_time_zone_of_an_aware_datetime() -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    value = _reply(changed_at=datetime(2026, 1, 1, 9, 0, tzinfo=ist))
    assert DataclassCodec(Reply).loads(DataclassCodec(Reply).dumps(value)) == value


def test_the_codec_writes_stable_json() -> None:
    codec = DataclassCodec(Done)
    assert codec.dumps(Done("t-1")) == b'{"transaction_id":"t-1"}'


def test_the_codec_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="naive"):
        DataclassCodec(Reply).dumps(_reply(changed_at=datetime(2026, 1, 1)))


def test_the_codec_refuses_a_value_of_the_wrong_type() -> None:
    with pytest.raises(ValueError, match="int"):
        DataclassCodec(Reply).dumps(_reply(balance_minor=True))
    with pytest.raises(ValueError, match="Reply"):
        DataclassCodec(Reply).dumps(Done("x"))  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [WithFloat, WithDict, WithDecimal, WithUnion, WithBytes, int])
def test_the_codec_refuses_types_it_cannot_round_trip(cls: type) -> None:
    with pytest.raises(UnsupportedTypeError):
        DataclassCodec(cls)


def test_a_reply_stored_before_a_field_with_a_default_existed_still_loads() -> None:
    stored = DataclassCodec(Reply).dumps(_reply())
    trimmed = stored.replace(b',"note":"hello"', b"").replace(b'"extra":[],', b"")
    assert b"note" not in trimmed and b"extra" not in trimmed
    restored = DataclassCodec(Reply).loads(trimmed)
    assert restored.note is None and restored.extra == ()


def test_a_stored_reply_missing_a_required_field_does_not_load() -> None:
    with pytest.raises(ValueError, match="transaction_id"):
        DataclassCodec(Done).loads(b'{"other":"x"}')


# --- run_once ------------------------------------------------------------------------------


class _Uow(FakeUnitOfWork):
    def __init__(self) -> None:
        super().__init__()
        self.idempotency = FakeIdempotencyRecords()
        self.effects: list[str] = []

    def _state_holders(self) -> list[object]:
        return [self.idempotency]


CODEC = DataclassCodec(Done)


async def _transfer(uow: _Uow, key: IdempotencyKey | None, name: str = "t-1") -> Done:
    async def work() -> Done:
        uow.effects.append(name)
        return Done(name)

    async with uow:
        return await run_once(uow, key, CODEC, work)


async def test_without_a_key_the_work_runs_and_commits_every_time() -> None:
    uow = _Uow()
    assert await _transfer(uow, None) == Done("t-1")
    assert await _transfer(uow, None) == Done("t-1")
    assert uow.effects == ["t-1", "t-1"]
    assert uow.commits == 2


async def test_a_new_key_runs_the_work_once_and_stores_its_reply() -> None:
    uow, key = _Uow(), _key()
    assert await _transfer(uow, key) == Done("t-1")
    assert uow.effects == ["t-1"]
    assert uow.commits == 1
    assert uow.idempotency.reply_for(key) == CODEC.dumps(Done("t-1"))


async def test_a_retry_with_the_same_request_replays_the_stored_reply_and_commits_nothing() -> None:
    uow, key = _Uow(), _key()
    await _transfer(uow, key, "first")
    assert await _transfer(uow, key, "second") == Done("first")
    assert uow.effects == ["first"]
    assert uow.commits == 1


async def test_the_same_key_with_a_different_request_is_refused_as_reused() -> None:
    uow, request_id = _Uow(), str(uuid.uuid4())
    await _transfer(uow, _key(request_id, b"amount=100"))
    with pytest.raises(IdempotencyKeyReusedError):
        await _transfer(uow, _key(request_id, b"amount=999"))
    assert uow.effects == ["t-1"]


async def test_the_same_key_while_the_first_call_runs_is_in_use() -> None:
    uow, key = _Uow(), _key()
    uow.idempotency.hold(key)
    with pytest.raises(IdempotencyKeyInUseError):
        await _transfer(uow, key)
    assert uow.effects == []


async def test_keys_are_scoped_by_caller_and_method() -> None:
    uow, request_id = _Uow(), str(uuid.uuid4())
    fingerprint = request_fingerprint(b"same")
    await _transfer(uow, IdempotencyKey("user-1", METHOD, request_id, fingerprint), "a")
    await _transfer(uow, IdempotencyKey("user-2", METHOD, request_id, fingerprint), "b")
    await _transfer(uow, IdempotencyKey("user-1", METHOD + "2", request_id, fingerprint), "c")
    assert uow.effects == ["a", "b", "c"]


async def test_a_failed_call_stores_nothing_so_a_retry_runs_again() -> None:
    uow, key = _Uow(), _key()

    async def refuse() -> Done:
        raise IdempotencyKeyInUseError("stand-in for a domain refusal")

    with pytest.raises(IdempotencyKeyInUseError):
        async with uow:
            await run_once(uow, key, CODEC, refuse)
    assert uow.idempotency.reply_for(key) is None
    assert await _transfer(uow, key) == Done("t-1")


async def _stored(uow: _Uow, key: IdempotencyKey | None) -> Done | None:
    async with uow:
        return await stored_reply(uow, key, CODEC)


async def test_stored_reply_answers_a_committed_reply_without_running_or_committing() -> None:
    uow, key = _Uow(), _key()
    assert await _stored(uow, None) is None
    assert await _stored(uow, key) is None
    await _transfer(uow, key, "first")
    assert await _stored(uow, key) == Done("first")
    assert uow.effects == ["first"] and uow.commits == 1


async def test_stored_reply_refuses_as_the_claim_does() -> None:
    uow, request_id = _Uow(), str(uuid.uuid4())
    await _transfer(uow, _key(request_id, b"amount=100"))
    with pytest.raises(IdempotencyKeyReusedError):
        await _stored(uow, _key(request_id, b"amount=999"))
    running = _key()
    uow.idempotency.hold(running)
    with pytest.raises(IdempotencyKeyInUseError):
        await _stored(uow, running)


# --- the package surface -----------------------------------------------------------------


def test_the_package_exports_exactly_what_it_lists() -> None:
    for name in idempotency.__all__:
        assert getattr(idempotency, name) is not None
    public = {n for n in vars(idempotency) if not n.startswith("_")}
    assert set(idempotency.__all__) == public - {"codec", "model", "service", "sql"}


@pytest.mark.parametrize("module", ["model.py", "service.py", "codec.py"])
def test_the_pure_modules_do_not_import_sqlalchemy(module: str) -> None:
    source = Path(idempotency.__file__).with_name(module).read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not {name for name in imported if name.split(".")[0] in {"sqlalchemy", "grpc"}}


def test_the_retention_policy_deletes_nothing_younger_than_the_retention() -> None:
    """p0005's policy states the retention's floor itself (a shipped migration never changes):
    it must be IDEMPOTENCY_RETENTION, the shortest retention the purge accepts."""
    from vaultpay_common.idempotency.sql import (
        idempotency_retention_policy_ddl,
        idempotency_retention_policy_drop_ddl,
    )

    hours = idempotency.IDEMPOTENCY_RETENTION / timedelta(hours=1)
    assert idempotency_retention_policy_ddl() == [
        'DROP POLICY IF EXISTS "idempotency_retention" ON idempotency_records',
        'CREATE POLICY "idempotency_retention" ON idempotency_records AS RESTRICTIVE FOR DELETE'
        f" TO PUBLIC USING (created_at < now() - interval '{hours:g} hours')",
    ]
    assert idempotency_retention_policy_drop_ddl() == [idempotency_retention_policy_ddl()[0]]
