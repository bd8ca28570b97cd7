"""Outbox messages, payload checks, retry delays and the relay's settings: no I/O."""

from __future__ import annotations

import ast
import math
import random
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

import vaultpay_common.outbox as outbox
from tests.fakes.outbox import FakeOutbox
from tests.fakes.uow import FakeUnitOfWork
from vaultpay_common.outbox import (
    DeliveryError,
    OutboxEvent,
    OutboxMessage,
    OutboxRelay,
    PermanentDeliveryError,
    backoff_delay,
    encode_payload,
)
from vaultpay_common.outbox.sql import LAST_ERROR_LIMIT, truncate_error

# --- messages and payloads -----------------------------------------------------------------


def test_a_message_needs_a_topic() -> None:
    with pytest.raises(ValueError, match="topic"):
        OutboxMessage("", {})


def test_a_payload_is_encoded_as_stable_json() -> None:
    assert encode_payload({"b": 1, "a": ["x", None, True]}) == '{"a":["x",null,true],"b":1}'


@pytest.mark.parametrize(
    "payload",
    [{"at": datetime(2026, 1, 1, tzinfo=UTC)}, {"ids": {1, 2}}, {"x": math.nan}, ["not", "map"]],
)
def test_a_payload_json_cannot_carry_is_refused(payload: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        encode_payload(payload)


def test_a_permanent_failure_is_a_delivery_error() -> None:
    assert issubclass(PermanentDeliveryError, DeliveryError)


# --- retry delays --------------------------------------------------------------------------


@pytest.mark.parametrize(("failures", "ceiling"), [(1, 1.0), (2, 2.0), (3, 4.0), (9, 256.0)])
def test_the_delay_doubles_with_each_failure_and_half_of_it_is_jitter(
    failures: int, ceiling: float
) -> None:
    def delay(rand: Callable[[], float] = random.random) -> float:
        return backoff_delay(failures, base_delay=1.0, max_delay=300.0, rand=rand)

    assert delay(lambda: 0.0) == ceiling / 2
    assert delay(lambda: 1.0) == ceiling
    assert ceiling / 2 <= delay() <= ceiling


def test_the_delay_is_capped_even_after_very_many_failures() -> None:
    for failures in (10, 100, 10_000):
        assert backoff_delay(failures, base_delay=1.0, max_delay=300.0, rand=lambda: 1.0) == 300


def test_the_delay_never_shrinks_from_one_failure_to_the_next_whatever_the_jitter() -> None:
    longest_so_far = 0.0
    for failures in range(1, 20):
        shortest = backoff_delay(failures, base_delay=0.5, max_delay=60, rand=lambda: 0.0)
        assert shortest >= longest_so_far or shortest == 30
        longest_so_far = backoff_delay(failures, base_delay=0.5, max_delay=60, rand=lambda: 1.0)


@pytest.mark.parametrize(
    ("failures", "base", "cap"), [(0, 1.0, 10.0), (1, 0.0, 10.0), (1, 5.0, 1.0)]
)
def test_nonsense_delay_settings_are_refused(failures: int, base: float, cap: float) -> None:
    with pytest.raises(ValueError, match=r"failures|base_delay"):
        backoff_delay(failures, base_delay=base, max_delay=cap)


# --- the relay's settings ------------------------------------------------------------------


async def _noop(event: OutboxEvent) -> None:
    return None


@pytest.mark.parametrize(
    "settings",
    [
        {"batch_size": 0},
        {"max_attempts": 0},
        {"base_delay": 0.0},
        {"base_delay": 10.0, "max_delay": 1.0},
        {"delivery_timeout": 60.0, "lease": 30.0},
        {"max_concurrent_deliveries": 0},
        {"release_timeout": 0.0},
    ],
)
def test_a_relay_refuses_nonsense_settings(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        OutboxRelay(cast(AsyncEngine, object()), "wallet", {"t": _noop}, **settings)


def test_a_relay_needs_its_producer() -> None:
    with pytest.raises(ValueError, match="producer"):
        OutboxRelay(cast(AsyncEngine, object()), "", {"t": _noop})


# --- the fake ------------------------------------------------------------------------------


class _Uow(FakeUnitOfWork):
    def __init__(self) -> None:
        super().__init__()
        self.outbox = FakeOutbox("wallet")

    def _state_holders(self) -> list[object]:
        return [self.outbox]


async def test_the_fake_outbox_keeps_messages_of_committed_work_only() -> None:
    uow = _Uow()
    async with uow:
        first = await uow.outbox.add(OutboxMessage("mail.send", {"to": "u1"}, key="u1"))
        await uow.commit()
    async with uow:
        await uow.outbox.add(OutboxMessage("notification.create", {"user_id": "u1"}))
    assert uow.outbox.topics() == ["mail.send"]
    assert list(uow.outbox.events) == [first]
    assert uow.outbox.of_topic("mail.send") == [OutboxMessage("mail.send", {"to": "u1"}, "u1")]


async def test_the_fake_outbox_refuses_what_the_table_could_not_store() -> None:
    with pytest.raises(TypeError):
        await FakeOutbox().add(OutboxMessage("mail.send", {"when": datetime.now(UTC)}))


# --- the package surface -------------------------------------------------------------------


def test_the_package_exports_exactly_what_it_lists() -> None:
    for name in outbox.__all__:
        assert getattr(outbox, name) is not None
    public = {n for n in vars(outbox) if not n.startswith("_")}
    assert set(outbox.__all__) == public - {"backoff", "model", "relay", "relay_sql", "sql"}


@pytest.mark.parametrize("module", ["model.py", "backoff.py"])
def test_the_pure_modules_do_not_import_sqlalchemy(module: str) -> None:
    source = Path(outbox.__file__).with_name(module).read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not {name for name in imported if name.split(".")[0] in {"sqlalchemy", "grpc"}}


def test_an_error_is_cut_to_what_last_error_can_store() -> None:
    assert truncate_error("refused \x00 \ud800") == "refused \ufffd ?"
    long = truncate_error("x" * (LAST_ERROR_LIMIT + 50))
    assert len(long) == LAST_ERROR_LIMIT and long.endswith("…")
    assert truncate_error("fine") == "fine"
