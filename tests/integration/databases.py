"""A private pair of databases (vaultpay and vaultpay_auth, with their roles) on the test
session's PostgreSQL, dropped afterwards: for tests that migrate or grant differently from the
shared fixtures."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import Provisioned, deprovision, provision, unique_suffix

__all__ = ["fresh_databases"]


@contextmanager
def fresh_databases(infra: Infra, tag: str) -> Iterator[Provisioned]:
    """Provisioned databases and roles named with a unique suffix starting with `tag`."""
    admin = infra.postgres.admin_dsn
    dbs = provision(admin, suffix=unique_suffix(tag), password=secrets.token_urlsafe(24))
    try:
        yield dbs
    finally:
        deprovision(admin, dbs)
