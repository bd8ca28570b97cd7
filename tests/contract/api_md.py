"""Reads the RPC tables of shared/API.md, the surface web clients are written against.

Each `## <service> — `vaultpay.<service>.v1`` section holds a table whose rows read

    | SendMoney | POST /v1/transactions:send | user, strict | ... |

The access column is translated into the `vaultpay.authz.v1.rule` it stands for, so the
tests can compare the document with the contract and notice when either one moves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tests.contract.access import Access
from vaultpay_devstack.paths import REPO_ROOT

__all__ = ["API_MD", "ApiRow", "parse_api_md"]

API_MD = REPO_ROOT.parent / "shared" / "API.md"

_SECTION = re.compile(r"^## .*`(?P<package>vaultpay\.[a-z_]+\.v\d+)`")
_ROUTE = re.compile(r"^(?P<verb>GET|POST|PUT|PATCH|DELETE) (?P<path>/\S+)$")
_NAME_YOURS = "(name yours)"
_ROLES = {
    "user": "ROLE_USER",
    "moderator+": "ROLE_MODERATOR",
    "admin+": "ROLE_ADMIN",
    "super_admin": "ROLE_SUPER_ADMIN",
}


@dataclass(frozen=True)
class ApiRow:
    """One RPC as API.md documents it."""

    package: str
    rpc: str
    verb: str | None
    path: str | None
    access: Access
    name_is_ours: bool

    @property
    def label(self) -> str:
        return f"{self.package} {self.rpc}"


def _access(cell: str) -> Access:
    public = internal = strict = False
    role = "ROLE_UNSPECIFIED"
    for token in (t.strip() for t in cell.split(",")):
        if token == "public":
            public = True
        elif token == "service":
            internal = True
        elif token == "service credentials":
            # The client credentials in the request are the authentication (like a login),
            # so the rule is public; the RPC still lives in an internal service, unrouted.
            public = True
        elif token == "strict":
            strict = True
        elif token == "own":
            pass  # an object-level check in the service layer, not part of the rule
        elif token in _ROLES:
            role = _ROLES[token]
        else:
            raise ValueError(f"unknown access token {token!r} in API.md cell {cell!r}")
    return Access(public=public, internal=internal, min_role=role, strict=strict)


def _row(package: str, cells: list[str]) -> ApiRow:
    rpc_cell, http_cell, access_cell = cells[0], cells[1], cells[2]
    route = _ROUTE.match(http_cell)
    if route is None and not http_cell.startswith("—"):
        raise ValueError(f"unreadable HTTP cell {http_cell!r} in API.md row {rpc_cell!r}")
    return ApiRow(
        package=package,
        rpc=rpc_cell.split()[0],
        verb=route["verb"] if route else None,
        path=route["path"] if route else None,
        access=_access(access_cell),
        name_is_ours=_NAME_YOURS in rpc_cell,
    )


def parse_api_md(source: Path = API_MD) -> list[ApiRow]:
    """Every RPC row of every package section, in document order."""
    rows: list[ApiRow] = []
    package: str | None = None
    for line in source.read_text(encoding="utf-8").splitlines():
        if section := _SECTION.match(line):
            package = section["package"]
            continue
        if line.startswith("## "):
            package = None
        if package is None or not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[0] == "RPC" or set(cells[0]) <= {"-", ":"}:
            continue
        rows.append(_row(package, cells))
    return rows
