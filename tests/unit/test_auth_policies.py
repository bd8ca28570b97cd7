from typing import Any

import pytest

from vaultpay_auth.domain import policies
from vaultpay_auth.domain.errors import CannotChangeOwnRoleError, InsufficientPermissionsError
from vaultpay_auth.domain.policies import (
    check_may_manage,
    check_registration,
    guessability_violations,
    normalize_email,
)
from vaultpay_common.context import Role
from vaultpay_common.errors import ValidationError


def test_email_is_trimmed_and_lower_cased() -> None:
    assert normalize_email("  Alice@Example.COM ") == "alice@example.com"


def test_registration_lists_every_invalid_field() -> None:
    with pytest.raises(ValidationError) as caught:
        check_registration("not-an-email", "short", "")
    assert {v.field for v in caught.value.violations} == {"email", "password", "full_name"}


@pytest.mark.parametrize(
    "password",
    ["onlyletterslong", "123456789012345", "alice-password-1", "x" * 129],
)
def test_weak_passwords_are_refused(password: str) -> None:
    with pytest.raises(ValidationError):
        check_registration("alice@example.com", password, "Alice")


def test_good_registration_passes() -> None:
    check_registration("alice@example.com", "correct horse 42 battery", "Alice")


def test_oversized_name_is_refused() -> None:
    with pytest.raises(ValidationError):
        check_registration("alice@example.com", "correct horse 42 battery", "A" * 101)


def _manage(actor: Role, target: Role, new: Role | None, same: bool = False) -> None:
    check_may_manage(
        actor_id="a",
        actor_role=actor,
        target_id="a" if same else "t",
        target_role=target,
        new_role=new,
    )


def test_nobody_changes_their_own_role() -> None:
    with pytest.raises(CannotChangeOwnRoleError):
        _manage(Role.SUPER_ADMIN, Role.SUPER_ADMIN, Role.ADMIN, same=True)


def test_admin_cannot_grant_admin() -> None:
    with pytest.raises(InsufficientPermissionsError):
        _manage(Role.ADMIN, Role.USER, Role.ADMIN)


def test_admin_cannot_demote_another_admin() -> None:
    with pytest.raises(InsufficientPermissionsError):
        _manage(Role.ADMIN, Role.ADMIN, Role.USER)


def test_moderator_cannot_change_roles() -> None:
    with pytest.raises(InsufficientPermissionsError):
        _manage(Role.MODERATOR, Role.USER, Role.MODERATOR)


def test_admin_may_make_a_user_moderator_and_super_admin_may_grant_admin() -> None:
    _manage(Role.ADMIN, Role.USER, Role.MODERATOR)
    _manage(Role.SUPER_ADMIN, Role.USER, Role.ADMIN)


def test_short_email_local_parts_do_not_forbid_ordinary_letters() -> None:
    check_registration("a@example.com", "a perfectly fine 42 pass", "A")


def test_password_containing_the_email_name_is_refused() -> None:
    with pytest.raises(ValidationError):
        check_registration("harriet@example.com", "harriet-rules-1234", "Harriet")


def test_the_refusal_of_the_email_name_in_any_case_says_it_is_the_name_part() -> None:
    """A newcomer's `Root pass 123 secure!` for root@example.com holds no email address, only
    its name part in another case: the message must name what the rule checks."""
    with pytest.raises(ValidationError) as caught:
        check_registration("root@example.com", "Root pass 123 secure!", "Root")
    (violation,) = caught.value.violations
    assert violation.field == "password"
    assert violation.description == (
        "must not contain the email address or its name part (before the @)"
    )


@pytest.mark.parametrize(
    "password",
    [
        "password1234",
        "Password1234",
        "qwerty123456",
        "123456789abc",
        "aaaaaaaaaaa1",
        "letmein12345",
        "hunter2hunter2",
    ],
)
def test_a_password_of_the_right_shape_that_attackers_try_first_is_refused(password: str) -> None:
    """12 characters, a letter and a digit, yet among the first guesses of a password spray
    (security review, 2026-12-04 night): refused on `password` with the reason."""
    [violation] = guessability_violations(password, "ada@example.com")
    assert violation.field == "password"
    assert violation.description.startswith("is too easy to guess"), violation


def test_the_users_own_name_counts_as_easy_to_guess() -> None:
    assert guessability_violations("Lovelace1815x", "ada@example.com") == []
    [violation] = guessability_violations(
        "Lovelace1815x", "ada@example.com", full_name="Ada Lovelace"
    )
    assert violation.description.startswith("is too easy to guess")


@pytest.mark.parametrize(
    "password", ["correct horse 42 battery", "S3cure-enough-pass", "a brand new 77 secret"]
)
def test_unrelated_words_pass(password: str) -> None:
    assert guessability_violations(password, "ada@example.com") == []


def test_a_long_password_is_estimated_on_its_first_20_characters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """zxcvbn's l33t matching grows fast with distinct substitution characters: over 64
    characters one such password held auth's loop for about a second (review of 2026-12-04
    night). The estimate reads the first 20 (and runs off the loop, after the throttles)."""
    seen: list[str] = []

    def estimate(password: str, user_inputs: list[str]) -> dict[str, Any]:
        seen.append(password)
        return {"score": 4, "feedback": {"warning": ""}}

    monkeypatch.setattr(policies, "zxcvbn", estimate)
    costly = "a" + ("4@8({6#9!1|7+20$5%2" * 7)[:127]
    assert guessability_violations(costly, "eve@example.com", full_name="Eve") == []
    assert seen == [costly[:20]]
