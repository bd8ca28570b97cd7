"""README's error-reason tables list every reason the gateway, auth and the money movements produce, each with the
gRPC code and HTTP status the code gives it, and its KYC examples use a file that ships."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest
from google.rpc import code_pb2

from vaultpay_auth.domain import errors as auth_errors
from vaultpay_auth.service_layer.introspection import InvalidClientError
from vaultpay_common.errors import DomainError, ErrorKind
from vaultpay_gateway import errors as gateway_errors

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()

# How Envoy's transcoder (grpc-gateway's table) turns a gRPC code into an HTTP status.
_HTTP = {
    ErrorKind.INVALID_ARGUMENT: 400,
    ErrorKind.FAILED_PRECONDITION: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.ALREADY_EXISTS: 409,
    ErrorKind.ABORTED: 409,
    ErrorKind.PERMISSION_DENIED: 403,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.RESOURCE_EXHAUSTED: 429,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.DEADLINE_EXCEEDED: 504,
}


def _rows(start: str, end: str) -> dict[str, list[str]]:
    """The table rows between two markers, by reason: [gRPC cell, HTTP cell, when]."""
    section = README[README.index(start) : README.index(end, README.index(start))]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        match = re.match(r"^\| `([A-Z_]+)` \|(.*)\|$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


def _gateway_expected() -> set[tuple[str, str, str]]:
    name = code_pb2.Code.Name
    expected: set[tuple[str, str, str]] = set()
    for e in gateway_errors.GATEWAY_ERRORS:
        # JSON clients read `code`, gRPC clients `grpc_code` (they differ for 404).
        expected |= {(e.reason, name(e.code), str(e.http_status))}
        expected |= {(e.reason, name(e.grpc_code), str(e.http_status))}
    for reason in (
        gateway_errors.UNKNOWN_FIELD_REASON,
        gateway_errors.DUPLICATE_FIELD_REASON,
        gateway_errors.QUERY_PARAMETER_REASON,
        gateway_errors.UPGRADE_NOT_SUPPORTED_REASON,
    ):
        expected.add((reason, "INVALID_ARGUMENT", "400"))
    expected.add((gateway_errors.TOKEN_EXPIRED_REASON, "UNAUTHENTICATED", "401"))
    expected.add((gateway_errors.AUTH_UNAVAILABLE_REASON, "UNAVAILABLE", "503"))
    return expected


def _auth_expected() -> set[tuple[str, str, str]]:
    classes: list[type[DomainError]] = [
        getattr(auth_errors, name) for name in auth_errors.__all__
    ] + [InvalidClientError]
    expected = {(c.reason, c.kind.value, str(_HTTP[c.kind])) for c in classes}
    expected.add(("INVALID_ARGUMENT", "INVALID_ARGUMENT", "400"))  # ValidationError
    return expected


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        ("The gateway's own (domain `vaultpay.gateway`", "Auth's (domain", _gateway_expected()),
        ("Auth's (domain `vaultpay.auth`", "Common to every service", _auth_expected()),
    ],
    ids=["gateway", "auth"],
)
def test_every_reason_is_in_the_readme_with_its_codes(
    start: str, end: str, expected: set[tuple[str, str, str]]
) -> None:
    rows = _rows(start, end)

    for reason, grpc_code, http_status in sorted(expected):
        assert reason in rows, f"README has no row for {reason}"
        grpc_cell, http_cell, _ = rows[reason]
        assert f"`{grpc_code}`" in grpc_cell, (reason, grpc_code, grpc_cell)
        if reason != "INVALID_CLIENT":  # internal RPC: no HTTP route
            assert http_status in http_cell, (reason, http_status, http_cell)


def test_the_kyc_examples_read_a_file_that_ships() -> None:
    files = set(re.findall(r"FILE=(\S+)", README))

    assert files, "the KYC examples name their file in FILE="
    for name in files:
        path = ROOT / name
        assert path.is_file(), name
        assert path.read_bytes().startswith(b"%PDF-"), name
    assert "scan.pdf" not in README


def _transfer_listed() -> dict[str, set[str]]:
    """The transfer section's "Error reasons (HTTP status)" paragraph: each reason (or group
    of reasons joined by ` / `) followed by its status, as `REASON` (NNN."""
    start = README.index("Error reasons (HTTP status):", README.index("## The transfer service"))
    paragraph = README[start : README.index("\n\n", start)]
    listed: dict[str, set[str]] = {}
    for group, status in re.findall(r"((?:`[A-Z_]+`\s*/\s*)*`[A-Z_]+`)\s*\((\d{3})", paragraph):
        for reason in re.findall(r"`([A-Z_]+)`", group):
            listed.setdefault(reason, set()).add(status)
    return listed


def _transfer_expected() -> set[tuple[str, str]]:
    from vaultpay_common.db import DatabaseUnavailableError
    from vaultpay_common.errors import DeadlineExceededError
    from vaultpay_common.idempotency import IdempotencyKeyInUseError, IdempotencyKeyReusedError
    from vaultpay_transfer.domain import errors as transfer_errors
    from vaultpay_wallet.domain import errors as wallet_errors

    classes: list[type[DomainError]] = [
        c
        for c in (getattr(transfer_errors, name) for name in transfer_errors.__all__)
        if isinstance(c, type) and issubclass(c, DomainError) and c.reason.isupper()
    ]
    # A movement's PIN check at wallet, passed through as wallet answers it.
    classes += [
        wallet_errors.InvalidPinError,
        wallet_errors.PinLockedError,
        wallet_errors.PinNotSetError,
        wallet_errors.PinCheckInProgressError,
        wallet_errors.PinChangedError,
        IdempotencyKeyInUseError,
        IdempotencyKeyReusedError,
        DatabaseUnavailableError,
        DeadlineExceededError,
    ]
    skipped = {"FAILED_PRECONDITION"}  # bases whose subclasses carry the reasons
    return {(c.reason, str(_HTTP[c.kind])) for c in classes if c.reason not in skipped} | {
        ("INVALID_ARGUMENT", "400")
    }


def test_every_transfer_reason_is_in_the_readme_with_its_http_status() -> None:
    """The movements' reasons, kept in step with the code (an acceptance audit of
    2026-12-04 found the list checked by hand only)."""
    listed = _transfer_listed()

    for reason, status in sorted(_transfer_expected()):
        assert reason in listed, f"README's transfer reasons do not list {reason}"
        assert listed[reason] == {status}, (reason, status, listed[reason])


def _reasons_defined_in(package: str) -> dict[str, str]:
    """Every reason a domain error of `package` (outside its entrypoints) carries, with the
    class that carries it."""
    root = importlib.import_module(package)
    reasons: dict[str, str] = {}
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        if ".entrypoints" in info.name:
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, DomainError)
                and value.__module__ == module.__name__
                and value.reason.isupper()
            ):
                reasons[value.reason] = f"{value.__module__}.{value.__name__}"
    return reasons


@pytest.mark.parametrize(
    ("package", "heading"),
    [("vaultpay_wallet", "## The wallet service"), ("vaultpay_kyc", "## The KYC service")],
)
def test_every_wallet_and_kyc_reason_is_in_its_section(package: str, heading: str) -> None:
    """The wallet's and KYC's reasons are prose, not tables: each must at least be named in
    its service's section (a review of 2026-12-05 found these two lists kept by hand)."""
    start = README.index(heading)
    section = README[start : README.index("\n## ", start + len(heading))]
    reasons = _reasons_defined_in(package)

    assert len(reasons) > 10, reasons  # the walk found the domain errors
    missing = {r: c for r, c in reasons.items() if f"`{r}`" not in section}
    assert not missing, f"README's {heading!r} does not name {missing}"
