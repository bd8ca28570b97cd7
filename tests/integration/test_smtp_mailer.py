"""SmtpMailer against a real SMTP server (aiosmtpd, in a thread): plain SMTP to the local sink
by default; with VAULTPAY_SMTP_STARTTLS and a login, what a relay's submission port (587)
demands: STARTTLS with the certificate verified, then AUTH, then the message. A relay that
offers no STARTTLS, or whose certificate does not verify, gets nothing, the password least.

Review: `smtp.example.com:587` in deploy/k8s answered 530 (STARTTLS and a login required) to
the mailer's plain SMTP, and every PIN-reset and address-confirmation mail dead-lettered.

A later review: a non-ASCII password made smtplib raise UnicodeEncodeError, whose text (a
character of the password and its position) reached the relay's error, its logs and the
`dead-letters` output. It is refused at start-up now, and any exception smtplib does not
document is reported by its type and the step only."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import SecretStr

from tests.ports import ListenerPort
from vaultpay_common.config import SmtpSettings, load_settings
from vaultpay_common.mail import MailDeliveryError, SmtpMailer

USERNAME = "vaultpay-relay-user"
PASSWORD = "relay-password-CANARY"
NON_ASCII_PASSWORD = "relay-pässwörd-CANARY"
TO = "asha@example.com"


# ----- a CA and the relay's certificate, made for the test ---------------------------------


@dataclass(frozen=True)
class Pki:
    ca_file: Path  # what the mailer trusts (VAULTPAY_SMTP_CA_FILE)
    cert_file: Path  # the relay's chain
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _make_pki(folder: Path, label: str) -> Pki:
    """A CA and a server certificate it signs for 127.0.0.1 (as a public relay's would be),
    with the extensions a strict verifier asks for."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{label} test CA"))
        .issuer_name(_name(f"{label} test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    pki = Pki(folder / "ca.pem", folder / "relay.pem", folder / "relay.key")
    pki.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _make_pki(tmp_path_factory.mktemp("relay-pki"), "relay")


@pytest.fixture(scope="module")
def stranger_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA: the relay's certificate is not among what it vouches for."""
    return _make_pki(tmp_path_factory.mktemp("stranger-pki"), "stranger")


# ----- the relay --------------------------------------------------------------------------


@dataclass
class Relay:
    port: int
    delivered: list[tuple[str, list[str], bytes, bool]] = field(default_factory=list)
    # (login, password, over TLS) of each AUTH the relay was given.
    logins: list[tuple[str, str, bool]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        self.delivered.append(
            (envelope.mail_from, list(envelope.rcpt_tos), content, session.ssl is not None)
        )
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password, session.ssl is not None))
        # handled=False: aiosmtpd answers the failure (535) itself.
        return AuthResult(success=(login, password) == (USERNAME, PASSWORD), handled=False)


def _run_relay(**smtp: Any) -> Iterator[Relay]:
    with ListenerPort() as held:
        relay = Relay(held.port)
        if "authenticator" in smtp:
            smtp["authenticator"] = relay.authenticate
        controller = Controller(
            relay, hostname="127.0.0.1", port=held.port, ready_timeout=10.0, **smtp
        )
        controller.start()
        held.release()
    try:
        yield relay
    finally:
        controller.stop()


def _server_tls(pki: Pki) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    return context


@pytest.fixture
def plain_sink() -> Iterator[Relay]:
    """What `make run` and the tests start: plain SMTP, no STARTTLS, no AUTH."""
    yield from _run_relay()


@pytest.fixture
def submission_relay(pki: Pki) -> Iterator[Relay]:
    """A relay's port 587: nothing but EHLO before STARTTLS, no mail before AUTH, AUTH only
    over TLS (the 530 the review saw)."""
    yield from _run_relay(
        tls_context=_server_tls(pki),
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=True,
    )


def _relay_settings(port: int, ca_file: Path, password: str = PASSWORD) -> SmtpSettings:
    return SmtpSettings(
        host="127.0.0.1",
        port=port,
        starttls=True,
        ca_file=ca_file,
        username=USERNAME,
        password=password,
        sender="VaultPay <no-reply@vaultpay.example>",
    )


# ----- the conversations ------------------------------------------------------------------


async def test_the_local_sink_still_gets_plain_smtp_by_default(
    plain_sink: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("STARTTLS", "USERNAME", "PASSWORD", "CA_FILE"):
        monkeypatch.delenv(f"VAULTPAY_SMTP_{name}", raising=False)
    monkeypatch.setenv("VAULTPAY_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("VAULTPAY_SMTP_PORT", str(plain_sink.port))

    await SmtpMailer(SmtpSettings()).send(TO, "Your PIN reset code", "Use code 123456.")

    [(sender, to, content, over_tls)] = plain_sink.delivered
    assert (sender, to, over_tls) == ("no-reply@vaultpay.local", [TO], False)
    assert b"Use code 123456." in content


async def test_starttls_then_login_then_the_message(submission_relay: Relay, pki: Pki) -> None:
    mailer = SmtpMailer(_relay_settings(submission_relay.port, pki.ca_file))

    await mailer.send(TO, "Your PIN reset code", "Use code 123456.")

    assert submission_relay.logins == [(USERNAME, PASSWORD, True)]
    [(sender, to, content, over_tls)] = submission_relay.delivered
    assert (sender, to, over_tls) == ("no-reply@vaultpay.example", [TO], True)
    assert b"Subject: Your PIN reset code" in content


async def test_the_settings_read_from_the_environment_reach_the_relay(
    submission_relay: Relay, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The variables deploy/k8s sets (the password from wallet's Secret)."""
    for name, value in {
        "HOST": "127.0.0.1",
        "PORT": str(submission_relay.port),
        "STARTTLS": "true",
        "CA_FILE": str(pki.ca_file),
        "USERNAME": USERNAME,
        "PASSWORD": PASSWORD,
    }.items():
        monkeypatch.setenv(f"VAULTPAY_SMTP_{name}", value)

    await SmtpMailer(SmtpSettings()).send(TO, "Confirm a new address", "Code 654321.")

    assert [d[1] for d in submission_relay.delivered] == [[TO]]


async def test_a_refused_login_is_a_delivery_error_without_the_password(
    submission_relay: Relay, pki: Pki
) -> None:
    mailer = SmtpMailer(_relay_settings(submission_relay.port, pki.ca_file, "wrong-CANARY"))

    with pytest.raises(MailDeliveryError) as failed:
        await mailer.send(TO, "Your PIN reset code", "Use code 123456.")

    assert str(failed.value) == "SMTP delivery failed: SMTPAuthenticationError"
    assert "CANARY" not in str(failed.value)
    assert submission_relay.delivered == []


async def test_a_server_that_offers_no_starttls_gets_nothing(plain_sink: Relay, pki: Pki) -> None:
    """No fall-back to plain text: neither the login nor the message crosses unencrypted."""
    mailer = SmtpMailer(_relay_settings(plain_sink.port, pki.ca_file))

    with pytest.raises(MailDeliveryError) as failed:
        await mailer.send(TO, "Your PIN reset code", "Use code 123456.")

    assert str(failed.value) == "SMTP delivery failed: SMTPNotSupportedError"
    assert plain_sink.delivered == [] and plain_sink.logins == []


async def test_a_certificate_the_trusted_cas_do_not_vouch_for_is_refused(
    submission_relay: Relay, stranger_pki: Pki
) -> None:
    mailer = SmtpMailer(_relay_settings(submission_relay.port, stranger_pki.ca_file))

    with pytest.raises(MailDeliveryError) as failed:
        await mailer.send(TO, "Your PIN reset code", "Use code 123456.")

    assert str(failed.value) == "SMTP delivery failed: SSLCertVerificationError"
    assert submission_relay.logins == [] and submission_relay.delivered == []


@pytest.mark.parametrize("variable", ["USERNAME", "PASSWORD"])
def test_a_non_ascii_login_is_refused_at_start_up_without_its_value(
    variable: str,
    pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    login = {"USERNAME": USERNAME, "PASSWORD": PASSWORD, variable: NON_ASCII_PASSWORD}
    for name, value in {"STARTTLS": "true", "CA_FILE": str(pki.ca_file), **login}.items():
        monkeypatch.setenv(f"VAULTPAY_SMTP_{name}", value)

    with pytest.raises(SystemExit) as exited:
        load_settings(SmtpSettings, "vaultpay-wallet")

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"  VAULTPAY_SMTP_{variable}: Value error, must be ASCII" in err, err
    assert "CANARY" not in err and "ä" not in err and "ö" not in err


async def test_an_exception_smtplib_does_not_document_is_named_by_type_and_step_only(
    submission_relay: Relay, pki: Pki
) -> None:
    """Settings that skipped validation (built in code): the login's UnicodeEncodeError,
    whose text quotes a password character and its position, is not passed on, nor chained."""
    settings = SmtpSettings.model_construct(
        host="127.0.0.1",
        port=submission_relay.port,
        starttls=True,
        ca_file=pki.ca_file,
        username=USERNAME,
        password=SecretStr(NON_ASCII_PASSWORD),
    )

    with pytest.raises(MailDeliveryError) as failed:
        await SmtpMailer(settings).send(TO, "Your PIN reset code", "Use code 123456.")

    assert str(failed.value) == "SMTP delivery failed: UnicodeEncodeError during the login"
    assert failed.value.__cause__ is None and failed.value.__context__ is None
    assert submission_relay.logins == [] and submission_relay.delivered == []
