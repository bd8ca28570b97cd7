"""Outgoing mail over SMTP (a local sink in development), off the event loop, within a deadline.

    mailer = SmtpMailer(SmtpSettings())
    await mailer.send("alice@example.com", "Your PIN reset code", "...")

With `starttls` the connection is upgraded (the server's certificate and name verified) before
anything else is said, the login included; with `username`, it logs in. Delivery failures (a
refused login, a server without STARTTLS, a certificate that does not verify, a server too slow
to finish within `deadline`) raise `MailDeliveryError`, naming the exception's type or the step
that ran out of time only; callers that must not lose mail send it from an outbox handler,
which retries.

The whole conversation (connecting, every command and reply, the TLS handshake) runs in one
thread within `deadline` seconds of the call (default 20 s, shorter than the outbox relay's
30 s `delivery_timeout` less the contact look-up before it): each step may take only what is
left, so an attempt ends in its thread before the relay gives up on it. Before, a thread the
relay had given up on ran on and delivered (a review: a relay answering each command in 5 s
got up to 20 copies of a PIN-reset mail, and a dead-lettered event). The threads are the
mailers' own (`MAIL_THREADS`; the time a send waits for one counts), never the default executor
other code reaches through `to_thread`. A failure after the server had the whole message but
before its verdict is `MailOutcomeUnknownError`: it may have been delivered, and sending again
may deliver a copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import smtplib
import socket
import ssl
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from email.message import EmailMessage
from typing import TYPE_CHECKING

from vaultpay_common.config import SmtpSettings

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = [
    "DEFAULT_DEADLINE_SECONDS",
    "MAIL_THREADS",
    "MailDeliveryError",
    "MailOutcomeUnknownError",
    "SmtpMailer",
]

DEFAULT_DEADLINE_SECONDS = 20.0
MAIL_THREADS = 4
# Shared by every mailer of the process; threads start when first needed.
_EXECUTOR = ThreadPoolExecutor(max_workers=MAIL_THREADS, thread_name_prefix="vaultpay-smtp")
# Verbs that may name a step in an error; anything else sent is an AUTH continuation (never
# named: it carries the password).
_VERBS = frozenset({"EHLO", "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "RSET", "QUIT"})
_END_OF_DATA = "the end of the data"


class MailDeliveryError(Exception):
    """The SMTP server refused the message, could not be reached or did not finish in time."""


class MailOutcomeUnknownError(MailDeliveryError):
    """The server had the whole message, but its verdict never came (no reply to the end of the
    data within the deadline, or the connection ended first): it may have been delivered."""


class _OutOfTimeError(Exception):
    """The deadline passed before `step` was done. Not an OSError: smtplib would turn it into
    SMTPServerDisconnected."""

    def __init__(self, step: str) -> None:
        super().__init__(step)
        self.step = step


class _Deadline:
    def __init__(self, ends: float) -> None:
        self.ends = ends  # time.monotonic()

    def left(self, step: str) -> float:
        """Seconds left for `step`; `_OutOfTimeError` if none."""
        left = self.ends - time.monotonic()
        if left <= 0:
            raise _OutOfTimeError(step)
        return left

    def passed(self) -> bool:
        return time.monotonic() >= self.ends


class _Replies:
    """What smtplib reads replies from (in place of `sock.makefile`): each read waits at most
    what is left of the deadline, so a server that trickles a reply byte by byte cannot
    stretch it, as a per-read timeout would let it."""

    def __init__(self, smtp: _TimedSmtp) -> None:
        self._smtp = smtp
        self._buffer = b""

    def readline(self, limit: int = -1) -> bytes:
        smtp = self._smtp
        while b"\n" not in self._buffer and (limit < 0 or len(self._buffer) < limit):
            sock = smtp.sock
            if sock is None:
                break
            sock.settimeout(smtp.deadline.left(smtp.awaiting))
            try:
                chunk = sock.recv(4096)
            except TimeoutError:  # it waited exactly what was left
                raise _OutOfTimeError(smtp.awaiting) from None
            if not chunk:
                break
            self._buffer += chunk
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        if limit >= 0:
            end = min(end, limit)
        line, self._buffer = self._buffer[:end], self._buffer[end:]
        return line

    def close(self) -> None:
        self._buffer = b""


class _TimedSmtp(smtplib.SMTP):
    """smtplib.SMTP under one deadline: connecting, each command, each reply and the TLS
    handshake may take only what is left of it, past which `_OutOfTimeError` names the step.
    `data_sent` and `verdict` say how far the message got."""

    def __init__(self, host: str, port: int, deadline: _Deadline) -> None:
        self.deadline = deadline
        self.awaiting = "a connection"
        self.command = ""  # the verb last sent (AUTH for a login's continuations)
        self.data_sent = False  # the whole message, its final "." included, was sent
        self.verdict: int | None = None  # the reply code to the end of the data
        try:
            super().__init__(
                host, port, local_hostname=_local_hostname(), timeout=deadline.left(self.awaiting)
            )
        except BaseException:
            self.close()
            raise

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # socket.create_connection gives each of the host's addresses the whole timeout.
        error: OSError | None = None
        for family, kind, proto, _, address in socket.getaddrinfo(
            host, port, 0, socket.SOCK_STREAM
        ):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self.deadline.left(self.awaiting))
                if self.source_address:
                    sock.bind(self.source_address)
                sock.connect(address)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            except BaseException:
                sock.close()
                raise
            self.awaiting = "the server's greeting"
            return sock
        if self.deadline.passed():
            raise _OutOfTimeError(self.awaiting)
        raise error or OSError(f"no address for {host}")

    def putcmd(self, cmd: str, args: str = "") -> None:
        verb = cmd.split(" ", 1)[0].upper()
        self.command = verb if verb in _VERBS else "AUTH"
        self.awaiting = f"the reply to {self.command}"
        super().putcmd(cmd, args)

    def send(self, s: ReadableBuffer | str) -> None:
        body = self.awaiting == _END_OF_DATA
        if self.sock is not None:
            step = "sending the message" if body else f"sending {self.command}"
            self.sock.settimeout(self.deadline.left(step))
        super().send(s)
        if body:
            self.data_sent = True

    def getreply(self) -> tuple[int, bytes]:
        if self.file is None:
            self.file = _Replies(self)
        code, message = super().getreply()
        if self.awaiting == _END_OF_DATA:
            self.verdict = code
        elif self.awaiting == "the reply to DATA" and code == 354:
            self.awaiting = _END_OF_DATA  # the message goes next (smtplib.SMTP.data)
        elif self.awaiting == "the reply to STARTTLS" and code == 220 and self.sock is not None:
            # starttls() wraps the socket next: the handshake gets what is left.
            self.awaiting = "the TLS handshake"
            self.sock.settimeout(self.deadline.left(self.awaiting))
        return code, message


@functools.cache
def _local_hostname() -> str:
    """What smtplib says in EHLO, worked out once (it asks the resolver, with no deadline)."""
    fqdn = socket.getfqdn()
    if "." in fqdn:
        return fqdn
    try:
        return f"[{socket.gethostbyname(socket.gethostname())}]"
    except OSError:
        return "[127.0.0.1]"


class SmtpMailer:
    """Sends each message within `deadline` seconds of `send`, on `executor` (the mailers'
    own `MAIL_THREADS` threads by default)."""

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        deadline: float = DEFAULT_DEADLINE_SECONDS,
        executor: Executor | None = None,
    ) -> None:
        if deadline <= 0:
            raise ValueError("the mail deadline must be positive")
        self._settings = settings
        self._deadline = deadline
        self._executor = executor or _EXECUTOR
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
        # From now: time waiting for a thread counts. A caller that gives up while the send
        # waits for a thread takes it out of the queue (run_in_executor's future is cancelled).
        deadline = _Deadline(time.monotonic() + self._deadline)
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()  # as asyncio.to_thread does
        await loop.run_in_executor(self._executor, context.run, self._send, message, deadline)

    def _send(self, message: EmailMessage, deadline: _Deadline) -> None:
        settings = self._settings
        smtp: _TimedSmtp | None = None
        try:
            deadline.left("a free mail thread")
            smtp = _TimedSmtp(settings.host, settings.port, deadline)
            if self._tls is not None:
                # SMTPNotSupportedError when the server offers none: no plain-text fall-back.
                smtp.starttls(context=self._tls)
            if settings.username is not None and settings.password is not None:
                smtp.login(settings.username, settings.password.get_secret_value())
            smtp.send_message(message)
        except (_OutOfTimeError, OSError, smtplib.SMTPException) as exc:
            raise self._failure(exc, smtp, deadline) from exc
        else:
            # Delivered: a QUIT the server is slow to answer changes nothing (no retry).
            with contextlib.suppress(_OutOfTimeError, OSError, smtplib.SMTPException):
                smtp.quit()
        finally:
            if smtp is not None:
                smtp.close()

    def _failure(
        self, exc: Exception, smtp: _TimedSmtp | None, deadline: _Deadline
    ) -> MailDeliveryError:
        answered = isinstance(exc, smtplib.SMTPResponseException)  # the server said no
        if isinstance(exc, _OutOfTimeError):
            step = exc.step
        elif not answered and smtp is not None and deadline.passed():
            step = smtp.awaiting  # a socket timeout set to what was left
        else:
            step = ""
        if smtp is not None and smtp.verdict not in (None, 250):
            return MailDeliveryError("SMTP delivery failed: SMTPDataError")  # refused it
        if smtp is not None and smtp.data_sent and smtp.verdict is None and not answered:
            why = f"no reply within {self._deadline:g}s" if step else type(exc).__name__
            return MailOutcomeUnknownError(
                f"SMTP delivery outcome unknown: the server had the whole message but gave "
                f"no verdict ({why}); it may have been delivered"
            )
        if step:
            return MailDeliveryError(
                f"SMTP delivery failed: out of time ({self._deadline:g}s for the conversation) "
                f"waiting for {step}"
            )
        return MailDeliveryError(f"SMTP delivery failed: {type(exc).__name__}")
