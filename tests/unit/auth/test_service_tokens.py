"""IssueServiceToken's answers are logged, never the secret (review of 2026-12-04, third: a
leaked or guessed service secret in use left no trace)."""

from __future__ import annotations

import logging

import pytest

from tests.unit.auth.fakes import FakeIssuer
from vaultpay_auth.service_layer.introspection import InvalidClientError, ServiceIdentityService
from vaultpay_common.errors import ValidationError

_LOGGER = "vaultpay_auth.service_layer.introspection"
SECRET = "wallet-secret-of-this-test-0123456789"


def test_a_refused_and_an_issued_service_token_are_logged_without_the_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    identities = ServiceIdentityService({"wallet": SECRET}, FakeIssuer())
    with caplog.at_level(logging.INFO, logger=_LOGGER):
        for client_id, secret in (("wallet", "a guess"), ("nobody", SECRET)):
            with pytest.raises(InvalidClientError):
                identities.issue(client_id, secret, "auth")
        identities.issue("wallet", SECRET, "transfer")
    said = [
        (r.levelno, r.getMessage(), r.client_id, getattr(r, "known_client", None))  # type: ignore[attr-defined]
        for r in caplog.records
    ]
    refused = "a service token was refused: unknown client or wrong secret"
    assert said == [
        (logging.WARNING, refused, "wallet", True),
        (logging.WARNING, refused, "nobody", False),
        (logging.INFO, "a service token was issued", "wallet", None),
    ]
    assert caplog.records[-1].peer == "transfer"  # type: ignore[attr-defined]
    assert SECRET not in caplog.text and "a guess" not in caplog.text


def test_a_token_is_addressed_to_the_service_asked_for_and_only_a_mesh_service() -> None:
    identities = ServiceIdentityService({"wallet": SECRET}, FakeIssuer())
    token, _ = identities.issue("wallet", SECRET, "transfer")
    assert token == "service:wallet:transfer"
    with pytest.raises(ValidationError) as refused:
        identities.issue("wallet", SECRET, "gateway")
    assert refused.value.violations[0].field == "audience"


def test_an_unscoped_token_for_a_caller_of_an_older_build_is_issued_and_warned_of(
    caplog: pytest.LogCaptureFixture,
) -> None:
    identities = ServiceIdentityService({"wallet": SECRET}, FakeIssuer())
    with caplog.at_level(logging.INFO, logger=_LOGGER):
        token, _ = identities.issue("wallet", SECRET)
    assert token == "service:wallet:"
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "an unscoped service token was issued (a caller of an older build)")
    ]
