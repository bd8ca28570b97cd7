"""A local SMTP sink: every message the services send lands as an .eml file in a directory.

    python -m vaultpay_devstack.smtp_sink --port 1025 --maildir var/mail

One log line per message (from, to, subject). Nothing is relayed anywhere. Tests read the
mail back with `read_messages` / `wait_for_message`, e.g. to pick a PIN-reset token out of the
body:

    mail = wait_for_message(Path("var/mail"), to="asha@example.com", subject_contains="PIN")
    mail.text
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from vaultpay_devstack.procs import LOOPBACK, ManagedProcess, free_port, port_accepts, wait_until
from vaultpay_devstack.workspace import python_env

__all__ = [
    "MaildirHandler",
    "SmtpSink",
    "StoredMessage",
    "main",
    "read_messages",
    "start_smtp_sink",
    "wait_for_message",
]

_log = logging.getLogger("vaultpay.smtp_sink")
_ENVELOPE_FROM = "X-Envelope-From"
_ENVELOPE_TO = "X-Envelope-To"


class MaildirHandler:
    """aiosmtpd handler: writes each message atomically as `<ns>-<id>.eml` in `maildir`."""

    def __init__(self, maildir: Path) -> None:
        self.maildir = maildir
        maildir.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        raw = envelope.original_content or envelope.content
        body = raw if isinstance(raw, bytes) else str(raw).encode()
        recipients = ", ".join(envelope.rcpt_tos)
        trace = f"{_ENVELOPE_FROM}: {envelope.mail_from}\r\n{_ENVELOPE_TO}: {recipients}\r\n"
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml"
        partial = self.maildir / f".{name}.part"
        partial.write_bytes(trace.encode() + body)
        partial.rename(self.maildir / name)
        subject = BytesParser(policy=policy.default).parsebytes(body, headersonly=True)["subject"]
        _log.info(
            "mail from=%s to=%s subject=%r -> %s", envelope.mail_from, recipients, subject, name
        )
        return "250 Message accepted for delivery"


@dataclass(frozen=True)
class StoredMessage:
    """One received message as the sink stored it."""

    path: Path
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["subject"] or "")

    @property
    def text(self) -> str:
        """The plain-text body (or the HTML one when there is no plain part)."""
        part = self.message.get_body(preferencelist=("plain", "html"))
        return "" if part is None else str(part.get_content()).replace("\r\n", "\n")


def read_messages(maildir: Path) -> list[StoredMessage]:
    """Every stored message, oldest first."""
    if not maildir.is_dir():
        return []
    messages = []
    for path in sorted(maildir.glob("*.eml")):
        parsed = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        assert isinstance(parsed, EmailMessage)
        recipients = [r.strip() for r in str(parsed[_ENVELOPE_TO] or "").split(",") if r.strip()]
        messages.append(StoredMessage(path, str(parsed[_ENVELOPE_FROM] or ""), recipients, parsed))
    return messages


def wait_for_message(
    maildir: Path,
    *,
    to: str | None = None,
    subject_contains: str | None = None,
    after: int = 0,
    timeout: float = 10.0,
) -> StoredMessage:
    """The first message (skipping the first `after`) matching recipient/subject; waits for it."""
    found: list[StoredMessage] = []

    def arrived() -> bool:
        for mail in read_messages(maildir)[after:]:
            if to is not None and to.lower() not in (r.lower() for r in mail.recipients):
                continue
            if subject_contains is not None and subject_contains not in mail.subject:
                continue
            found.append(mail)
            return True
        return False

    wait_until(arrived, what=f"a mail to {to or 'anyone'} in {maildir}", timeout=timeout)
    return found[0]


@dataclass(frozen=True)
class SmtpSink:
    """A running sink subprocess."""

    host: str
    port: int
    maildir: Path
    process: ManagedProcess

    def stop(self) -> None:
        self.process.stop()


def start_smtp_sink(maildir: Path, *, log: Path, port: int | None = None) -> SmtpSink:
    """Runs the sink as `python -m vaultpay_devstack.smtp_sink` and waits for its port."""
    port = port or free_port()
    argv = [sys.executable, "-m", "vaultpay_devstack.smtp_sink"]
    argv += ["--port", str(port), "--maildir", str(maildir)]
    proc = ManagedProcess.start("smtp-sink", argv, log=log, env=python_env(), stop_timeout=5.0)
    try:
        wait_until(lambda: port_accepts(port), what=f"SMTP sink on {LOOPBACK}:{port}", proc=proc)
    except BaseException:
        proc.stop()
        raise
    return SmtpSink(LOOPBACK, port, maildir, proc)


async def _serve(host: str, port: int, maildir: Path) -> None:
    from aiosmtpd.smtp import SMTP

    handler = MaildirHandler(maildir)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="vaultpay-smtp-sink", ident="VaultPay SMTP sink"),
        host=host,
        port=port,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _log.info("SMTP sink on %s:%d, storing mail in %s", host, port, maildir)
    async with server:
        await stop.wait()
    _log.info("SMTP sink stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--maildir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command chatter
    asyncio.run(_serve(args.host, args.port, args.maildir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
