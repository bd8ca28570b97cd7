"""Pure rules: ids, currencies, PIN format, freezes, windows, effective limits, settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vaultpay_common.errors import ValidationError
from vaultpay_wallet.domain.currency import parse_currency_codes
from vaultpay_wallet.domain.errors import WalletClosedError, WalletHasBalanceError
from vaultpay_wallet.domain.ids import is_wallet_id, new_wallet_id, normalize_wallet_id
from vaultpay_wallet.domain.limits import (
    LimitAction,
    LimitOverride,
    LimitSource,
    LimitWindow,
    effective_caps,
    tier_default_key,
    window_resets,
)
from vaultpay_wallet.domain.model import Freeze, FreezeSource, KycTier, Wallet, WalletStatus
from vaultpay_wallet.domain.pin import pin_violations
from vaultpay_wallet.domain.settings_catalog import SETTINGS, parse_setting_value
from vaultpay_wallet.domain.validation import clean_currency, require_supported_currency

NOW = datetime(2026, 12, 1, 6, 30, tzinfo=UTC)


def _wallet() -> Wallet:
    return Wallet.open("VPY-ABC123", "u1", "Alice", "INR", NOW)


def test_new_wallet_ids_have_the_vpy_format_and_differ() -> None:
    ids = {new_wallet_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(is_wallet_id(i) for i in ids)
    assert normalize_wallet_id(" vpy-abc123 ") == "VPY-ABC123"
    assert not is_wallet_id("VPY-ABC12")
    assert not is_wallet_id("VPY-ABC12!")


@pytest.mark.parametrize("spelling", ["vpy-abcd\ufb00", "vpy-abc12\u0131", "vpy-abcd\ufb06"])
def test_an_id_spelt_with_letters_that_upper_case_into_ascii_is_not_a_wallet_id(
    spelling: str,
) -> None:
    """str.upper() spells U+FB00 as "FF", U+0131 as "I", U+FB06 as "ST": such an id is not the
    one shown to anybody (review of 2026-12-04)."""
    assert not is_wallet_id(normalize_wallet_id(spelling))


@pytest.mark.parametrize("code", ["INRR", "ABC", "inr", "XAU", "12"])
def test_currency_must_be_a_known_iso_code(code: str) -> None:
    with pytest.raises(ValidationError) as err:
        clean_currency(code)
    assert err.value.violations[0].field == "currency_code"


def test_empty_currency_means_inr() -> None:
    assert clean_currency("") == "INR"
    assert clean_currency("USD") == "USD"


def test_a_well_formed_currency_outside_the_supported_set_is_refused_naming_the_set() -> None:
    assert require_supported_currency("INR", frozenset({"INR"})) == "INR"
    assert require_supported_currency("USD", frozenset({"INR", "USD"})) == "USD"
    with pytest.raises(ValidationError) as err:
        require_supported_currency("JPY", frozenset({"USD", "INR"}))
    violation = err.value.violations[0]
    assert violation.field == "currency_code"
    assert violation.description == "JPY is not supported here (supported: INR, USD)"


def test_the_supported_currencies_parse_from_a_comma_separated_list() -> None:
    assert parse_currency_codes("INR") == {"INR"}
    assert parse_currency_codes(" INR , USD,INR") == {"INR", "USD"}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "comma-separated"),
        ("INR,,USD", "comma-separated"),
        ("INR,usd", "'usd' is not an upper-case ISO 4217"),
        ("INR,XYZ", "'XYZ' is not an upper-case ISO 4217"),
        ("INR;USD", "'INR;USD' is not"),
        ("USD", "must include INR"),
    ],
)
def test_a_malformed_supported_currency_list_is_refused(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_currency_codes(text)


@pytest.mark.parametrize(
    "pin", ["0000", "1111", "1234", "4321", "0123", "9876", "6789", "1212", "2580"]
)
def test_trivial_pins_are_refused(pin: str) -> None:
    assert pin_violations(pin, pin, field="pin")[0].description.startswith("is too easy")


@pytest.mark.parametrize("pin", ["123", "12345", "12a4", "١٢٣٤", " 2468", ""])
def test_pins_must_be_exactly_four_ascii_digits(pin: str) -> None:
    assert pin_violations(pin, pin, field="pin")[0].description == "must be exactly 4 digits"


def test_pin_confirmation_must_match_and_names_its_field() -> None:
    (violation,) = pin_violations("2468", "2469", field="new_pin")
    assert violation.field == "new_pin_confirmation"
    assert "2468" not in violation.description
    assert pin_violations("2468", "2468", field="pin") == []


def test_a_wallet_is_frozen_while_any_freeze_remains_and_shows_the_most_authoritative() -> None:
    wallet = _wallet().frozen(Freeze(FreezeSource.SELF, "lost phone", NOW), NOW)
    wallet = wallet.frozen(Freeze(FreezeSource.ADMIN, "fraud check", NOW), NOW)
    wallet = wallet.frozen(
        Freeze(FreezeSource.PIN_LOCKOUT, "", NOW, NOW + timedelta(hours=24)), NOW
    )
    assert wallet.status is WalletStatus.FROZEN
    assert wallet.displayed_freeze is not None
    assert wallet.displayed_freeze.source is FreezeSource.ADMIN
    wallet = wallet.lifted(frozenset({FreezeSource.ADMIN}), NOW)
    assert wallet.displayed_freeze is not None
    assert wallet.displayed_freeze.source is FreezeSource.PIN_LOCKOUT
    wallet = wallet.lifted(frozenset({FreezeSource.PIN_LOCKOUT, FreezeSource.SELF}), NOW)
    assert wallet.status is WalletStatus.ACTIVE
    assert wallet.displayed_freeze is None


def test_expired_freezes_are_lifted_at_read_time() -> None:
    wallet = _wallet().frozen(
        Freeze(FreezeSource.ADMIN, "short hold", NOW, NOW + timedelta(hours=1)), NOW
    )
    assert wallet.current(NOW + timedelta(minutes=59)).status is WalletStatus.FROZEN
    later = wallet.current(NOW + timedelta(hours=1))
    assert later.status is WalletStatus.ACTIVE
    assert later.freezes == ()


def test_close_needs_a_zero_balance_and_is_terminal() -> None:
    rich = Wallet.open("VPY-ABC123", "u1", "A", "INR", NOW)
    from dataclasses import replace

    with pytest.raises(WalletHasBalanceError):
        replace(rich, balance_minor=1).closed(NOW)
    closed = rich.closed(NOW)
    assert closed.status is WalletStatus.CLOSED
    assert closed.closed_at == NOW
    assert not closed.can_receive
    with pytest.raises(WalletClosedError):
        closed.frozen(Freeze(FreezeSource.SELF, "", NOW), NOW)


def test_windows_are_calendar_day_and_month_in_kolkata() -> None:
    # 2026-12-31 20:00 UTC is 2027-01-01 01:30 in Kolkata
    resets = window_resets(datetime(2026, 12, 31, 20, 0, tzinfo=UTC))
    assert resets.day_end == datetime(2027, 1, 1, 18, 30, tzinfo=UTC)
    assert resets.month_end == datetime(2027, 1, 31, 18, 30, tzinfo=UTC)
    resets = window_resets(datetime(2026, 2, 10, 3, 0, tzinfo=UTC))
    assert resets.day_end == datetime(2026, 2, 10, 18, 30, tzinfo=UTC)
    assert resets.month_end == datetime(2026, 2, 28, 18, 30, tzinfo=UTC)


def _defaults() -> dict[str, int]:
    return {k: int(s.default) for k, s in SETTINGS.items()}


def _override(source: LimitSource, daily: int | None, per_tx: int | None = None) -> LimitOverride:
    return LimitOverride("VPY-ABC123", source, LimitAction.SEND, per_tx, daily, None, "x", "", NOW)


def test_effective_limit_is_the_lower_of_user_and_admin_or_tier() -> None:
    defaults = _defaults()
    tier_daily = defaults[tier_default_key(KycTier.BASIC, LimitAction.SEND, LimitWindow.DAILY)]
    caps = effective_caps(KycTier.BASIC, defaults, [])
    send = next(c for c in caps if c.action is LimitAction.SEND)
    assert send.daily.amount_minor == tier_daily
    assert send.daily.source is LimitSource.TIER_DEFAULT

    caps = effective_caps(
        KycTier.BASIC,
        defaults,
        [_override(LimitSource.ADMIN_OVERRIDE, 5_000), _override(LimitSource.USER, 9_000, 100)],
    )
    send = next(c for c in caps if c.action is LimitAction.SEND)
    assert (send.daily.amount_minor, send.daily.source) == (5_000, LimitSource.ADMIN_OVERRIDE)
    assert (send.per_transaction.amount_minor, send.per_transaction.source) == (
        100,
        LimitSource.USER,
    )
    assert send.monthly.source is LimitSource.TIER_DEFAULT


def test_the_catalogue_has_every_tier_action_and_window() -> None:
    for tier in KycTier:
        for action in LimitAction:
            for window in LimitWindow:
                assert tier_default_key(tier, action, window) in SETTINGS
    assert "limits.tier_basic.send.daily" in SETTINGS


@pytest.mark.parametrize("raw", ["abc", "1.5", "-1", "--5", "1000000000001", ""])
def test_setting_values_are_parsed_and_range_checked(raw: str) -> None:
    spec = SETTINGS["limits.tier_basic.send.daily"]
    with pytest.raises(ValidationError) as err:
        parse_setting_value(spec, raw)
    assert err.value.violations[0].field == "value"
    assert parse_setting_value(spec, " 0500 ") == "500"
