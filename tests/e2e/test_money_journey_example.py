"""The README's money journey (docs/examples/money_journey.py) runs as shown against the mesh:
two people, KYC approved by a staff member made the way an operator makes one, a top-up, a
send from a newly confirmed address, histories, notifications, lookups, two withdrawals (paid,
refused) and the ledger verified; it exits 1, saying why, when a step goes wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import PASSWORD
from tests.e2e.wallet_support import create_staff
from vaultpay_devstack.mesh import Mesh

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "money_journey.py"


def _run(mesh: Mesh, staff_email: str, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--gateway",
            mesh.gateway_url.removeprefix("http://"),
            "--maildir",
            str(mesh.maildir),
            "--staff-email",
            staff_email,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={"PATH": "/usr/bin:/bin", "STAFF_PASSWORD": password},
    )


def test_the_money_journey_example_runs_through_the_gateway(mesh: Mesh) -> None:
    result = _run(mesh, create_staff(mesh, "ADMIN"), PASSWORD)

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for seen in (
        "the wallet is KYC_TIER_FULL",
        "refused (IP_NOT_TRUSTED)",
        "confirmed this machine's address",
        "replays the same transaction",
        "Ravi: notified:",
        "paid by the bank",
        "refused by the bank; the money came back",
        "balances: Asha 4,650.00 INR, Ravi 250.00 INR",
        "the ledger verifies",
    ):
        assert seen in out, out


def test_the_example_stops_at_the_first_unexpected_answer(mesh: Mesh) -> None:
    result = _run(mesh, create_staff(mesh, "ADMIN"), "not the password")

    assert result.returncode == 1
    assert result.stderr.startswith("FAILED: POST /v1/auth/login answered 401"), result.stderr
