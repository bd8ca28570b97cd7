"""IP-trust use cases on fakes: check, mail window, confirm, list, revoke, fail-open."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta

import pytest

from tests.unit.wallet.ip_trust_world import IP, KEY, OTHER, USER, Env
from vaultpay_common.errors import ValidationError
from vaultpay_common.idempotency.model import IdempotencyKey
from vaultpay_wallet.domain.ip_trust import (
    IpConfirmationTokenInvalidError,
    IpHasher,
    TrustedIpNotFoundError,
)
from vaultpay_wallet.domain.notifications import NotificationKind
from vaultpay_wallet.service_layer.ip_trust import (
    CheckIpTrust,
    ConfirmIp,
    ListTrustedIps,
    RevokeTrustedIp,
)


@pytest.fixture
def env() -> Env:
    return Env()


def _key(request_id: str | None = None, caller: str = USER) -> IdempotencyKey:
    return IdempotencyKey(caller, "/m", request_id or str(uuid.uuid4()), "0" * 64)


async def test_an_unknown_ip_is_not_trusted_and_one_sealed_token_is_mailed(env: Env) -> None:
    result = await env.check()
    assert (result.trusted, result.confirmation_sent, result.failed_open) == (False, True, False)
    [mail] = env.mails()
    assert mail["user_id"] == USER and mail["template"] == "ip_confirmation"
    token = env.last_token()
    assert token.startswith("vpip_")
    everything = json.dumps([dict(m.payload) for m in env.uow.outbox.messages])
    assert token not in everything and IP not in everything
    [pending] = env.uow.ip_tokens.rows.values()
    assert pending.token_hash != token and token not in pending.token_hash


async def test_a_second_check_in_the_window_mails_nothing(env: Env) -> None:
    await env.check()
    env.clock.advance(timedelta(minutes=29))
    again = await env.check()
    assert (again.trusted, again.confirmation_sent) == (False, False)
    assert len(env.mails()) == 1


async def test_a_retry_of_the_same_check_mails_nothing_and_answers_the_same(env: Env) -> None:
    request_id = str(uuid.uuid4())
    first = await env.check(request_id=request_id)
    retry = await env.check(request_id=request_id)
    assert first == retry
    assert len(env.mails()) == 1


async def test_after_the_window_a_new_token_is_mailed(env: Env) -> None:
    await env.check()
    env.clock.advance(timedelta(minutes=30))
    assert (await env.check()).confirmation_sent
    assert len(env.mails()) == 2


async def test_the_window_is_per_address_and_per_user(env: Env) -> None:
    await env.check()
    assert (await env.check(ip="198.51.100.9")).confirmation_sent
    assert (await env.check(user=OTHER)).confirmation_sent


async def test_confirming_trusts_the_ip_for_30_days(env: Env) -> None:
    await env.check()
    confirmed = await env.service.confirm_ip(ConfirmIp(env.last_token()))
    assert confirmed.user_id == USER
    assert confirmed.trusted_ip.ip_hash == IpHasher(KEY).hash(IP)[:16]
    assert confirmed.trusted_ip.expires_at == env.clock.now() + timedelta(days=30)
    result = await env.check(ip="::ffff:" + IP)
    assert (result.trusted, result.confirmation_sent) == (True, False)
    env.clock.advance(timedelta(days=30))
    env.cache.entries.clear()
    assert not (await env.check()).trusted


async def test_confirming_writes_an_audit_row_and_a_security_notification_without_the_ip(
    env: Env,
) -> None:
    ip_hash = await env.trust()
    [entry] = env.uow.audit_entries
    assert entry.action == "ip_trust.confirmed" and entry.target_id == USER
    assert entry.details["ip_hash"] == ip_hash
    assert IP not in json.dumps(dict(entry.details))
    [note] = env.uow.notifications.all(USER)
    assert note.kind is NotificationKind.SECURITY
    assert IP not in note.body and ip_hash in note.body


async def test_a_token_works_once(env: Env) -> None:
    await env.check()
    token = env.last_token()
    await env.service.confirm_ip(ConfirmIp(token))
    with pytest.raises(IpConfirmationTokenInvalidError):
        await env.service.confirm_ip(ConfirmIp(token))


async def test_a_token_expires_after_30_minutes(env: Env) -> None:
    await env.check()
    env.clock.advance(timedelta(minutes=30, seconds=1))
    with pytest.raises(IpConfirmationTokenInvalidError):
        await env.service.confirm_ip(ConfirmIp(env.last_token()))
    assert env.uow.trusted_ips.rows == {}


async def test_an_unknown_token_is_invalid_and_writes_nothing(env: Env) -> None:
    with pytest.raises(IpConfirmationTokenInvalidError):
        await env.service.confirm_ip(ConfirmIp("vpip_" + "x" * 43))
    assert env.uow.commits == 0


async def test_a_confirmation_retried_with_its_request_id_replays_the_answer(env: Env) -> None:
    await env.check()
    token, key = env.last_token(), _key(caller="anonymous")
    first = await env.service.confirm_ip(ConfirmIp(token, key))
    assert await env.service.confirm_ip(ConfirmIp(token, key)) == first
    assert len(env.uow.audit_entries) == 1


async def test_reconfirming_renews_and_keeps_first_seen(env: Env) -> None:
    await env.trust()
    first_seen = env.clock.now()
    env.clock.advance(timedelta(days=31))
    env.cache.entries.clear()
    await env.check()
    renewed = await env.service.confirm_ip(ConfirmIp(env.last_token()))
    assert renewed.trusted_ip.first_seen_at == first_seen
    assert renewed.trusted_ip.expires_at == env.clock.now() + timedelta(days=30)


async def test_a_trusted_check_moves_last_seen_and_fills_the_cache(env: Env) -> None:
    await env.trust()
    env.clock.advance(timedelta(hours=1))
    assert (await env.check()).trusted
    [row] = env.uow.trusted_ips.rows.values()
    assert row.last_seen_at == env.clock.now()
    assert env.cache.entries[(USER, row.ip_hash)] == row.expires_at


async def test_a_cache_hit_answers_without_the_database(env: Env) -> None:
    await env.trust()
    await env.check()
    commits = env.uow.commits
    assert (await env.check()).trusted
    assert env.uow.commits == commits


async def test_when_the_cache_is_down_the_check_fails_open_and_warns(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    env.cache.down = True
    with caplog.at_level(logging.WARNING):
        result = await env.check()
    assert (result.trusted, result.confirmation_sent, result.failed_open) == (True, False, True)
    assert env.mails() == [] and env.uow.commits == 0
    assert "failing open" in caplog.text and IP not in caplog.text


async def test_a_movements_address_skips_the_cache_and_never_fails_open(
    env: Env,
) -> None:
    # A movement's PIN settlement did not find the address trusted in PostgreSQL: neither an
    # unreachable cache nor a stale entry may turn that into a pass.
    env.cache.down = True
    result = await env.service.check_ip_trust(
        CheckIpTrust(str(uuid.uuid4()), USER, IP), movement=True
    )
    assert (result.trusted, result.confirmation_sent, result.failed_open) == (False, True, False)
    assert len(env.mails()) == 1


async def test_bad_check_input_names_the_field_and_writes_nothing(env: Env) -> None:
    for command, field in [
        (CheckIpTrust("nope", USER, IP), "request_id"),
        (CheckIpTrust(str(uuid.uuid4()), "nope", IP), "user_id"),
        (CheckIpTrust(str(uuid.uuid4()), USER, "999.1.1.1"), "client_ip"),
        (CheckIpTrust(str(uuid.uuid4()), USER, ""), "client_ip"),
    ]:
        with pytest.raises(ValidationError) as caught:
            await env.service.check_ip_trust(command)
        assert caught.value.violations[0].field == field
    assert env.uow.commits == 0 and env.mails() == []


async def test_listing_shows_own_ips_most_recently_seen_first_in_pages(env: Env) -> None:
    hashes = []
    for n in range(5):
        hashes.append(await env.trust(ip=f"198.51.100.{n}"))
        env.clock.advance(timedelta(minutes=1))
    await env.trust(ip="198.51.100.77", user=OTHER)
    first = await env.service.list_trusted_ips(ListTrustedIps(USER, page_size=2))
    assert [i.ip_hash for i in first.items] == hashes[::-1][:2] and first.has_more
    seen = [i.ip_hash for i in first.items]
    cursor = first.next_cursor
    while cursor is not None:
        page = await env.service.list_trusted_ips(ListTrustedIps(USER, 2, cursor))
        seen += [i.ip_hash for i in page.items]
        cursor = page.next_cursor
    assert seen == hashes[::-1]


async def test_listing_validates_page_size(env: Env) -> None:
    with pytest.raises(ValidationError) as caught:
        await env.service.list_trusted_ips(ListTrustedIps(USER, page_size=-1))
    assert caught.value.violations[0].field == "page_size"


async def test_revoking_untrusts_the_ip_audits_notifies_and_drops_the_cache(env: Env) -> None:
    ip_hash = await env.trust()
    await env.check()
    assert env.cache.entries
    revoked = await env.service.revoke_trusted_ip(RevokeTrustedIp(USER, ip_hash.upper()))
    assert revoked.trusted_ip.ip_hash == ip_hash
    assert env.cache.entries == {}
    assert [e.action for e in env.uow.audit_entries] == ["ip_trust.confirmed", "ip_trust.revoked"]
    assert len(env.uow.notifications.all(USER)) == 2
    after = await env.check()
    assert (after.trusted, after.confirmation_sent) == (False, True)
    listed = await env.service.list_trusted_ips(ListTrustedIps(USER))
    assert listed.items == ()


async def test_revoking_another_users_hash_is_not_found(env: Env) -> None:
    ip_hash = await env.trust(user=OTHER)
    with pytest.raises(TrustedIpNotFoundError):
        await env.service.revoke_trusted_ip(RevokeTrustedIp(USER, ip_hash))
    with pytest.raises(TrustedIpNotFoundError):
        await env.service.revoke_trusted_ip(RevokeTrustedIp(USER, "0" * 16))
    assert len(env.uow.trusted_ips.rows) == 1


async def test_a_revoke_retried_with_its_request_id_replays(env: Env) -> None:
    ip_hash = await env.trust()
    key = _key()
    first = await env.service.revoke_trusted_ip(RevokeTrustedIp(USER, ip_hash, key))
    assert await env.service.revoke_trusted_ip(RevokeTrustedIp(USER, ip_hash, key)) == first


async def test_revoking_with_a_malformed_hash_names_the_field(env: Env) -> None:
    with pytest.raises(ValidationError) as caught:
        await env.service.revoke_trusted_ip(RevokeTrustedIp(USER, "xyz"))
    assert caught.value.violations[0].field == "ip_hash"


async def test_a_live_code_is_usable_and_a_later_check_in_its_window_keeps_it(env: Env) -> None:
    """The mail delivery's look: a code is never superseded while it works (the mail window
    is its lifetime), so a later check mails nothing and the code in force stays usable."""
    await env.check()
    token = env.last_token()
    assert await env.service.confirmation_code_usable(token)
    env.clock.advance(timedelta(minutes=29))
    assert not (await env.check()).confirmation_sent
    assert await env.service.confirmation_code_usable(token)
    assert env.uow.commits == 2  # the looks write nothing: the two checks' commits only


async def test_a_used_expired_or_unknown_code_is_not_usable(env: Env) -> None:
    await env.check()
    used = env.last_token()
    await env.service.confirm_ip(ConfirmIp(used))
    assert not await env.service.confirmation_code_usable(used)
    await env.check(ip="198.51.100.9")
    expiring = env.last_token()
    env.clock.advance(timedelta(minutes=30))
    assert not await env.service.confirmation_code_usable(expiring)
    assert not await env.service.confirmation_code_usable("vpip_" + "x" * 43)
    assert not await env.service.confirmation_code_usable("not a code")


async def test_a_code_replaced_once_used_or_for_an_address_trusted_meanwhile_is_not_usable(
    env: Env,
) -> None:
    """A check that read no trust before the first code's confirmation committed mails a
    second code (the first's row, used, is replaced): neither is usable, nor, after a revoke
    discards the pending row, is the second."""
    await env.check()
    first = env.last_token()
    await env.service.confirm_ip(ConfirmIp(first))
    trusted = dict(env.uow.trusted_ips.rows)
    env.uow.trusted_ips.rows.clear()
    assert (await env.check()).confirmation_sent
    env.uow.trusted_ips.rows.update(trusted)
    second = env.last_token()

    assert not await env.service.confirmation_code_usable(first)  # replaced
    assert not await env.service.confirmation_code_usable(second)  # the address is trusted

    [ip_hash] = [t.public_hash for t in trusted.values()]
    await env.service.revoke_trusted_ip(RevokeTrustedIp(USER, ip_hash))
    assert not await env.service.confirmation_code_usable(second)  # discarded with the trust


async def test_a_code_whose_address_trust_lapsed_is_usable_again(env: Env) -> None:
    """Trust that expired is no trust: a pending code for such an address still works."""
    await env.trust()
    env.clock.advance(timedelta(days=30))
    env.cache.entries.clear()
    assert (await env.check()).confirmation_sent
    assert await env.service.confirmation_code_usable(env.last_token())
