"""The ledger verifier's `audit_chain_intact` (review of 2026-12-04 evening): it used to pass
whenever no break was found, so a chain whose head reaches no signed checkpoint (deleting the
newest rows goes unnoticed) or a sealer that stopped long ago read as "the audit chain holds"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from vaultpay_common.audit import AuditVerification, ChainBreak, Checkpoint
from vaultpay_transfer.adapters.verify_sql import audit_chain_check

BOUND = timedelta(minutes=10)
CHECKPOINT = Checkpoint(40, "ab" * 32, datetime(2026, 12, 4, tzinfo=UTC), "sig")


def _found(
    *,
    sealed: int = 42,
    checkpoint: Checkpoint | None = CHECKPOINT,
    broken: ChainBreak | None = None,
    oldest_unsealed: timedelta | None = None,
) -> AuditVerification:
    return AuditVerification(
        sealed=sealed,
        verified=sealed if broken is None else 0,
        broken=broken,
        unsealed=0 if oldest_unsealed is None else 3,
        oldest_unsealed_age=oldest_unsealed,
        checkpoint=checkpoint,
    )


def test_a_chain_reaching_its_checkpoint_with_rows_sealed_in_time_holds() -> None:
    check = audit_chain_check(_found(oldest_unsealed=timedelta(seconds=2)), BOUND)
    assert (check.name, check.ok) == ("audit_chain_intact", True)
    assert check.detail.startswith("42 audit rows sealed, 42 verified, 3 not sealed yet")


def test_nothing_sealed_yet_holds_without_a_checkpoint() -> None:
    assert audit_chain_check(_found(sealed=0, checkpoint=None), BOUND).ok


def test_a_sealed_chain_without_a_checkpoint_is_not_proven() -> None:
    check = audit_chain_check(_found(checkpoint=None), BOUND)
    assert not check.ok
    assert "NOT PROVEN: the chain's head reaches no signed checkpoint" in check.detail


def test_without_a_checkpoint_store_an_unbroken_chain_passes_with_its_warning() -> None:
    """A deployment without `*_AUDIT_CHECKPOINT_DIR` can anchor nothing: failing every run
    would make the check useless there; the warning says what is not proven."""
    warned = AuditVerification(
        sealed=42,
        verified=42,
        broken=None,
        unsealed=0,
        oldest_unsealed_age=None,
        checkpoint=None,
        warnings=("no checkpoint store is configured: the head of the chain is not anchored",),
    )
    check = audit_chain_check(warned, BOUND, anchored_required=False)
    assert check.ok
    assert "warning: no checkpoint store is configured" in check.detail
    broken = _found(checkpoint=None, broken=ChainBreak(7, "row hash mismatch", 7))
    assert not audit_chain_check(broken, BOUND, anchored_required=False).ok


def test_a_broken_chain_fails_and_says_where() -> None:
    check = audit_chain_check(_found(broken=ChainBreak(7, "row hash mismatch", 7)), BOUND)
    assert not check.ok
    assert "BROKEN" in check.detail


def test_a_row_left_unsealed_past_the_bound_fails_but_only_given_a_bound() -> None:
    late = _found(oldest_unsealed=BOUND + timedelta(seconds=1))
    check = audit_chain_check(late, BOUND)
    assert not check.ok
    assert "SEALER BEHIND: a row has waited 601 s to be sealed (bound 600 s)" in check.detail
    assert audit_chain_check(late, None).ok
