"""The decrypted view lists only the duplicates its viewer could open themselves (users they
outrank, a super_admin anyone's; never their own) and only counts the others. Before, a
moderator got an admin's submission id among the duplicates of a user's document, and with it
(the queue maps ids to users) the admin's full number, which opening the admin's submission
refuses them. Owners are ranked for the 10 oldest duplicates at most (a question to auth
each); the rest, and any owner auth cannot rank, are counted."""

from __future__ import annotations

import pytest

from tests.unit.kyc.kyc_world import FakeOwnerStandings, World, key
from vaultpay_common.context import Role
from vaultpay_common.errors import UnavailableError
from vaultpay_kyc.domain.model import Submission
from vaultpay_kyc.domain.staff_reads import StaffViewer
from vaultpay_kyc.service_layer.commands import RejectKyc
from vaultpay_kyc.service_layer.review import DUPLICATES_CHECKED

NUMBER = "ABCPE1234F"


async def _by(world: World, user: str, role: Role = Role.USER) -> Submission:
    world.wallets.users.add(user)
    if role is not Role.USER:
        world.roles.roles[user] = role
    return await world.submit(user, NUMBER)


async def _shared_document(world: World) -> dict[str, str]:
    """The same document from a user, a moderator, an admin and a super_admin: their ids."""
    return {
        "user": (await _by(world, "alice")).id,
        "moderator": (await _by(world, "mod-2", Role.MODERATOR)).id,
        "admin": (await _by(world, "boss", Role.ADMIN)).id,
        "super_admin": (await _by(world, "root-2", Role.SUPER_ADMIN)).id,
    }


@pytest.mark.parametrize(
    ("viewer_role", "listed"),
    [
        (Role.MODERATOR, ["user"]),
        (Role.ADMIN, ["user", "moderator"]),
        (Role.SUPER_ADMIN, ["user", "moderator", "admin", "super_admin"]),
    ],
    ids=["moderator", "admin", "super_admin"],
)
async def test_a_viewer_is_listed_only_the_duplicates_they_could_open(
    viewer_role: Role, listed: list[str]
) -> None:
    world = World()
    ids = await _shared_document(world)
    bob = await _by(world, "bob")  # the submission viewed
    world.roles.asked.clear()
    details = await world.view(bob.id, "viewer", role=viewer_role)
    assert list(details.duplicate_submission_ids) == [ids[who] for who in listed]
    assert details.hidden_duplicate_count == 4 - len(listed)
    assert details.possible_duplicate
    # The view's audit row says how many were listed and how many only counted.
    entry = world.uow.audit_entries[-1]
    assert (entry.details["possible_duplicates"], entry.details["hidden_duplicates"]) == (
        str(len(listed)),
        str(4 - len(listed)),
    )
    if viewer_role is Role.SUPER_ADMIN:  # outranks anyone: auth is not asked
        assert world.roles.asked == []


async def test_a_staff_members_view_of_their_own_submission_lists_only_whom_they_outrank() -> None:
    world = World()
    alice = await _by(world, "alice")
    await _by(world, "boss", Role.ADMIN)
    mine = await _by(world, "mod", Role.MODERATOR)
    details = await world.view(mine.id, "mod", role=Role.MODERATOR)
    assert details.duplicate_submission_ids == (alice.id,)
    assert details.hidden_duplicate_count == 1


async def test_the_viewers_own_submission_is_counted_not_listed() -> None:
    world = World()
    await _by(world, "root", Role.SUPER_ADMIN)
    bob = await _by(world, "bob")
    details = await world.view(bob.id, "root", role=Role.SUPER_ADMIN)
    assert (details.duplicate_submission_ids, details.hidden_duplicate_count) == ((), 1)


async def test_only_the_oldest_duplicates_are_ranked_the_rest_counted() -> None:
    world = World()
    others = [(await _by(world, f"user-{n:02}")).id for n in range(DUPLICATES_CHECKED + 3)]
    bob = await _by(world, "bob")
    world.roles.asked.clear()
    details = await world.view(bob.id, "mod", role=Role.MODERATOR)
    assert list(details.duplicate_submission_ids) == others[:DUPLICATES_CHECKED]
    assert details.hidden_duplicate_count == 3
    # The viewed submission's owner (the view's rank rule), then each ranked duplicate's.
    assert world.roles.asked[0] == "bob"
    assert sorted(world.roles.asked[1:]) == [f"user-{n:02}" for n in range(DUPLICATES_CHECKED)]


class _Unrankable(FakeOwnerStandings):
    """auth answers about everyone but the users in `unknown` (as if down for them)."""

    def __init__(self) -> None:
        super().__init__()
        self.unknown: set[str] = set()

    async def role_of(self, user_id: str) -> Role:
        role = await super().role_of(user_id)
        if user_id in self.unknown:
            raise UnavailableError("auth cannot tell")
        return role


async def test_a_duplicate_whose_owner_auth_cannot_rank_is_counted_not_listed() -> None:
    roles = _Unrankable()
    world = World(roles=roles)
    alice = await _by(world, "alice")
    await _by(world, "carol")
    bob = await _by(world, "bob")
    roles.unknown.add("carol")
    details = await world.view(bob.id, "mod", role=Role.MODERATOR)
    assert (details.duplicate_submission_ids, details.hidden_duplicate_count) == ((alice.id,), 1)


async def test_no_duplicate_nothing_listed_nor_counted() -> None:
    world = World()
    bob = await _by(world, "bob")
    details = await world.review.view(bob.id, viewer=StaffViewer("mod", Role.MODERATOR))
    assert (details.duplicate_submission_ids, details.hidden_duplicate_count) == ((), 0)
    assert not details.possible_duplicate


async def test_one_owners_resubmissions_do_not_crowd_out_the_others() -> None:
    """Review of the change: the 10 oldest duplicate *rows* were checked, so an impostor who
    was rejected and resubmitted ten times filled the list, and newer owners of the same
    number were only counted, a super_admin's view included. The first distinct owners are
    checked, each with all their rows; a super_admin's every owner."""
    world = World()
    impostor = []
    for _ in range(DUPLICATES_CHECKED):
        mine = await _by(world, "fraud")
        impostor.append(mine.id)
        await world.review.reject(
            RejectKyc("mod", Role.MODERATOR, mine.id, "not yours", key("mod"))
        )
    later = [(await _by(world, f"ring-{n}")).id for n in range(3)]
    bob = await _by(world, "bob")
    for role in (Role.MODERATOR, Role.SUPER_ADMIN):
        details = await world.view(bob.id, "viewer", role=role)
        assert list(details.duplicate_submission_ids) == impostor + later, role
        assert details.hidden_duplicate_count == 0
