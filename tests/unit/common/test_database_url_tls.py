"""A DATABASE_URL's TLS options mean the same on every connection a service opens from it
(review: no verified TLS to PostgreSQL was possible). The engines' pools and wallet's LISTEN
link both call asyncpg.connect; each call is recorded here and resolved by asyncpg's own
argument parser, as asyncpg.connect would, and the two must agree. Before, `sslmode=` and
`sslrootcert=` were keywords asyncpg.connect does not take (TypeError: every engine failed),
and `ssl=` reached the LISTEN link as a server setting (PostgreSQL refused the login, wallet
did not start) after resolving to `prefer`: encrypted if offered, never verified.
"""

from __future__ import annotations

import datetime
import inspect
import ssl
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from asyncpg.connect_utils import _parse_connect_arguments
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vaultpay_common.db import asyncpg_dsn, create_engine
from vaultpay_wallet.adapters.notification_hub import NotificationHub, PgNotificationListener

URL = "postgresql+asyncpg://app:s%40cret@pg.example.internal:5432/vaultpay"
MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
TLS_OPTIONS = {"ssl", "sslmode", "sslrootcert"}
_CONNECT = inspect.signature(asyncpg.connect)  # the real one's, before the recorder replaces it


class _RecordedError(Exception):
    pass


Call = tuple[tuple[Any, ...], dict[str, Any]]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Call]:
    """asyncpg.connect's calls, none reaching a server; no TLS setting from the environment
    (a home without ~/.postgresql)."""
    for name in ("PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGSSLCRL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    recorded: list[Call] = []

    async def connect(*args: Any, **kwargs: Any) -> Any:
        recorded.append((args, kwargs))
        raise _RecordedError

    monkeypatch.setattr(asyncpg, "connect", connect)
    return recorded


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vaultpay test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "ca dir" / "root.crt"  # a space: the path is quoted into the DSN
    path.parent.mkdir()
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _resolved(call: Call) -> dict[str, Any]:
    """What asyncpg.connect makes of its arguments (a keyword it does not take: TypeError)."""
    bound = _CONNECT.bind(*call[0], **call[1])
    bound.apply_defaults()
    wanted = inspect.signature(_parse_connect_arguments).parameters
    addrs, params, _config = _parse_connect_arguments(
        **{name: value for name, value in bound.arguments.items() if name in wanted}
    )
    context = params.ssl
    return {
        "addrs": addrs,
        "login": (params.user, params.password, params.database),
        "sslmode": params.sslmode,
        "tls": None
        if not isinstance(context, ssl.SSLContext)
        else (
            context.check_hostname,
            context.verify_mode,
            [ca["subject"] for ca in context.get_ca_certs()],
        ),
        "server_settings": params.server_settings or {},
    }


async def _engine_call(url: str, calls: list[Call]) -> dict[str, Any]:
    engine = create_engine(url, application_name="tls-test")
    try:
        with pytest.raises(_RecordedError):
            await engine.connect()
    finally:
        await engine.dispose()
    return _resolved(calls.pop())


async def _listener_call(url: str, calls: list[Call]) -> dict[str, Any]:
    listener = PgNotificationListener(url, NotificationHub())
    with pytest.raises(_RecordedError):
        await listener.start()
    return _resolved(calls.pop())


def _same_but_settings(engine: dict[str, Any], listener: dict[str, Any]) -> None:
    """The two paths agree on where, who and how securely; their own server settings differ
    (application_name, the engine's timeouts), and carry no TLS option."""
    for resolved in (engine, listener):
        assert not TLS_OPTIONS & set(resolved["server_settings"])
    assert {k: v for k, v in engine.items() if k != "server_settings"} == {
        k: v for k, v in listener.items() if k != "server_settings"
    }
    assert engine["addrs"] == [("pg.example.internal", 5432)]
    assert engine["login"] == ("app", "s@cret", "vaultpay")


@pytest.mark.parametrize("spelling", ["ssl", "sslmode"])
@pytest.mark.parametrize("mode", MODES)
async def test_each_tls_mode_means_the_same_on_both_paths(
    calls: list[Call], ca_file: Path, spelling: str, mode: str
) -> None:
    url = f"{URL}?{spelling}={mode}&sslrootcert={str(ca_file).replace(' ', '%20')}"
    engine = await _engine_call(url, calls)
    listener = await _listener_call(url, calls)
    _same_but_settings(engine, listener)
    assert engine["sslmode"].name == mode.replace("-", "_")
    verifies = mode in {"require", "verify-ca", "verify-full"}  # require: with a CA, as libpq
    expected = {
        "disable": None,
        "allow": (False, ssl.CERT_NONE),
        "prefer": (False, ssl.CERT_NONE),
        "require": (False, ssl.CERT_REQUIRED),
        "verify-ca": (False, ssl.CERT_REQUIRED),
        "verify-full": (True, ssl.CERT_REQUIRED),
    }[mode]
    if expected is None:
        assert engine["tls"] is None
    else:
        assert engine["tls"][:2] == expected
        assert bool(engine["tls"][2]) is verifies  # the CA bundle loaded where it is used


async def test_the_ca_bundle_from_pgsslrootcert(
    calls: list[Call], ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deployment's way: `?ssl=verify-full` in the URL, the CA's path in PGSSLROOTCERT."""
    monkeypatch.setenv("PGSSLROOTCERT", str(ca_file))
    engine = await _engine_call(f"{URL}?ssl=verify-full", calls)
    listener = await _listener_call(f"{URL}?ssl=verify-full", calls)
    _same_but_settings(engine, listener)
    assert engine["tls"] is not None
    assert engine["tls"][:2] == (True, ssl.CERT_REQUIRED)
    assert engine["tls"][2]


async def test_no_option_is_asyncpgs_default_on_both_paths(
    calls: list[Call],
) -> None:
    engine = await _engine_call(URL, calls)
    listener = await _listener_call(URL, calls)
    _same_but_settings(engine, listener)
    assert engine["sslmode"].name == "prefer"


async def test_verify_full_without_a_ca_fails_on_both_paths(
    calls: list[Call],
) -> None:
    """No CA anywhere: asyncpg refuses to connect, never falls back to an unverified link."""
    for connect in (_engine_call, _listener_call):
        with pytest.raises(asyncpg.ClientConfigurationError, match="root certificate"):
            await connect(f"{URL}?sslmode=verify-full", calls)


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("ssl=verify", "sslmode must be one of"),
        ("sslmode=true", "sslmode must be one of"),
        ("ssl=require&sslmode=verify-full", "not both"),
        ("ssl=require&ssl=verify-full", "'ssl' is given twice"),
        ("sslmode=", "sslmode must be one of"),  # an unset template variable: not `prefer`
        ("ssl=", "sslmode must be one of"),
        ("sslcert=/client.crt", "'sslcert' is not supported"),
        ("prepared_statement_cache_size=0", "'prepared_statement_cache_size' is not supported"),
        ("application_name=x", "'application_name' is not supported"),
    ],
)
async def test_an_unknown_option_or_mode_is_refused_at_start_on_both_paths(
    calls: list[Call], query: str, named: str
) -> None:
    """Refused when the engine or the listener is built (a service's start-up), naming the
    option and never the URL's password."""
    for build in (
        lambda url: create_engine(url, application_name="tls-test"),
        lambda url: PgNotificationListener(url, NotificationHub()),
    ):
        with pytest.raises(ValueError, match=named) as refused:
            build(f"{URL}?{query}")
        assert "s%40cret" not in str(refused.value)
        assert "s@cret" not in str(refused.value)
    assert not calls


@pytest.mark.parametrize(
    ("written", "password"),
    [
        ("s3cr?tP4ss", "s3cr?tP4ss"),  # as an operator pastes it: SQLAlchemy reads it so
        ("ab#cd", "ab#cd"),
        ("a/b", "a/b"),
        ("p%40ss%3Fw", "p@ss?w"),  # percent-encoded
    ],
)
async def test_a_password_with_url_characters_reaches_the_server_whole(
    calls: list[Call], written: str, password: str
) -> None:
    """Review of the first version: the URL was split by urllib, not as SQLAlchemy reads it, so
    a password with `?` stopped the start with part of the password in the message, and one
    with `#` or `/` was cut short. Read as the engines always read it, written back quoted,
    on both paths."""
    url = f"postgresql+asyncpg://app:{written}@db.example:5432/vaultpay?ssl=require"
    for connected in (await _engine_call(url, calls), await _listener_call(url, calls)):
        assert connected["addrs"] == [("db.example", 5432)]
        assert connected["login"] == ("app", password, "vaultpay")
        assert connected["sslmode"].name == "require"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://app:S3cr@t:Tail99@db:5432/vaultpay",  # the tail parsed as a port
        "postgresql+asyncpg://app:S3cr@tTail99@db:5432/vaultpay",  # the tail in the host
        "postgresql+asyncpg://app:S3cr3tTail99@db1:5432,db2:5432/vaultpay",  # two hosts
    ],
)
def test_a_url_that_does_not_parse_is_refused_without_its_text(url: str) -> None:
    """An unencoded @ in the password put its tail in the port (SQLAlchemy's own error then
    quoted it) or in the host name; several hosts failed the same way. The refusal says what
    shape a URL takes, and nothing of this one."""
    with pytest.raises(ValueError, match="percent-encoded") as refused:
        asyncpg_dsn(url)
    assert "Tail99" not in str(refused.value)
