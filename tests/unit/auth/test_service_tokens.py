"""IssueServiceToken's answers are logged, never the secret (review of 2026-12-04, third: a
leaked or guessed service secret in use left no trace)."""

from __future__ import annotations

import logging

import pytest

from tests.unit.auth.fakes import FakeIssuer
from vaultpay_auth.service_layer.introspection import InvalidClientError, ServiceIdentityService

_LOGGER = "vaultpay_auth.service_layer.introspection"
SECRET = "wallet-secret-of-this-test-0123456789"


def test_a_refused_and_an_issued_service_token_are_logged_without_the_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    identities = ServiceIdentityService({"wallet": SECRET}, FakeIssuer())
    with caplog.at_level(logging.INFO, logger=_LOGGER):
        for client_id, secret in (("wallet", "a guess"), ("nobody", SECRET)):
            with pytest.raises(InvalidClientError):
                identities.issue(client_id, secret)
        identities.issue("wallet", SECRET)
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
    assert SECRET not in caplog.text and "a guess" not in caplog.text
