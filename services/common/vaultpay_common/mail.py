"""Outgoing mail over SMTP (a local sink in development), off the event loop.

    mailer = SmtpMailer(SmtpSettings())
    await mailer.send("alice@example.com", "Your PIN reset code", "...")

Delivery failures raise `MailDeliveryError`; callers that must not lose mail send it from an
outbox handler, which retries.
"""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage

from vaultpay_common.config import SmtpSettings

__all__ = ["MailDeliveryError", "SmtpMailer"]

_TIMEOUT_SECONDS = 10.0


class MailDeliveryError(Exception):
    """The SMTP server refused the message or could not be reached."""


class SmtpMailer:
    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings

    async def send(self, to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self._settings.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        try:
            with smtplib.SMTP(
                self._settings.host, self._settings.port, timeout=_TIMEOUT_SECONDS
            ) as smtp:
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise MailDeliveryError(f"SMTP delivery failed: {type(exc).__name__}") from exc
