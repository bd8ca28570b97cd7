"""Moves money through the gateway with JSON, as a web client would, and prints each step.

    eval "$(.venv/bin/python -m vaultpay_devstack.cli env auth)"
    .venv/bin/vaultpay-auth create-superadmin --email root@example.com      # asks for a password
    .venv/bin/python docs/examples/money_journey.py --staff-email root@example.com   # and here

Against `make run`'s mesh: the gateway on 127.0.0.1:8080, mail in var/mail (the SMTP sink).
Two people register, open wallets and set PINs; both submit a PAN for KYC and the staff member
(an admin or above, who also verifies the ledger at the end) approves it, which raises their
wallets' tier through the outbox. Asha tops up 5,000 INR and sends 250 INR to Ravi: the first
send from this machine is refused (IP_NOT_TRUSTED), the code mailed to her confirms the
address, and the same request then goes through; a retry of it replays the same transaction.
Both see it in their history and notifications, by reference and by request id. Asha
withdraws twice: to an ordinary account (the simulated bank pays it) and to the test account
000000000000 (always refused: the money comes back).

Exits 0 when every step answered as it should, 1 with the unexpected answer otherwise. The
staff password is read from $STAFF_PASSWORD, or asked for.
"""

from __future__ import annotations

import argparse
import getpass
import http.client
import json
import os
import re
import secrets
import string
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from vaultpay_devstack.smtp_sink import wait_for_message

T = TypeVar("T")

PIN = "2468"
CONFIRM_SUBJECT = "Confirm a new device or network"
REFUSING_ACCOUNT = "000000000000"  # the simulated bank always refuses it (README, "Transfer")
_CODE = re.compile(r"code: (?P<code>[A-Za-z0-9_-]{20,})")


class JourneyError(Exception):
    """A step answered otherwise than it should."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any

    @property
    def reason(self) -> str:
        for detail in self.body.get("details", []) if isinstance(self.body, dict) else []:
            if str(detail.get("@type", "")).endswith("ErrorInfo"):
                return str(detail.get("reason", ""))
        return ""


class Gateway:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80

    def call(self, method: str, path: str, body: Any = None, *, token: str = "") -> Reply:
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if data is not None else {}
        if token:
            headers["authorization"] = f"Bearer {token}"
        connection = http.client.HTTPConnection(self._host, self._port, timeout=15)
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            status, payload = response.status, response.read()
        finally:
            connection.close()
        return Reply(status, json.loads(payload) if payload else {})

    def ok(self, method: str, path: str, body: Any = None, *, token: str = "") -> Any:
        reply = self.call(method, path, body, token=token)
        if reply.status != 200:
            raise JourneyError(f"{method} {path} answered {reply.status}: {json.dumps(reply.body)}")
        return reply.body


@dataclass
class Person:
    name: str
    email: str
    password: str = ""
    token: str = ""
    wallet_id: str = ""


def rid() -> str:
    return str(uuid.uuid4())


def inr(minor: int) -> dict[str, str]:
    return {"currencyCode": "INR", "amountMinor": str(minor)}


def rupees(minor: int | str) -> str:
    value = int(minor)
    return f"{value // 100:,}.{value % 100:02d} INR"


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def eventually(what: str, check: Callable[[], T | None], within: float = 30.0) -> T:
    """Polls `check` until it answers something truthy (never a fixed sleep alone)."""
    deadline = time.monotonic() + within
    delay = 0.05
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise JourneyError(f"{what}: not seen within {within:g} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def random_pan() -> str:
    """A well-formed PAN of an individual (its 4th letter is P), unlikely to be anyone's."""
    letters = string.ascii_uppercase
    head = "".join(secrets.choice(letters) for _ in range(3))
    digits = "".join(secrets.choice(string.digits) for _ in range(4))
    return f"{head}P{secrets.choice(letters)}{digits}{secrets.choice(letters)}"


def open_account(gateway: Gateway, name: str) -> Person:
    email = f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.com"
    person = Person(name, email, password=f"journey {secrets.token_hex(8)} 42")
    credentials = {"email": person.email, "password": person.password}
    gateway.ok("POST", "/v1/auth/register", credentials | {"fullName": f"{name} Example"})
    login = gateway.ok("POST", "/v1/auth/login", credentials)
    person.token = login["tokens"]["accessToken"]
    wallet = gateway.ok(
        "POST", "/v1/wallets", {"requestId": rid(), "displayName": name}, token=person.token
    )
    person.wallet_id = wallet["wallet"]["walletId"]
    body = {"requestId": rid(), "pin": PIN, "pinConfirmation": PIN}
    gateway.ok("POST", "/v1/wallets/me/pin", body, token=person.token)
    step(f"{name}: registered as {person.email}, wallet {person.wallet_id}, PIN set")
    return person


def approve_kyc(gateway: Gateway, person: Person, staff: str) -> None:
    body = {"requestId": rid(), "documentType": "DOCUMENT_TYPE_PAN", "documentNumber": random_pan()}
    submitted = gateway.ok("POST", "/v1/kyc/submissions", body, token=person.token)
    submission = submitted["submission"]["submissionId"]
    path = f"/v1/admin/kyc/{submission}:approve"
    gateway.ok("POST", path, {"requestId": rid(), "note": "example journey"}, token=staff)

    def full_tier() -> bool:
        wallet = gateway.ok("GET", "/v1/wallets/me", token=person.token)["wallet"]
        return bool(wallet["kycTier"] == "KYC_TIER_FULL")

    eventually(f"{person.name}'s wallet at KYC_TIER_FULL", full_tier)
    step(f"{person.name}: KYC submission {submission} approved; the wallet is KYC_TIER_FULL")


def balance(gateway: Gateway, person: Person) -> int:
    reply = gateway.ok("GET", "/v1/wallets/me/balance", token=person.token)
    return int(reply["balance"]["amountMinor"])


def confirm_address(gateway: Gateway, person: Person, maildir: Path) -> None:
    """Reads the confirmation code from the mail (a new person has just this one) and
    redeems it."""
    mail = wait_for_message(maildir, to=person.email, subject_contains=CONFIRM_SUBJECT, timeout=30)
    body = mail.message.get_body(preferencelist=("plain",))
    found = _CODE.search(str(body.get_content() if body is not None else ""))
    if found is None:
        raise JourneyError(f"no confirmation code in the mail to {person.email}")
    gateway.ok("POST", "/v1/ip-trust:confirm", {"requestId": rid(), "token": found["code"]})
    step(f"{person.name}: confirmed this machine's address with the mailed code")


def send(gateway: Gateway, asha: Person, ravi: Person, maildir: Path) -> dict[str, Any]:
    request = {
        "requestId": rid(),
        "recipientWalletId": ravi.wallet_id,
        "amount": inr(25_000),
        "pin": PIN,
        "note": "dinner",
    }
    refused = gateway.call("POST", "/v1/transactions:send", request, token=asha.token)
    if (refused.status, refused.reason) != (400, "IP_NOT_TRUSTED"):
        raise JourneyError(f"a first send from a new address answered {refused}")
    step("Asha: the first send from this machine is refused (IP_NOT_TRUSTED), a code is mailed")
    confirm_address(gateway, asha, maildir)
    reply = gateway.ok("POST", "/v1/transactions:send", request, token=asha.token)
    sent: dict[str, Any] = reply["transaction"]
    step(
        f"Asha: sent {rupees(25_000)} to {ravi.wallet_id}: {sent['referenceId']}, {sent['status']}"
    )
    replay = gateway.ok("POST", "/v1/transactions:send", request, token=asha.token)
    if replay["transaction"] != sent:
        raise JourneyError("a retry of the same request answered another transaction")
    step("Asha: a retry with the same requestId replays the same transaction")
    return sent


def histories(gateway: Gateway, asha: Person, ravi: Person, sent: dict[str, Any]) -> None:
    listed = gateway.ok("GET", "/v1/transactions?pageSize=10", token=ravi.token)["transactions"]
    credit = next((t for t in listed if t["referenceId"] == sent["referenceId"]), None)
    if credit is None or credit["type"] != "TRANSACTION_TYPE_CREDIT":
        raise JourneyError(f"Ravi's history lacks the credit of {sent['referenceId']}")
    step(
        f"Ravi: his history shows the credit, balance after {rupees(credit['balanceAfter']['amountMinor'])}"
    )
    ref = gateway.ok("GET", f"/v1/transactions/reference/{sent['referenceId']}", token=ravi.token)
    by_request = gateway.ok(
        "GET", f"/v1/transactions/request/{sent['requestId']}", token=asha.token
    )
    if ref["transaction"]["walletId"] != ravi.wallet_id or by_request["transaction"] != sent:
        raise JourneyError("the lookups by reference and by request id disagree")
    step("both: the transaction found by its reference (Ravi's side) and by request id (Asha's)")
    for person in (asha, ravi):

        def noted(person: Person = person) -> list[str]:
            notes = gateway.ok("GET", "/v1/notifications", token=person.token)["notifications"]
            return [n["title"] for n in notes if sent["referenceId"] in n.get("body", "")]

        titles = eventually(f"{person.name}'s notification of the send", noted)
        step(f"{person.name}: notified: {titles[0]!r}")


def withdraw(gateway: Gateway, asha: Person, account: str, want: str) -> dict[str, Any]:
    body = {
        "requestId": rid(),
        "amount": inr(10_000),
        "pin": PIN,
        "bankAccount": {
            "ifsc": "HDFC0001234",
            "accountNumber": account,
            "accountHolderName": "Asha Example",
        },
    }
    pending = gateway.ok("POST", "/v1/transactions:withdraw", body, token=asha.token)
    withdrawal = pending["transaction"]
    path = f"/v1/transactions/{withdrawal['transactionId']}"

    def settled() -> dict[str, Any] | None:
        found: dict[str, Any] = gateway.ok("GET", path, token=asha.token)["transaction"]
        return found if found["status"] != "TRANSACTION_STATUS_PENDING" else None

    final = eventually(f"the withdrawal to {account} to settle", settled)
    if final["status"] != want:
        raise JourneyError(f"the withdrawal to {account} ended {final['status']}, not {want}")
    return final


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", default="127.0.0.1:8080", help="the gateway's host:port")
    parser.add_argument(
        "--maildir",
        type=Path,
        default=Path("var/mail"),
        help="the SMTP sink's mail directory, where the mailed code is read (default var/mail)",
    )
    parser.add_argument(
        "--staff-email",
        required=True,
        help="an admin or super_admin; the password is read from $STAFF_PASSWORD, or asked for",
    )
    args = parser.parse_args()
    password = os.environ.get("STAFF_PASSWORD") or getpass.getpass(f"{args.staff_email}: ")
    gateway = Gateway(args.gateway)
    try:
        login = {"email": args.staff_email, "password": password}
        staff = gateway.ok("POST", "/v1/auth/login", login)["tokens"]["accessToken"]
        asha, ravi = open_account(gateway, "Asha"), open_account(gateway, "Ravi")
        for person in (asha, ravi):
            approve_kyc(gateway, person, staff)
        top_up = {
            "requestId": rid(),
            "amount": inr(500_000),
            "paymentMethod": "PAYMENT_METHOD_UPI",
            "paymentReference": f"upi-{uuid.uuid4().hex[:16]}",
        }
        gateway.ok("POST", "/v1/transactions:topUp", top_up, token=asha.token)
        step(f"Asha: topped up {rupees(500_000)} by UPI")
        sent = send(gateway, asha, ravi, args.maildir)
        histories(gateway, asha, ravi, sent)
        paid = withdraw(gateway, asha, "123456789012", "TRANSACTION_STATUS_COMPLETED")
        to = paid["counterparty"].get("description", "her bank")
        step(f"Asha: withdrew {rupees(10_000)} to {to}: paid by the bank")
        withdraw(gateway, asha, REFUSING_ACCOUNT, "TRANSACTION_STATUS_FAILED")
        step(
            f"Asha: a withdrawal to {REFUSING_ACCOUNT} was refused by the bank; the money came back"
        )
        step(
            f"balances: Asha {rupees(balance(gateway, asha))}, Ravi {rupees(balance(gateway, ravi))}"
        )
        verdict = gateway.ok("GET", "/v1/admin/ledger:verify", token=staff)
        if verdict.get("ok") is not True:
            raise JourneyError(f"the ledger verifier found a problem: {json.dumps(verdict)}")
        step("staff: the ledger verifies (every transaction balances, everything sums to zero)")
    except (JourneyError, OSError, TimeoutError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
