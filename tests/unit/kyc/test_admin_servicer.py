"""The staff servicer's translation (review of kyc, items 3 and 4), called directly with the
calling staff member in the context.

AdminRotateKycKey built its command without the caller, so `kyc_key_rotations.started_by` was
'' for every rotation asked through the RPC: it carries the staff member's user id and role
now, from where every staff RPC takes them (`current_staff`). The decisions hand the
entrypoint's own refusals (a bad request_id, an unknown tier number) to the use case, which
names them with the request's other bad fields in one refusal."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest

from tests.unit.kyc.kyc_world import World
from vaultpay.kyc.v1 import kyc_pb2
from vaultpay_common.context import CLIENT_IP, METHOD, PRINCIPAL, Principal, Role
from vaultpay_common.errors import ValidationError
from vaultpay_common.pagination import PageTokens
from vaultpay_kyc.entrypoints.servicers import KycAdminServicer
from vaultpay_kyc.service_layer.commands import RotateKycKey, RotationOutcome

_ANY: Any = None


class _Rotations:
    def __init__(self) -> None:
        self.commands: list[RotateKycKey] = []
        self.answer_within: list[float | None] = []

    async def rotate(
        self, cmd: RotateKycKey, *, answer_within: float | None = None
    ) -> RotationOutcome:
        self.commands.append(cmd)
        self.answer_within.append(answer_within)
        return RotationOutcome("k2", "k1", 0, finished=True)


@pytest.fixture
def as_admin() -> Iterator[str]:
    user_id = str(uuid.uuid4())
    principal = PRINCIPAL.set(Principal(user_id, Role.ADMIN, str(uuid.uuid4())))
    address = CLIENT_IP.set("203.0.113.5")
    yield user_id
    CLIENT_IP.reset(address)
    PRINCIPAL.reset(principal)


def _in(method: str) -> Any:
    return METHOD.set(f"/vaultpay.kyc.v1.KycAdminService/{method}")


async def test_a_rotation_through_the_rpc_names_the_staff_member_who_asked(as_admin: str) -> None:
    rotations = _Rotations()
    servicer = KycAdminServicer(_ANY, cast(Any, rotations), PageTokens(b"k" * 32))
    token = _in("AdminRotateKycKey")
    try:
        await servicer.AdminRotateKycKey(
            kyc_pb2.AdminRotateKycKeyRequest(request_id=str(uuid.uuid4())), _ANY
        )
    finally:
        METHOD.reset(token)
    (cmd,) = rotations.commands
    assert cmd.actor_id == as_admin  # it was "": kyc_key_rotations.started_by = ''
    assert (cmd.actor_role, cmd.client_ip) == (Role.ADMIN, "203.0.113.5")
    assert cmd.origin() == {"ip": "203.0.113.5"}  # not the CLI's `via: cli`
    # Answered within the gateway's 15 s when the caller sent no deadline (a JSON call).
    assert rotations.answer_within == [12.0]


async def test_a_decisions_bad_fields_from_the_entrypoint_and_the_use_case_come_together(
    as_admin: str,
) -> None:
    world = World()
    world.roles.down = True
    servicer = KycAdminServicer(world.review, _ANY, PageTokens(b"k" * 32))
    token = _in("AdminApproveKyc")
    try:
        with pytest.raises(ValidationError) as approve:
            await servicer.AdminApproveKyc(
                kyc_pb2.AdminApproveKycRequest(
                    request_id="nope",
                    submission_id="nope",
                    kyc_tier=cast(Any, 99),
                    note="PAN ABCPE1234F checked",
                ),
                _ANY,
            )
        with pytest.raises(ValidationError) as reject:
            await servicer.AdminRejectKyc(
                kyc_pb2.AdminRejectKycRequest(request_id="nope", submission_id="nope"), _ANY
            )
    finally:
        METHOD.reset(token)
    assert [v.field for v in approve.value.violations] == [
        "request_id",
        "submission_id",
        "kyc_tier",
        "note",
    ]
    assert [v.field for v in reject.value.violations] == ["request_id", "submission_id", "reason"]
    assert world.roles.asked == []
