"""The wallet as a user reaches it: JSON through Envoy, mail through the SMTP sink."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import grpc

from tests.e2e.conftest import Gateway, Reply
from tests.e2e.wallet_support import mailed_code, new_person, rid, service_token, staff_token
from vaultpay.type.v1 import kyc_tier_pb2
from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_devstack.mesh import Mesh

WALLET_ID = re.compile(r"^VPY-[A-Z0-9]{6}$")


def test_open_a_wallet_set_and_verify_a_pin(gateway: Gateway) -> None:
    person = new_person(gateway, wallet=False)
    created = person.call(
        gateway, "POST", "/v1/wallets", {"requestId": rid(), "displayName": "Asha Rao"}
    )
    assert created.status == 200, created.body
    wallet = created.body["wallet"]
    assert WALLET_ID.match(wallet["walletId"])
    assert wallet["status"] == "WALLET_STATUS_ACTIVE"
    assert wallet["currencyCode"] == "INR"
    assert wallet["kycTier"] == "KYC_TIER_NONE"
    assert wallet["balance"]["currencyCode"] == "INR"
    assert wallet["balance"].get("amountMinor", "0") == "0"  # proto3 JSON omits zero

    mine = person.call(gateway, "GET", "/v1/wallets/me")
    assert mine.status == 200, mine.body
    assert mine.body["wallet"]["walletId"] == wallet["walletId"]
    assert {a["action"] for a in mine.body["limits"]} == {
        "LIMIT_ACTION_SEND",
        "LIMIT_ACTION_WITHDRAW",
        "LIMIT_ACTION_TOP_UP",
    }

    pin = {"requestId": rid(), "pin": "4821", "pinConfirmation": "4821"}
    assert person.call(gateway, "POST", "/v1/wallets/me/pin", pin).status == 200
    verified = person.call(
        gateway, "POST", "/v1/wallets/me/pin:verify", {"requestId": rid(), "pin": "4821"}
    )
    assert verified.status == 200, verified.body

    again = person.call(gateway, "POST", "/v1/wallets", {"requestId": rid(), "displayName": "X"})
    assert again.status == 409
    assert again.error_reason() == "WALLET_ALREADY_EXISTS"


def test_a_wallet_opens_only_in_a_supported_currency(gateway: Gateway) -> None:
    # The mesh runs with the default WALLET_CURRENCIES (INR alone): the tier limits are minor
    # units meant for rupees, so a well-formed USD is refused, naming the field, and opens none.
    person = new_person(gateway, wallet=False)
    body = {"requestId": rid(), "displayName": "Dollar Person", "currencyCode": "USD"}
    refused = person.call(gateway, "POST", "/v1/wallets", body)
    assert (refused.status, refused.error_reason()) == (400, "INVALID_ARGUMENT"), refused.body
    assert refused.field_violations() == ["currencyCode"], refused.body
    assert "supported: INR" in refused.body["message"], refused.body
    assert person.call(gateway, "GET", "/v1/wallets/me").status == 404
    inr = person.call(
        gateway, "POST", "/v1/wallets", {**body, "requestId": rid(), "currencyCode": "INR"}
    )
    assert inr.status == 200, inr.body
    assert inr.body["wallet"]["currencyCode"] == "INR"


def test_a_retried_create_with_the_same_request_id_replays_the_wallet(gateway: Gateway) -> None:
    person = new_person(gateway, wallet=False)
    body = {"requestId": rid(), "displayName": "Retry Person"}
    first = person.call(gateway, "POST", "/v1/wallets", body)
    second = person.call(gateway, "POST", "/v1/wallets", body)
    assert first.status == second.status == 200, (first.body, second.body)
    assert first.body["wallet"]["walletId"] == second.body["wallet"]["walletId"]
    other = person.call(gateway, "POST", "/v1/wallets", {**body, "displayName": "Someone Else"})
    assert other.error_reason() == "IDEMPOTENCY_KEY_REUSED", other.body


def test_three_wrong_pins_lock_the_wallet_and_the_mailed_reset_lifts_it(
    gateway: Gateway, mesh: Mesh
) -> None:
    person = new_person(gateway, pin="4821")
    reasons = []
    for _ in range(3):
        wrong = person.call(
            gateway, "POST", "/v1/wallets/me/pin:verify", {"requestId": rid(), "pin": "1357"}
        )
        reasons.append(wrong.error_reason())
    assert reasons == ["INVALID_PIN", "INVALID_PIN", "PIN_LOCKED"], reasons

    wallet = person.call(gateway, "GET", "/v1/wallets/me").body["wallet"]
    assert wallet["status"] == "WALLET_STATUS_FROZEN"
    assert wallet["freeze"]["reason"] == "FREEZE_REASON_PIN_LOCKOUT"
    right = person.call(
        gateway, "POST", "/v1/wallets/me/pin:verify", {"requestId": rid(), "pin": "4821"}
    )
    assert right.error_reason() == "PIN_LOCKED"

    requested = person.call(
        gateway, "POST", "/v1/wallets/me/pin:requestReset", {"requestId": rid()}
    )
    assert requested.status == 200, requested.body
    code = mailed_code(mesh, person.email, "PIN")
    reset = {"requestId": rid(), "token": code, "newPin": "7394", "newPinConfirmation": "7394"}
    done = gateway.call("POST", "/v1/wallets/pin:reset", reset)
    assert done.status == 200, done.body
    assert done.body.get("lockoutLifted") is True
    assert person.call(gateway, "GET", "/v1/wallets/me").body["wallet"]["status"] == (
        "WALLET_STATUS_ACTIVE"
    )
    ok = person.call(
        gateway, "POST", "/v1/wallets/me/pin:verify", {"requestId": rid(), "pin": "7394"}
    )
    assert ok.status == 200, ok.body
    reused = gateway.call("POST", "/v1/wallets/pin:reset", {**reset, "requestId": rid()})
    assert reused.status in (400, 412), reused.body


def test_thirty_concurrent_wrong_pins_count_at_most_three(gateway: Gateway) -> None:
    person = new_person(gateway, pin="4821")

    def wrong(_: int) -> str:
        reply = person.call(
            gateway, "POST", "/v1/wallets/me/pin:verify", {"requestId": rid(), "pin": "1357"}
        )
        return reply.error_reason()

    with ThreadPoolExecutor(max_workers=10) as pool:
        reasons = list(pool.map(wrong, range(30)))
    assert reasons.count("INVALID_PIN") <= 2, reasons
    # Checks that found every attempt counted by others still running: retryable, 409.
    assert set(reasons) <= {"INVALID_PIN", "PIN_LOCKED", "PIN_CHECK_IN_PROGRESS"}, reasons
    wallet = person.call(gateway, "GET", "/v1/wallets/me").body["wallet"]
    assert wallet["freeze"]["reason"] == "FREEZE_REASON_PIN_LOCKOUT"


def test_a_user_unfreeze_leaves_a_staff_freeze_in_place(gateway: Gateway, mesh: Mesh) -> None:
    person = new_person(gateway)
    moderator = staff_token(mesh, gateway, "MODERATOR")
    froze = person.call(gateway, "POST", "/v1/wallets/me:freeze", {"requestId": rid()})
    assert froze.status == 200, froze.body
    staff = gateway.call(
        "POST",
        f"/v1/admin/wallets/{person.wallet_id}:freeze",
        {"requestId": rid(), "reason": "chargeback investigation"},
        token=moderator,
    )
    assert staff.status == 200, staff.body

    unfreeze = person.call(gateway, "POST", "/v1/wallets/me:unfreeze", {"requestId": rid()})
    assert (unfreeze.status, unfreeze.error_reason()) == (400, "WALLET_FROZEN"), unfreeze.body
    wallet = person.call(gateway, "GET", "/v1/wallets/me").body["wallet"]
    assert wallet["status"] == "WALLET_STATUS_FROZEN"
    assert wallet["freeze"]["reason"] == "FREEZE_REASON_ADMIN"
    assert not wallet["freeze"].get("note"), "the owner must not see staff notes"

    lifted = gateway.call(
        "POST",
        f"/v1/admin/wallets/{person.wallet_id}:unfreeze",
        {"requestId": rid(), "reason": "cleared"},
        token=moderator,
    )
    assert lifted.status == 200, lifted.body
    assert lifted.body["wallet"]["status"] == "WALLET_STATUS_ACTIVE"

    # The lifted staff freeze took the owner's own with it.
    assert "freeze" not in lifted.body["wallet"], lifted.body

    admin = staff_token(mesh, gateway, "ADMIN")
    events = gateway.call("GET", f"/v1/admin/audit-logs?targetId={person.wallet_id}", token=admin)
    assert events.status == 200, events.body
    actions = {e["action"] for e in events.body.get("events", [])}
    assert {"wallet.frozen", "wallet.unfrozen"} <= actions, actions


def _raised_send_limit(reason: str) -> dict[str, object]:
    """An AdminSetWalletLimits body raising the daily send limit far above any tier's."""
    return {
        "requestId": rid(),
        "reason": reason,
        "limits": [
            {
                "action": "LIMIT_ACTION_SEND",
                "daily": {"currencyCode": "INR", "amountMinor": "900000000"},
            }
        ],
    }


def test_staff_never_change_their_own_wallet_through_the_admin_api(
    gateway: Gateway, mesh: Mesh
) -> None:
    # QA of 2026-12-03: a moderator lifted a staff freeze on their own wallet (200 ACTIVE) and
    # an admin raised their own limits (200 LIMIT_SOURCE_ADMIN_OVERRIDE).
    admin = staff_token(mesh, gateway, "ADMIN")
    created = gateway.call(
        "POST", "/v1/wallets", {"requestId": rid(), "displayName": "Staff"}, token=admin
    )
    assert created.status == 200, created.body
    wallet_id = str(created.body["wallet"]["walletId"])
    root = staff_token(mesh, gateway, "SUPER_ADMIN")
    held = gateway.call(
        "POST",
        f"/v1/admin/wallets/{wallet_id}:freeze",
        {"requestId": rid(), "reason": "staff account review"},
        token=root,
    )
    assert held.status == 200, held.body

    own = f"/v1/admin/wallets/{wallet_id}"
    limits = _raised_send_limit("mine")
    for method, path, body in (
        ("POST", f"{own}:unfreeze", {"requestId": rid(), "reason": "mine"}),
        ("POST", f"{own}:freeze", {"requestId": rid(), "reason": "mine"}),
        ("PUT", f"{own}/limits", limits),
    ):
        refused = gateway.call(method, path, body, token=admin)
        assert (refused.status, refused.error_reason()) == (403, "CANNOT_MODIFY_SELF"), (
            path,
            refused.body,
        )
    still = gateway.call("GET", "/v1/wallets/me", token=admin).body["wallet"]
    assert still["status"] == "WALLET_STATUS_FROZEN", still

    lifted = gateway.call(
        "POST", f"{own}:unfreeze", {"requestId": rid(), "reason": "cleared"}, token=root
    )
    assert lifted.status == 200 and lifted.body["wallet"]["status"] == "WALLET_STATUS_ACTIVE"


def test_staff_change_only_the_wallets_of_people_they_outrank(gateway: Gateway, mesh: Mesh) -> None:
    # A moderator could freeze an admin's or a super_admin's wallet: wallet did not know the
    # owner's role. It now asks auth (GetUserRole) and applies auth's rank rule.
    moderator = staff_token(mesh, gateway, "MODERATOR")
    admin = staff_token(mesh, gateway, "ADMIN")
    other_admin = staff_token(mesh, gateway, "ADMIN")
    root = staff_token(mesh, gateway, "SUPER_ADMIN")

    def wallet_of(token: str) -> str:
        created = gateway.call(
            "POST", "/v1/wallets", {"requestId": rid(), "displayName": "Staff"}, token=token
        )
        assert created.status == 200, created.body
        return str(created.body["wallet"]["walletId"])

    admins_wallet, moderators_wallet = wallet_of(admin), wallet_of(moderator)
    limits = _raised_send_limit("rank")

    def act(method: str, path: str, token: str) -> tuple[int, str]:
        body = limits if method == "PUT" else {"requestId": rid(), "reason": "rank"}
        answer = gateway.call(method, f"/v1/admin/wallets/{path}", body, token=token)
        return answer.status, answer.error_reason()

    refused = (403, "INSUFFICIENT_PERMISSIONS")
    assert act("POST", f"{admins_wallet}:freeze", moderator) == refused
    assert act("POST", f"{admins_wallet}:freeze", other_admin) == refused
    assert act("PUT", f"{admins_wallet}/limits", other_admin) == refused
    untouched = gateway.call("GET", "/v1/wallets/me", token=admin).body["wallet"]
    assert untouched["status"] == "WALLET_STATUS_ACTIVE", untouched

    assert act("POST", f"{moderators_wallet}:freeze", admin) == (200, "")
    assert act("POST", f"{moderators_wallet}:unfreeze", moderator) == (403, "CANNOT_MODIFY_SELF")
    assert act("POST", f"{admins_wallet}:freeze", root) == (200, "")
    assert act("POST", f"{admins_wallet}:unfreeze", moderator) == refused
    assert act("POST", f"{admins_wallet}:unfreeze", root) == (200, "")


async def test_limits_lower_refuse_raise_override_and_settings(
    gateway: Gateway, mesh: Mesh
) -> None:
    person = new_person(gateway)
    async with grpc.aio.insecure_channel(mesh.grpc_address("wallet")) as channel:
        await wallet_pb2_grpc.WalletInternalServiceStub(channel).SetKycTier(
            wallet_pb2.SetKycTierRequest(
                request_id=rid(), user_id=person.user_id, kyc_tier=kyc_tier_pb2.KYC_TIER_BASIC
            ),
            metadata=(
                ("authorization", f"Bearer {await service_token(mesh, 'kyc', to='wallet')}"),
            ),
        )
    limits = person.call(gateway, "GET", "/v1/wallets/me/limits").body["limits"]
    send = next(a for a in limits if a["action"] == "LIMIT_ACTION_SEND")
    tier_daily = int(send["daily"]["amount"]["amountMinor"])
    assert tier_daily > 100

    lower = {"requestId": rid(), "daily": {"currencyCode": "INR", "amountMinor": "100"}}
    lowered = person.call(gateway, "PUT", "/v1/wallets/me/limits/send", lower)
    assert lowered.status == 200, lowered.body
    assert lowered.body["limits"]["daily"]["amount"]["amountMinor"] == "100"
    assert lowered.body["limits"]["daily"]["source"] == "LIMIT_SOURCE_USER"

    higher = {
        "requestId": rid(),
        "daily": {"currencyCode": "INR", "amountMinor": str(tier_daily + 1)},
    }
    refused = person.call(gateway, "PUT", "/v1/wallets/me/limits/send", higher)
    assert refused.status == 400, refused.body
    assert "daily" in refused.field_violations()

    admin = staff_token(mesh, gateway, "ADMIN")
    override = {
        "requestId": rid(),
        "reason": "trusted merchant",
        "limits": [
            {
                "action": "LIMIT_ACTION_WITHDRAW",
                "daily": {"currencyCode": "INR", "amountMinor": "123456"},
            }
        ],
    }
    put = gateway.call("PUT", f"/v1/admin/wallets/{person.wallet_id}/limits", override, token=admin)
    assert put.status == 200, put.body
    mine = person.call(gateway, "GET", "/v1/wallets/me/limits").body["limits"]
    withdraw = next(a for a in mine if a["action"] == "LIMIT_ACTION_WITHDRAW")
    assert withdraw["daily"]["amount"]["amountMinor"] == "123456"
    assert withdraw["daily"]["source"] == "LIMIT_SOURCE_ADMIN_OVERRIDE"

    root = staff_token(mesh, gateway, "SUPER_ADMIN")
    settings = gateway.call("GET", "/v1/admin/settings?keyPrefix=limits.tier_basic.", token=root)
    assert settings.status == 200, settings.body
    key = "limits.tier_basic.top_up.monthly"
    original = next((s["value"] for s in settings.body["settings"] if s["key"] == key), None)
    assert original is not None, settings.body

    def set_to(value: str) -> Reply:
        body = {"requestId": rid(), "value": value, "reason": "e2e"}
        return gateway.call("PATCH", f"/v1/admin/settings/{key}", body, token=root)

    try:  # the setting is the whole mesh's: the next test finds it as it was
        changed = set_to("7777700")
        assert changed.status == 200, changed.body
        mine = person.call(gateway, "GET", "/v1/wallets/me/limits").body["limits"]
        top_up = next(a for a in mine if a["action"] == "LIMIT_ACTION_TOP_UP")
        assert top_up["monthly"]["amount"]["amountMinor"] == "7777700"
        bad = set_to("-5")
        assert bad.status == 400 and "value" in bad.field_violations(), bad.body
    finally:
        restored = set_to(str(original))
        assert restored.status == 200, restored.body


def test_bad_input_is_400_naming_the_field_and_writes_nothing(gateway: Gateway) -> None:
    person = new_person(gateway)
    for pin in ("123", "12345", "12a4", "1234", "0000"):
        reply = person.call(
            gateway,
            "POST",
            "/v1/wallets/me/pin",
            {"requestId": rid(), "pin": pin, "pinConfirmation": pin},
        )
        assert reply.status == 400, (pin, reply.body)
        assert "pin" in reply.field_violations(), (pin, reply.body)
    assert person.call(gateway, "GET", "/v1/wallets/me").body["wallet"].get("pinSet") is not True

    for wallet_id in ("VPY-12", "VPY-abc!23", "XYZ-ABC123", "VPY-ABCDEFG"):
        looked = person.call(gateway, "GET", f"/v1/wallets/{wallet_id}")
        assert looked.status in (400, 404), (wallet_id, looked.body)
    huge = person.call(
        gateway, "POST", "/v1/wallets/me:freeze", {"requestId": rid(), "note": "x" * 600}
    )
    assert huge.status == 400 and "note" in huge.field_violations(), huge.body
    unknown = person.call(
        gateway, "POST", "/v1/wallets/me:freeze", {"requestId": rid(), "bogus": 1}
    )
    assert unknown.status == 400
    assert person.call(gateway, "GET", "/v1/wallets/me").body["wallet"]["status"] == (
        "WALLET_STATUS_ACTIVE"
    )


def test_lookup_shows_the_public_view_only(gateway: Gateway) -> None:
    payee, payer = new_person(gateway), new_person(gateway)
    seen = payer.call(gateway, "GET", f"/v1/wallets/{payee.wallet_id.lower()}")
    assert seen.status == 200, seen.body
    assert seen.body["wallet"]["walletId"] == payee.wallet_id
    assert seen.body["wallet"]["canReceive"] is True
    assert "balance" not in seen.body["wallet"] and "userId" not in seen.body["wallet"]
    missing = payer.call(gateway, "GET", "/v1/wallets/VPY-ZZZZZZ")
    assert missing.status == 404 and missing.error_reason() == "WALLET_NOT_FOUND"
