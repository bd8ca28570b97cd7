"""Key rotation on fakes: new writes use the new key at once, batches re-wrap the rest, a retry
does not rotate twice, an interrupted rotation resumes, and a key is dropped only when unused."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.fakes.kyc import FIRST_KEY_ID
from tests.unit.kyc.kyc_world import PDF, World, key
from vaultpay_common.context import DEADLINE, Role
from vaultpay_common.idempotency import IdempotencyKey
from vaultpay_kyc.domain.crypto import Field, SubmissionRef, new_key_id
from vaultpay_kyc.domain.documents import DocumentType
from vaultpay_kyc.service_layer.commands import RotateKycKey, RotationProgress
from vaultpay_kyc.service_layer.ports import Rotation
from vaultpay_kyc.service_layer.rotation import (
    AnotherRotationUnfinishedError,
    KeyRotationIncompleteError,
)

USERS = ["alice", "bob", "carol"]
NUMBERS = ["ABCPE1234F", "ZZZPZ9999Z", "YYYPY8888Y"]


def _by_root(idempotency: IdempotencyKey | None) -> RotateKycKey:
    """A rotation asked for through AdminRotateKycKey by the super_admin "root"."""
    return RotateKycKey(idempotency, "root", Role.SUPER_ADMIN, "203.0.113.9")


@pytest.fixture
async def world() -> World:
    world = World()
    for user, number in zip(USERS, NUMBERS, strict=True):
        await world.submit(user, number, file=PDF + number.encode(), content_type="application/pdf")
    return world


def _keys_in_use(world: World) -> set[str]:
    return {s.wrapped_key.key_id for s in world.uow.submissions.secrets.values()}


def _all_open(world: World) -> dict[str, tuple[bytes, bytes]]:
    opened = {}
    for sid, sealed in world.uow.submissions.secrets.items():
        row = world.uow.submissions.rows[sid]
        dek = world.cipher.unwrap(SubmissionRef(sid, row.user_id), sealed.wrapped_key)
        assert sealed.sealed_file is not None
        opened[sid] = (
            dek.open(Field.DOCUMENT_NUMBER, sealed.sealed_number),
            dek.open(Field.DOCUMENT_FILE, sealed.sealed_file),
        )
    return opened


def _break_one_data_key(world: World) -> str:
    """Alters the first submission's wrapped data key so that it no longer unwraps; its id."""
    secrets = world.uow.submissions.secrets
    broken = sorted(secrets)[0]
    blob = bytearray(secrets[broken].wrapped_key.blob)
    blob[-1] ^= 1
    secrets[broken] = dataclasses.replace(
        secrets[broken],
        wrapped_key=dataclasses.replace(secrets[broken].wrapped_key, blob=bytes(blob)),
    )
    return broken


async def test_a_rotation_rewraps_every_row_in_batches_and_drops_the_old_key(world: World) -> None:
    before = _all_open(world)
    sealed_before = {sid: s.sealed_file for sid, s in world.uow.submissions.secrets.items()}
    seen: list[RotationProgress] = []
    outcome = await world.rotation.rotate(_by_root(key("root")), seen.append)
    assert outcome.finished
    assert outcome.previous_key_id == FIRST_KEY_ID
    assert outcome.reencrypted_count == 3
    assert outcome.dropped_key_ids == (FIRST_KEY_ID,)
    assert _keys_in_use(world) == {outcome.key_id}
    assert world.uow.keys.states == {outcome.key_id: "ACTIVE"}
    assert _all_open(world) == before
    # Only the data keys moved: the sealed files are byte for byte the same.
    assert {sid: s.sealed_file for sid, s in world.uow.submissions.secrets.items()} == sealed_before
    # Batches of 2; the empty check after the last one repeats its state and is not reported.
    assert seen == [RotationProgress(2, 1), RotationProgress(3, 0)]
    actions = [e.action for e in world.uow.audit_entries]
    assert actions[-2:] == ["kyc.key_rotation_started", "kyc.key_rotated"]
    assert world.uow.audit_entries[-1].details["reencrypted_count"] == "3"


async def test_new_writes_use_the_new_key_as_soon_as_the_rotation_started(world: World) -> None:
    started = await world.rotation._start(world.uow, _by_root(None))
    submission = await world.submit("mod", "QQQPQ1111Q")
    assert submission.key_id == started.key_id
    assert world.uow.submissions.secrets[submission.id].wrapped_key.key_id == started.key_id
    outcome = await world.rotation.complete(started.rotation_id)
    assert outcome.reencrypted_count == 3  # the new row needed no re-wrap


async def test_a_retry_with_the_same_request_id_does_not_rotate_twice(world: World) -> None:
    k = key("root")
    first = await world.rotation.rotate(_by_root(k))
    again = await world.rotation.rotate(_by_root(k))
    assert (again.key_id, again.previous_key_id, again.reencrypted_count) == (
        first.key_id,
        first.previous_key_id,
        first.reencrypted_count,
    )
    assert len(world.uow.keys.rotations) == 1
    assert list(world.uow.keys.states) == [first.key_id]
    second = await world.rotation.rotate(_by_root(key("root")))
    assert second.previous_key_id == first.key_id
    assert second.key_id != first.key_id


async def test_an_interrupted_rotation_resumes_where_it_stopped(world: World) -> None:
    started = await world.rotation._start(world.uow, _by_root(None))
    world.uow.commits += 1
    await world.rotation._sweep_batch(started.rotation_id, set())  # then the process died
    assert len(_keys_in_use(world)) == 2
    outcome = await world.rotation.resume_unfinished()
    assert outcome is not None and outcome.finished
    assert outcome.reencrypted_count == 3
    assert _keys_in_use(world) == {started.key_id}
    assert await world.rotation.resume_unfinished() is None


async def test_rows_held_by_others_are_waited_for_then_reported_unfinished(world: World) -> None:
    held = sorted(world.uow.submissions.rows)[0]
    world.uow.keys.locked.add(held)
    seen: list[RotationProgress] = []
    with pytest.raises(KeyRotationIncompleteError):
        await world.rotation.rotate(_by_root(key("root")), seen.append)
    assert world.sleeps  # it polled instead of giving up at once
    assert seen == [RotationProgress(2, 1)]  # each poll found the same state: told once
    assert world.uow.submissions.secrets[held].wrapped_key.key_id == FIRST_KEY_ID
    assert FIRST_KEY_ID in world.uow.keys.states  # still used: not dropped
    world.uow.keys.locked.clear()
    outcome = await world.rotation.resume_unfinished()
    assert outcome is not None and outcome.finished
    assert FIRST_KEY_ID not in world.uow.keys.states


async def test_a_drop_that_races_a_late_writer_sweeps_again(world: World) -> None:
    world.uow.keys.fail_next_drop()
    outcome = await world.rotation.rotate(_by_root(key("root")))
    assert outcome.finished
    assert world.uow.keys.states == {outcome.key_id: "ACTIVE"}


async def test_a_row_that_does_not_unwrap_keeps_its_key_and_the_rest_moves_on(
    world: World,
) -> None:
    _break_one_data_key(world)
    outcome = await world.rotation.rotate(_by_root(key("root")))
    assert outcome.finished and outcome.reencrypted_count == 2
    assert world.uow.keys.states[FIRST_KEY_ID] == "RETIRING"
    assert world.uow.audit_entries[-1].details["keys_kept_for_unreadable_rows"] == FIRST_KEY_ID


async def test_submissions_keep_working_between_batches(world: World) -> None:
    """A submission and a read between two batches of a rotation both succeed."""
    started = await world.rotation._start(world.uow, _by_root(None))
    await world.rotation._sweep_batch(started.rotation_id, set())
    newcomer = await world.submit("mod", "QQQPQ1111Q", document_type=DocumentType.PAN)
    for sid in world.uow.submissions.rows:
        details = await world.view(sid)
        assert details.document_number
    outcome = await world.rotation.complete(started.rotation_id)
    assert outcome.finished
    assert world.uow.submissions.rows[newcomer.id].key_id == started.key_id


async def test_a_rotation_started_as_another_finishes_has_its_rows_rewrapped_before_either_ends(
    world: World,
) -> None:
    """Review of 2026-12-04 (third): a rotation that finished with an unreadable row left (so
    its old key stays) marked every unfinished rotation finished, a newer one too, whose rows
    were still on the key it retired: had that one's process died, nothing resumed it. Now a
    readable row on a retiring key keeps the finishing rotation sweeping, and only rotations
    up to the key it swept to are finished."""
    broken = _break_one_data_key(world)
    keys = world.uow.keys
    drop = keys.drop_unused_keys
    newer = new_key_id()

    async def another_rotation_starts_meanwhile() -> list[str]:
        # As `rotate` starts one, in another process, just as the first one finishes.
        if newer not in keys.states:
            now = world.clock.now() + timedelta(seconds=1)
            previous = await keys.activate(newer, now)
            await keys.add_rotation(Rotation("the-newer", previous, newer, "root", now))
        return await drop()

    keys.drop_unused_keys = another_rotation_starts_meanwhile  # type: ignore[method-assign]
    outcome = await world.rotation.rotate(_by_root(key("root")))
    assert outcome.finished
    # Every readable row reached the newest key before any rotation was marked finished.
    now_held = world.uow.submissions.secrets  # the fake unit of work swaps its dicts
    readable = {sid: s.wrapped_key.key_id for sid, s in now_held.items() if sid != broken}
    assert set(readable.values()) == {newer}
    assert keys.rotations["the-newer"].finished


async def test_a_rotation_started_after_anothers_last_count_is_left_to_finish_itself(
    world: World,
) -> None:
    """The newer rotation commits after the finishing one counted no readable row left, just
    before it marks rotations finished: it marks only those up to the key it swept to."""
    _break_one_data_key(world)
    keys = world.uow.keys
    finish = keys.finish_rotations
    newer = new_key_id()

    async def another_rotation_commits_just_before(
        now: datetime, *, through_key: str
    ) -> list[Rotation]:
        # After `_finish` read the active key and counted no readable row left.
        if newer not in keys.states:
            started = world.clock.now() + timedelta(seconds=1)
            previous = await keys.activate(newer, started)
            await keys.add_rotation(Rotation("the-newer", previous, newer, "root", started))
        return await finish(now, through_key=through_key)

    keys.finish_rotations = another_rotation_commits_just_before  # type: ignore[method-assign]
    outcome = await world.rotation.rotate(_by_root(key("root")))
    assert outcome.finished
    assert not keys.rotations["the-newer"].finished  # its own process (or resume) ends it
    resumed = await world.rotation.resume_unfinished()
    assert resumed is not None and resumed.finished and resumed.key_id == newer


async def test_a_rotation_records_where_it_was_asked_from(world: World) -> None:
    """Security review of 2026-12-04 (night): AdminRotateKycKey's row had no client address.
    The RPC's row names the caller's address; the CLI's, which has none, says `via: cli`
    (as auth's CLI rows do) with its operator as the actor."""
    await world.rotation.rotate(_by_root(key("root")))
    await world.rotation.rotate(RotateKycKey(key("cli"), "operator:ops"))
    rpc, cli = [e for e in world.uow.audit_entries if e.action == "kyc.key_rotation_started"]
    assert (rpc.actor_id, rpc.actor_role) == ("root", "SUPER_ADMIN")
    assert (rpc.details["ip"], "via" in rpc.details) == ("203.0.113.9", False)
    assert (cli.actor_id, cli.actor_role) == ("operator:ops", "")
    assert (cli.details["via"], "ip" in cli.details) == ("cli", False)


async def test_a_rotation_records_who_started_it_through_the_rpc_and_the_cli(
    world: World,
) -> None:
    """Review of kyc (item 4): AdminRotateKycKey recorded `started_by = ''`, only the CLI
    named its operator. The staff member's user id is recorded now, as the CLI's operator."""
    rpc = await world.rotation.rotate(_by_root(key("root")))
    cli = await world.rotation.rotate(RotateKycKey(key("cli"), "operator:ops"))
    started_by = {r.to_key_id: r.started_by for r in world.uow.keys.rotations.values()}
    assert started_by == {rpc.key_id: "root", cli.key_id: "operator:ops"}


async def test_a_sweep_that_makes_progress_still_answers_within_the_callers_deadline(
    world: World,
) -> None:
    """Review of 2026-12-05: the deadline was looked at only after a batch that re-wrapped
    nothing: a long productive sweep was cut off by the gateway (504) where the contract
    promises KYC_KEY_ROTATION_INCOMPLETE. Each batch here takes 2 s; the call has 5 s."""
    sweep = world.rotation._sweep_batch

    async def slow_batch(rotation_id: str, unreadable: set[str]) -> tuple[int, int]:
        world.clock.advance(timedelta(seconds=2))
        return await sweep(rotation_id, unreadable)

    world.rotation._sweep_batch = slow_batch  # type: ignore[method-assign]
    world.rotation._batch = 1  # three batches for the three rows
    token = DEADLINE.set(time.monotonic() + 5)
    try:
        with pytest.raises(KeyRotationIncompleteError):
            await world.rotation.rotate(_by_root(key("root")))
    finally:
        DEADLINE.reset(token)
    outcome = await world.rotation.resume_unfinished()  # the background job ends it
    assert outcome is not None and outcome.finished


async def test_a_sweep_that_re_wrapped_the_last_rows_finishes_even_past_the_deadline(
    world: World,
) -> None:
    """Review of the change above: a batch that re-wrapped the last rows after the hard stop
    answered KYC_KEY_ROTATION_INCOMPLETE, every row re-wrapped and the old key kept."""
    world.rotation._batch = 10  # one batch takes every row
    token = DEADLINE.set(time.monotonic() + 1.5)  # within the margin: the stop is now
    try:
        outcome = await world.rotation.rotate(_by_root(key("root")))
    finally:
        DEADLINE.reset(token)
    assert outcome.finished and outcome.dropped_key_ids == (FIRST_KEY_ID,)


async def test_a_caller_without_a_deadline_is_answered_within_the_rpcs_own_bound(
    world: World,
) -> None:
    """A JSON call through the gateway carries no grpc-timeout (the gateway ends it at 15 s):
    without a bound of its own the sweep ran on and the caller got a 504. The RPC passes its
    own (`answer_within`); the CLI passes none and sweeps to the end."""
    sweep = world.rotation._sweep_batch

    async def slow_batch(rotation_id: str, unreadable: set[str]) -> tuple[int, int]:
        world.clock.advance(timedelta(seconds=2))
        return await sweep(rotation_id, unreadable)

    world.rotation._sweep_batch = slow_batch  # type: ignore[method-assign]
    world.rotation._batch = 1
    with pytest.raises(KeyRotationIncompleteError):
        await world.rotation.rotate(_by_root(key("root")), answer_within=5.0)
    outcome = await world.rotation.resume_unfinished()  # no bound: to the end
    assert outcome is not None and outcome.finished


async def test_a_long_sweep_still_waits_for_a_row_held_a_moment(world: World) -> None:
    """Review of 2026-12-05 (helper 291): the wait for held rows counted from the call's
    start, so a sweep that had run longer than it (a large table) gave up at once, with no
    poll, on a row an approval held for a few milliseconds: the CLI exited 3, "rows are still
    waiting", for a rotation a moment from its end."""
    sweep = world.rotation._sweep_batch
    held = sorted(world.uow.submissions.rows)[-1]
    world.uow.keys.locked.add(held)
    batches = [0]

    async def first_batch_slow(rotation_id: str, unreadable: set[str]) -> tuple[int, int]:
        batches[0] += 1
        if batches[0] == 1:
            world.clock.advance(timedelta(seconds=40))  # past the 30 s settle time
        if batches[0] == 3:
            world.uow.keys.locked.clear()  # the approval commits: the row is free
        return await sweep(rotation_id, unreadable)

    world.rotation._sweep_batch = first_batch_slow  # type: ignore[method-assign]
    outcome = await world.rotation.rotate(_by_root(key("root")))
    assert outcome.finished
    assert world.sleeps  # it polled for the held row instead of giving up


async def test_the_clis_id_is_refused_over_an_unfinished_rotation_decided_under_the_lock(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of 2026-12-05: `rotate-key --request-id` first looked for an unfinished rotation
    in a transaction of its own, so one committed between the look and the start was missed
    and a second key activated over it. The look is now in the start's transaction, after the
    activation's lock, and a refusal stores nothing under the id."""
    async with world.uow as uow:
        await world.rotation._start(uow, _by_root(None))  # an admin's, through the API
        await uow.commit()
    looked_after_lock: list[int] = []
    keys_type = type(world.uow.keys)
    read_unfinished = keys_type.unfinished_rotation

    async def unfinished(self: Any) -> Rotation | None:
        looked_after_lock.append(self.activation_locks)
        return await read_unfinished(self)

    monkeypatch.setattr(keys_type, "unfinished_rotation", unfinished)
    states = dict(world.uow.keys.states)
    cli_key = key("cli")
    with pytest.raises(AnotherRotationUnfinishedError):
        await world.rotation.resume_or_rotate(RotateKycKey(cli_key, "operator:ops"))
    assert looked_after_lock == [1]  # read once, with the activation's lock held
    assert world.uow.keys.states == states  # no new key
    finished = await world.rotation.resume_unfinished()
    assert finished is not None and finished.finished
    # Nothing was stored under the id: once nothing is unfinished, it starts a rotation.
    outcome = await world.rotation.resume_or_rotate(RotateKycKey(cli_key, "operator:ops"))
    assert outcome.finished and outcome.key_id not in states
