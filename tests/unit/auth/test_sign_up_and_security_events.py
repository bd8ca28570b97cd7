"""Account and staff use cases on fakes: Register is refused before it costs a hash, and the
security events of sign-in, logout, password change, refresh-token reuse, staff changes and
staff reads (of users and of the audit log) are audited with the client address."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.unit.auth.fakes import (
    PASSWORD,
    CountingHasher,
    FakeAuthUnitOfWork,
    FakeIssuer,
    FakeLoginThrottle,
    FakeSignUpThrottle,
    make_user,
)
from vaultpay_auth.domain.errors import (
    AccountDisabledError,
    EmailAlreadyRegisteredError,
    InvalidCredentialsError,
    LoginThrottledError,
    PasswordHashingBusyError,
    RefreshTokenReusedError,
    SignUpThrottledError,
)
from vaultpay_auth.domain.model import User
from vaultpay_auth.domain.policies import require_reason
from vaultpay_auth.domain.security_events import EmailFingerprint
from vaultpay_auth.service_layer.accounts import AccountService
from vaultpay_auth.service_layer.admin import AdminService
from vaultpay_auth.service_layer.ports import UserFilter
from vaultpay_common.audit import AuditEntry, AuditQuery, AuditRecord
from vaultpay_common.context import Principal, Role
from vaultpay_common.errors import ValidationError

IP = "192.0.2.10"
WRONG = "wrong password 99 x"
KEY = b"k" * 32


@dataclass
class World:
    uow: FakeAuthUnitOfWork = field(default_factory=FakeAuthUnitOfWork)
    hasher: CountingHasher = field(default_factory=CountingHasher)
    throttle: FakeLoginThrottle = field(default_factory=FakeLoginThrottle)
    sign_ups: FakeSignUpThrottle = field(default_factory=FakeSignUpThrottle)
    fingerprint: EmailFingerprint = field(default_factory=lambda: EmailFingerprint(KEY))

    def __post_init__(self) -> None:
        self.accounts = AccountService(
            lambda: self.uow,
            self.hasher,
            FakeIssuer(),
            self.throttle,
            refresh_ttl=timedelta(days=30),
            sign_up_throttle=self.sign_ups,
            fingerprint=self.fingerprint,
        )
        self.admin = AdminService(lambda: self.uow, fingerprint=self.fingerprint)

    def add_user(self, email: str = "ada@example.com", *, role: Role = Role.USER) -> User:
        user = make_user(email, role=role)
        self.uow.users.users[user.id] = user
        return user

    def only(self, action: str) -> AuditEntry:
        [entry] = self.uow.entries(action)
        return entry


def assert_no_clear_email(entry: AuditEntry, email: str) -> None:
    everything = " ".join([entry.target_id, *entry.details.keys(), *entry.details.values()])
    assert email not in everything
    # The local part as a word of its own (it may occur by chance inside a random id or a
    # hex digest: "ada" in "...-adac-...").
    assert email.split("@")[0] not in re.split(r"[^A-Za-z0-9]+", everything)
    assert PASSWORD not in everything and WRONG not in everything


# --- Register: nothing expensive before the cheap refusals ---------------------------------


async def test_a_taken_email_is_refused_before_any_hash() -> None:
    world = World()
    world.add_user("ada@example.com")
    with pytest.raises(EmailAlreadyRegisteredError):
        await world.accounts.register(" Ada@Example.COM ", PASSWORD, "Ada", IP)
    assert world.hasher.hashes == 0


async def test_the_sign_up_throttle_is_reserved_before_any_lookup_or_hash() -> None:
    world = World()
    world.sign_ups.refusal = SignUpThrottledError(retry_after_seconds=60)
    with pytest.raises(SignUpThrottledError):
        await world.accounts.register("new@example.com", PASSWORD, "New", IP)
    assert (world.hasher.hashes, world.uow.users.email_lookups) == (0, 0)


async def test_invalid_input_is_refused_before_it_counts_against_the_address() -> None:
    world = World()
    with pytest.raises(ValidationError):
        await world.accounts.register("not-an-email", PASSWORD, "New", IP)
    assert world.sign_ups.reserved == []


async def test_a_guessable_password_is_judged_after_the_throttle_and_never_hashed() -> None:
    """The estimate costs CPU (up to tens of milliseconds for some inputs): an address buys
    it only within its sign-up allowance, and a throttled address gets none (review of
    2026-12-04 night). A guessable password is refused on `password`, nothing hashed."""
    world = World()
    estimated: list[str] = []
    estimate = world.accounts._estimate

    async def counting(password: str, email: str, field: str, *, full_name: str) -> Any:
        estimated.append(password)
        return await estimate(password, email, field, full_name=full_name)

    world.accounts._estimate = counting
    world.sign_ups.refusal = SignUpThrottledError(retry_after_seconds=60)
    with pytest.raises(SignUpThrottledError):
        await world.accounts.register("new@example.com", "qwerty123456", "New", IP)
    assert estimated == []
    world.sign_ups.refusal = None
    with pytest.raises(ValidationError) as refused:
        await world.accounts.register("new@example.com", "qwerty123456", "New", IP)
    assert [v.field for v in refused.value.violations] == ["password"]
    assert (estimated, world.sign_ups.reserved, world.hasher.hashes) == (["qwerty123456"], [IP], 0)


async def test_a_sign_up_counts_against_its_address_and_hashes_at_sign_up_priority() -> None:
    world = World()
    user = await world.accounts.register("new@example.com", PASSWORD, "New", IP)
    assert world.sign_ups.reserved == [IP]
    assert world.hasher.calls == [("hash", "sign_up")]
    assert world.uow.users.users[user.id].email == "new@example.com"


async def test_sign_in_verifies_at_sign_in_priority() -> None:
    world = World()
    world.add_user("ada@example.com")
    await world.accounts.login("ada@example.com", PASSWORD, IP)
    assert world.hasher.calls == [("verify", "sign_in")]


async def test_a_sign_in_refused_for_want_of_a_worker_does_not_count_as_an_attempt() -> None:
    world = World()
    world.add_user("ada@example.com")
    world.hasher.busy = PasswordHashingBusyError(retry_after_seconds=2)
    with pytest.raises(PasswordHashingBusyError):
        await world.accounts.login("ada@example.com", WRONG, IP)
    assert world.throttle.released == [("login:ada@example.com", IP)]
    assert world.uow.audit_entries == []  # no password was checked, so none was wrong


# --- Sign-in refusals ----------------------------------------------------------------------


async def test_a_failed_login_for_an_unknown_email_records_only_a_keyed_hash() -> None:
    world = World()
    with pytest.raises(InvalidCredentialsError):
        await world.accounts.login("ghost@example.com", WRONG, IP)
    entry = world.only("user.login_failed")
    expected = EmailFingerprint(KEY)("ghost@example.com")
    assert (entry.target_type, entry.target_id, entry.actor_id) == ("email", expected, "anonymous")
    assert dict(entry.details) == {
        "reason": "invalid_credentials",
        "email_hash": expected,
        "ip": IP,
    }
    assert_no_clear_email(entry, "ghost@example.com")


async def test_the_email_hash_is_keyed() -> None:
    assert EmailFingerprint(KEY)("a@example.com") != EmailFingerprint(b"x" * 32)("a@example.com")
    assert EmailFingerprint(KEY)("a@example.com") == EmailFingerprint(KEY)("a@example.com")


async def test_a_wrong_password_for_a_known_account_targets_the_user() -> None:
    world = World()
    user = world.add_user("ada@example.com")
    with pytest.raises(InvalidCredentialsError):
        await world.accounts.login("ada@example.com", WRONG, IP)
    entry = world.only("user.login_failed")
    assert (entry.target_type, entry.target_id) == ("user", user.id)
    assert_no_clear_email(entry, "ada@example.com")


async def test_a_sign_in_to_a_deactivated_account_is_refused_and_the_refusal_still_recorded() -> (
    None
):
    world = World()
    user = world.add_user("ada@example.com")
    user.active = False
    with pytest.raises(AccountDisabledError):
        await world.accounts.login("ada@example.com", PASSWORD, IP)
    # The fake unit of work rolls back what was not committed: the row survived on its own.
    assert world.only("user.login_failed").details["reason"] == "account_disabled"
    assert world.uow.sessions.sessions == {}


async def test_only_the_first_throttled_refusal_of_a_window_is_audited() -> None:
    world = World()
    user = world.add_user("ada@example.com")
    world.throttle.refusal = LoginThrottledError(
        retry_after_seconds=60, scopes=("account",), first_refusal=True
    )
    with pytest.raises(LoginThrottledError):
        await world.accounts.login("ada@example.com", PASSWORD, IP)
    world.throttle.refusal = LoginThrottledError(retry_after_seconds=59, scopes=("account",))
    with pytest.raises(LoginThrottledError):
        await world.accounts.login("ada@example.com", PASSWORD, IP)
    entry = world.only("user.login_throttled")
    assert (entry.target_id, entry.details["scope"], entry.details["ip"]) == (
        user.id,
        "account",
        IP,
    )
    assert world.hasher.calls == []  # a throttled attempt never reaches bcrypt
    assert_no_clear_email(entry, "ada@example.com")


async def test_a_successful_login_records_no_refusal() -> None:
    world = World()
    world.add_user("ada@example.com")
    await world.accounts.login("ada@example.com", PASSWORD, IP)
    assert world.uow.committed_actions() == ["user.login"]


# --- Logout and password change ------------------------------------------------------------


async def test_logout_is_audited_with_the_session_and_address() -> None:
    world = World()
    world.add_user("ada@example.com")
    _, user = await world.accounts.login("ada@example.com", PASSWORD, IP)
    [session_id] = world.uow.sessions.sessions
    await world.accounts.logout(session_id, user_id=user.id, client_ip="198.51.100.4")
    entry = world.only("user.logout")
    assert (entry.target_id, dict(entry.details)) == (
        user.id,
        {"session_id": session_id, "ip": "198.51.100.4"},
    )
    assert world.uow.sessions.revoked == {session_id: "logout"}


async def test_a_wrong_current_password_is_audited_as_a_failed_change() -> None:
    world = World()
    user = world.add_user("ada@example.com")
    with pytest.raises(ValidationError):
        await world.accounts.change_password(user.id, "s1", WRONG, "a brand new 77 secret", IP)
    entry = world.only("user.password_change_failed")
    assert (entry.target_id, dict(entry.details)) == (
        user.id,
        {"reason": "wrong_current_password", "ip": IP},
    )


async def test_a_throttled_password_change_is_audited_once() -> None:
    world = World()
    user = world.add_user("ada@example.com")
    world.throttle.refusal = LoginThrottledError(
        retry_after_seconds=60, scopes=("account",), first_refusal=True
    )
    with pytest.raises(LoginThrottledError):
        await world.accounts.change_password(user.id, "s1", PASSWORD, "a brand new 77 secret", IP)
    assert world.only("user.password_change_failed").details["reason"] == "throttled"


# --- Staff reads -----------------------------------------------------------------------------


def staff(role: Role = Role.MODERATOR) -> Principal:
    return Principal(subject="staff-1", role=role, session_id="s-staff")


async def test_a_staff_member_reading_a_user_is_audited() -> None:
    world = World()
    user = world.add_user("ada@example.com")
    await world.admin.get_user(user.id, viewer=staff(), client_ip=IP)
    entry = world.only("user.viewed")
    assert (entry.target_id, entry.actor_id, entry.actor_role) == (user.id, "staff-1", "MODERATOR")
    assert dict(entry.details) == {"ip": IP}


async def test_a_service_looking_up_a_contact_is_not_a_staff_read() -> None:
    world = World()
    user = world.add_user("ada@example.com")
    await world.admin.get_user(user.id)
    await world.admin.get_user(user.id, viewer=Principal("svc", None, service="wallet"))
    assert world.uow.audit_entries == []


async def test_a_staff_listing_records_exactly_the_users_shown() -> None:
    world = World()
    users = [world.add_user(f"user{n}@example.com") for n in range(3)]
    page = await world.admin.list_users(
        UserFilter(role=None, active=None, email_prefix="user"),
        None,
        2,
        viewer=staff(),
        client_ip=IP,
    )
    assert len(page.items) == 2 and page.has_more
    entry = world.only("users.listed")
    assert entry.details["user_ids"] == ",".join(u.id for u in page.items)
    assert entry.details["count"] == "2"
    assert entry.details["email_prefix_hash"] == EmailFingerprint(KEY)("user")
    assert {u.id for u in users} >= set(entry.details["user_ids"].split(","))
    assert "user" not in entry.details.values()


async def test_a_login_whose_password_is_replaced_while_it_is_checked_opens_no_session() -> None:
    """Review of 2026-12-04 (third): a login that read the old hash before a password change
    committed, and opened its session after, got a session the change's revocation of every
    session could not see: a thief looping logins kept one across every change. The re-read
    under the lock compares the hash it checked."""
    world = World()
    user = world.add_user("ada@example.com")
    first_match = world.hasher.first_match

    async def changed_meanwhile(
        spellings: tuple[str, ...], password_hash: str, **kw: Any
    ) -> str | None:
        matched = await first_match(spellings, password_hash, **kw)
        world.uow.users.users[user.id].password_hash = "hashed:a new passphrase 42"
        return matched

    world.hasher.first_match = changed_meanwhile  # type: ignore[method-assign,assignment]
    with pytest.raises(InvalidCredentialsError):
        await world.accounts.login("ada@example.com", PASSWORD, IP)
    assert world.uow.sessions.sessions == {}
    assert world.only("user.login_failed").details["reason"] == "password_replaced"
    # The password was right when it was checked, which settles the reservation (in a task
    # of its own since 2026-12-05, so a caller going away cannot leave it counted); only the
    # logins racing the change are such, and each still opens nothing.
    assert world.throttle.succeeded_for == [("login:ada@example.com", IP)]


# --- Security review of 2026-12-04 (night): writes, refresh reuse, the audit log's reads ---


async def test_a_changed_password_is_audited_with_the_address() -> None:
    world = World()
    user = world.add_user("ada@example.com")
    await world.accounts.change_password(user.id, "s1", PASSWORD, "a brand new 77 secret", IP)
    entry = world.only("user.password_changed")
    assert (entry.target_id, dict(entry.details)) == (user.id, {"revoked": "0", "ip": IP})


async def test_staff_changes_of_a_user_are_audited_with_the_address() -> None:
    """Staff reads had the address; the writes they audit (role, deactivation, reactivation)
    had none."""
    world = World()
    root = world.add_user("root@example.com", role=Role.SUPER_ADMIN)
    actor = Principal(subject=root.id, role=Role.SUPER_ADMIN, session_id="s-root")
    user = world.add_user("ada@example.com")
    await world.admin.set_role(actor, user.id, Role.MODERATOR, "promo", client_ip=IP)
    await world.admin.deactivate(actor, user.id, "left the company", client_ip="198.51.100.8")
    await world.admin.reactivate(actor, user.id, "back from leave", client_ip="198.51.100.9")
    assert dict(world.only("user.role_changed").details) == {
        "old_role": "USER",
        "new_role": "MODERATOR",
        "reason": "promo",
        "ip": IP,
    }
    assert dict(world.only("user.deactivated").details) == {
        "reason": "left the company",
        "revoked_sessions": "0",
        "ip": "198.51.100.8",
    }
    assert dict(world.only("user.reactivated").details) == {
        "reason": "back from leave",
        "deactivation_reason": "left the company",
        "deactivated_by": root.id,
        "ip": "198.51.100.9",
    }


async def test_a_reused_refresh_token_is_found_by_its_user_with_the_address() -> None:
    """The row targeted the session, by "system", without an address: searching the victim's
    user id found nothing."""
    world = World()
    world.add_user("ada@example.com")
    tokens, user = await world.accounts.login("ada@example.com", PASSWORD, IP)
    [session_id] = world.uow.sessions.sessions
    await world.accounts.refresh(tokens.refresh_token, IP)
    with pytest.raises(RefreshTokenReusedError):
        await world.accounts.refresh(tokens.refresh_token, "198.51.100.66")
    entry = world.only("session.refresh_reuse_detected")
    assert (entry.target_type, entry.target_id, entry.actor_id) == ("user", user.id, "anonymous")
    assert dict(entry.details) == {"session_id": session_id, "ip": "198.51.100.66"}
    assert world.uow.sessions.revoked == {session_id: "refresh_token_reuse"}


def _record(sequence: int, action: str = "user.login", target_id: str = "u-1") -> AuditRecord:
    return AuditRecord(
        sequence=sequence,
        created_at=datetime(2026, 12, 4, 22, 0, sequence, tzinfo=UTC),
        actor_id=target_id,
        actor_role="USER",
        action=action,
        target_type="user",
        target_id=target_id,
        request_id="",
        details={"ip": "192.0.2.99"},
    )


async def test_a_page_of_the_audit_log_is_audited_with_its_filters_count_and_address() -> None:
    """ListAuthAuditEvents returns users' ids and addresses but wrote no row, while ListUsers
    does. The row commits with the read (one commit), counts the page shown, not the one more
    read to see whether another follows, and keeps only the filters set."""
    world = World()
    world.uow.records = [_record(n) for n in range(1, 5)] + [_record(5, "user.logout")]
    start = datetime(2026, 12, 4, tzinfo=UTC)
    query = AuditQuery(action="user.login", target_id="u-1", start=start)
    viewer = staff(Role.ADMIN)
    page = await world.admin.list_audit_events(query, 4, 2, viewer=viewer, client_ip=IP)
    assert [r.sequence for r in page.items] == [3, 2] and page.has_more
    entry = world.only("audit_events.listed")
    assert (entry.actor_id, entry.actor_role) == ("staff-1", "ADMIN")
    assert (entry.target_type, entry.target_id) == ("audit_events", "")
    assert dict(entry.details) == {
        "action": "user.login",
        "target_id": "u-1",
        "start_time": start.isoformat(),
        "count": "2",
        "sequences": "3,2",
        "ip": IP,
    }
    assert world.uow.commits == 1


async def test_an_empty_page_of_the_audit_log_is_audited_too() -> None:
    world = World()
    page = await world.admin.list_audit_events(
        AuditQuery(), None, 50, viewer=staff(Role.ADMIN), client_ip=IP
    )
    assert list(page.items) == [] and not page.has_more
    assert dict(world.only("audit_events.listed").details) == {
        "count": "0",
        "sequences": "",
        "ip": IP,
    }


async def test_a_password_change_is_counted_apart_from_the_emails_sign_ins() -> None:
    """Review of 2026-12-05: ChangePassword reserved on Login's counter (the email), so anyone
    who typed five wrong passwords for the email blocked the signed-in owner's change, the
    remedy, for as long as the attack went on. Its guesses (a stolen token's) have a counter
    of their own, per user."""
    world = World()
    user = world.add_user("ada@example.com")
    await world.accounts.change_password(user.id, "s1", PASSWORD, "a brand new 77 secret", IP)
    [(account, ip)] = world.throttle.reserved
    assert account != user.email and user.id in account and ip == IP
    assert world.throttle.succeeded_for == [(account, IP)]


async def test_no_sign_in_counts_on_a_password_changes_counter() -> None:
    """Review of 2026-12-05: Login takes any string as its email and counted on the bare
    string, so five Logins for "change-attempts:<user id>" (the change counter's own key)
    blocked that user's ChangePassword for the window. The two families of keys are disjoint."""
    world = World()
    user = world.add_user("ada@example.com")
    await world.accounts.change_password(user.id, "s1", PASSWORD, "a brand new 77 secret", IP)
    [(change_counter, _)] = world.throttle.reserved
    with pytest.raises(InvalidCredentialsError):
        await world.accounts.login(change_counter, WRONG, IP)
    [_, (login_counter, _)] = world.throttle.reserved
    assert login_counter != change_counter
    assert not login_counter.startswith("change-attempts:")


async def test_an_empty_current_password_is_input_not_a_counted_guess() -> None:
    world = World()
    user = world.add_user("ada@example.com")
    with pytest.raises(ValidationError) as refused:
        await world.accounts.change_password(user.id, "s1", "", "a brand new 77 secret", IP)
    assert [(v.field, v.description) for v in refused.value.violations] == [
        ("current_password", "is required")
    ]
    assert world.throttle.reserved == [] and world.hasher.calls == []
    assert world.uow.entries("user.password_change_failed") == []


@pytest.mark.parametrize(
    ("reason", "problem"),
    [
        ("fraud\u202e detected", "must not contain control or invisible formatting characters"),
        ("fraud\u2028VaultPay Security: call us", "must be one line"),
        ("fraud\nring", "must not contain control or invisible formatting characters"),
    ],
)
def test_a_staff_reason_is_one_line_people_read(reason: str, problem: str) -> None:
    """Review of 2026-12-05: DeactivateUser's and SetUserRole's reasons, shown in staff views
    and the audit log, took bidi and line-break characters that wallet's refuse."""
    with pytest.raises(ValidationError) as refused:
        require_reason(reason, required=True)
    assert [(v.field, v.description) for v in refused.value.violations] == [("reason", problem)]
    assert require_reason("  card testing from one device ", required=True) == (
        "card testing from one device"
    )
