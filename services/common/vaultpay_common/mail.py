"""Outgoing mail over SMTP (a local sink in development), off the event loop.

    mailer = SmtpMailer(SmtpSettings())
    await mailer.send("alice@example.com", "Your PIN reset code", "...")

With `starttls` the connection is upgraded (the server's certificate and name verified) before
anything else is said, the login included; with `username`, it logs in. Delivery failures (a
refused login, a server without STARTTLS, a certificate that does not verify) raise
`MailDeliveryError`, naming the exception's type only; callers that must not lose mail send it
from an outbox handler, which retries.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage

from vaultpay_common.config import SmtpSettings

__all__ = ["MailDeliveryError", "SmtpMailer"]

_TIMEOUT_SECONDS = 10.0


class MailDeliveryError(Exception):
    """The SMTP server refused the message or could not be reached."""


class SmtpMailer:
    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings
        # Verifies the certificate chain and the host name (create_default_context); the
        # system's CAs unless `ca_file` names others.
        self._tls: ssl.SSLContext | None = None
        if settings.starttls:
            cafile = str(settings.ca_file) if settings.ca_file is not None else None
            self._tls = ssl.create_default_context(cafile=cafile)

    async def send(self, to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self._settings.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        settings = self._settings
        try:
            with smtplib.SMTP(settings.host, settings.port, timeout=_TIMEOUT_SECONDS) as smtp:
                if self._tls is not None:
                    # SMTPNotSupportedError when the server offers none: no plain-text fall-back.
                    smtp.starttls(context=self._tls)
                if settings.username is not None and settings.password is not None:
                    smtp.login(settings.username, settings.password.get_secret_value())
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise MailDeliveryError(f"SMTP delivery failed: {type(exc).__name__}") from exc
