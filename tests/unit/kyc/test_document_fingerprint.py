"""How the document fields enter a KYC call's fingerprint: as the use cases read them, except
values too long for the use cases to take, which enter it as sent (review of 2026-12-05: a 10
MiB number was respelled on the event loop, half a second, before the use case refused it)."""

from __future__ import annotations

from vaultpay_kyc.domain.documents import MAX_RAW_NUMBER_LENGTH
from vaultpay_kyc.entrypoints import servicers


def test_a_number_the_use_case_could_take_is_respelled_as_it_reads_it() -> None:
    assert servicers._number("abcpe 1234-f") == "ABCPE1234F"
    assert servicers._lowered("  Application/PDF ") == "application/pdf"


def test_a_value_past_what_the_use_case_takes_is_left_as_sent() -> None:
    long_number = "a " * MAX_RAW_NUMBER_LENGTH
    assert servicers._number(long_number) == long_number
    long_digest = "A" * 10_000
    assert servicers._lowered(long_digest) == long_digest
