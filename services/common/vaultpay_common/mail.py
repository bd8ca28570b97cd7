"""Outgoing mail over SMTP (a local sink in development), off the event loop, within a deadline.

    mailer = SmtpMailer(SmtpSettings())
    await mailer.send("alice@example.com", "Your PIN reset code", "...")

With `starttls` the connection is upgraded (the server's certificate and name verified) before
anything else is said, the login included; with `username`, it logs in. Delivery failures (a
refused login, a server without STARTTLS, a certificate that does not verify, a server too slow
to finish within `deadline`) raise `MailDeliveryError`, naming the exception's type or the step
that ran out of time only (an unexpected exception too: its type and the step, never its text,
which may quote the password); callers that must not lose mail send it from an outbox handler,
which retries.

Each send runs on one of the mailer's own `threads` (`MAIL_THREADS` by default, never the
default executor other code reaches through `to_thread`): give it at least as many as its
callers send at once (wallet: its outbox relay's `max_concurrent_deliveries`), so no send waits
for one. The whole conversation (connecting, every command and reply, the TLS handshake) ends
within `deadline` seconds (default 20 s) of its thread starting it: each step may take only
what is left, so an attempt ends in its thread before the outbox relay's 30 s
`delivery_timeout` (less the contact look-up before it) gives up on it. DATA is not started
unless `data_reserve` of the deadline is left (default 40 %: 8 s of 20 s) for the message and
the server's verdict; with less, the attempt fails retryably, nothing sent. A failure after the
server had the whole message but before its verdict is `MailOutcomeUnknownError` (naming how
long the verdict was waited for): it may have been delivered, and sending again may deliver a
copy.

A caller cancelled while its send waits for a thread drops the send (nothing was said to the
server). Cancelled once the conversation runs (a relay stopping: a thread cannot be stopped),
`send` waits for it, whatever further cancellations come, for at most what is left of its
deadline, and returns or raises its real outcome, the cancellation swallowed: the outbox relay
records it (delivered, failed or dead-lettered) instead of releasing an event whose mail its
thread goes on to deliver while another replica mails it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import smtplib
import socket
import ssl
import time
from concurrent.futures import Future, ThreadPoolExecutor
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

log = logging.getLogger(__name__)

DEFAULT_DEADLINE_SECONDS = 20.0
# A mailer's threads by default: the outbox relay's default `max_concurrent_deliveries`.
MAIL_THREADS = 8
# What DATA needs left of the deadline by default (8 s of 20 s): the reply to DATA, the message
# and the verdict on it, which a relay may take seconds to give.
DATA_RESERVE_SHARE = 0.4
# What a cancelled send waits past its attempt's deadline for the thread to hang up.
_HANG_UP_SECONDS = 1.0
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


class _TooLateForDataError(Exception):
    """Less than the data reserve was left when DATA was due: it was not sent."""

    def __init__(self, left: float) -> None:
        super().__init__(left)
        self.left = left


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


class _Attempt:
    """What the loop knows of a send's conversation: its deadline once its thread started it."""

    def __init__(self) -> None:
        self.deadline: _Deadline | None = None  # set by the thread, first thing


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
    DATA needs `data_reserve` seconds left (`_TooLateForDataError`). `data_sent_at` and
    `verdict` say how far the message got."""

    def __init__(self, host: str, port: int, deadline: _Deadline, data_reserve: float) -> None:
        self.deadline = deadline
        self.data_reserve = data_reserve
        self.awaiting = "a connection"
        self.command = ""  # the verb last sent (AUTH for a login's continuations)
        self.data_sent_at: float | None = None  # when the whole message, its "." included, was
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
        if verb == "DATA" and (left := self.deadline.ends - time.monotonic()) < self.data_reserve:
            # The message and its verdict might not fit: an unknown outcome, dead-lettered.
            raise _TooLateForDataError(max(left, 0.0))
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
            self.data_sent_at = time.monotonic()

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
    """Sends each message on one of its own `threads`, within `deadline` seconds of the thread
    starting the conversation; DATA only with `data_reserve` seconds of it left (default
    `DATA_RESERVE_SHARE` of the deadline)."""

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        deadline: float = DEFAULT_DEADLINE_SECONDS,
        data_reserve: float | None = None,
        threads: int = MAIL_THREADS,
    ) -> None:
        if deadline <= 0:
            raise ValueError("the mail deadline must be positive")
        reserve = deadline * DATA_RESERVE_SHARE if data_reserve is None else data_reserve
        if not 0 <= reserve < deadline:
            raise ValueError("the data reserve must be at least 0 and shorter than the deadline")
        if threads < 1:
            raise ValueError("a mailer needs at least one thread")
        self._settings = settings
        self._deadline = deadline
        self._data_reserve = reserve
        # Threads start when first needed; idle ones end with the mailer.
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vaultpay-smtp")
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
        attempt = _Attempt()
        context = contextvars.copy_context()  # as asyncio.to_thread does
        job: Future[None] = self._executor.submit(context.run, self._send, message, attempt)
        outcome = asyncio.wrap_future(job)
        try:
            await asyncio.shield(outcome)
        except asyncio.CancelledError:
            if job.cancel():
                raise  # still waiting for a thread: dropped, nothing was said to the server
            # On its thread (or just over): the conversation cannot be stopped, and a caller
            # that gave up on it would have it mailed again. Its real outcome, cancellation
            # swallowed (the caller's task stays cancelling, as the outbox relay checks).
            if not await self._outlive(outcome, attempt):
                log.warning("mail attempt still running past its deadline; given up on")
                raise
        outcome.result()  # the attempt's MailDeliveryError, if any

    async def _outlive(self, outcome: asyncio.Future[None], attempt: _Attempt) -> bool:
        """Waits for `outcome` through any cancellation, until its attempt's deadline (and a
        moment to hang up) has passed: whether it ended."""
        deadline = attempt.deadline
        ends = (deadline.ends if deadline else time.monotonic() + self._deadline) + _HANG_UP_SECONDS
        while not outcome.done() and (left := ends - time.monotonic()) > 0:
            with contextlib.suppress(asyncio.CancelledError):  # a stop cancels again and again
                await asyncio.wait({outcome}, timeout=left)
        return outcome.done()

    def _send(self, message: EmailMessage, attempt: _Attempt) -> None:
        failure = self._converse(message, attempt)
        if failure is not None:
            raise failure  # outside the except blocks: an unexpected one's text is not kept

    def _converse(self, message: EmailMessage, attempt: _Attempt) -> MailDeliveryError | None:
        """The conversation; what failed, as a `MailDeliveryError` (None: delivered)."""
        deadline = attempt.deadline = _Deadline(time.monotonic() + self._deadline)
        settings = self._settings
        smtp: _TimedSmtp | None = None
        step = "connecting"
        try:
            smtp = _TimedSmtp(settings.host, settings.port, deadline, self._data_reserve)
            if self._tls is not None:
                step = "STARTTLS"
                # SMTPNotSupportedError when the server offers none: no plain-text fall-back.
                smtp.starttls(context=self._tls)
            if settings.username is not None and settings.password is not None:
                step = "the login"
                smtp.login(settings.username, settings.password.get_secret_value())
            step = "sending the message"
            smtp.send_message(message)
        except (_OutOfTimeError, _TooLateForDataError, OSError, smtplib.SMTPException) as exc:
            failure = self._failure(exc, smtp, deadline)
            failure.__cause__ = exc
            return failure
        except Exception as exc:
            # Not one smtplib documents (UnicodeEncodeError from a non-ASCII login, with a
            # character of the password in its text): its type and the step, no cause kept.
            return self._failure(exc, smtp, deadline, unexpected=step)
        else:
            # Delivered: a QUIT the server is slow to answer changes nothing (no retry).
            with contextlib.suppress(Exception):
                smtp.quit()
            return None
        finally:
            if smtp is not None:
                with contextlib.suppress(Exception):
                    smtp.close()

    def _failure(
        self,
        exc: Exception,
        smtp: _TimedSmtp | None,
        deadline: _Deadline,
        *,
        unexpected: str = "",
    ) -> MailDeliveryError:
        answered = isinstance(exc, smtplib.SMTPResponseException)  # the server said no
        if isinstance(exc, _OutOfTimeError):
            step = exc.step
        elif not (answered or unexpected) and smtp is not None and deadline.passed():
            step = smtp.awaiting  # a socket timeout set to what was left
        else:
            step = ""
        if smtp is not None and smtp.verdict not in (None, 250):
            return MailDeliveryError("SMTP delivery failed: SMTPDataError")  # refused it
        sent_at = smtp.data_sent_at if smtp is not None else None
        if sent_at is not None and smtp is not None and smtp.verdict is None and not answered:
            waited = time.monotonic() - sent_at
            why = (
                f"no reply in {waited:.1f}s"
                if step
                else f"{type(exc).__name__} after {waited:.1f}s"
            )
            return MailOutcomeUnknownError(
                f"SMTP delivery outcome unknown: the server had the whole message but gave "
                f"no verdict ({why}); it may have been delivered"
            )
        if isinstance(exc, _TooLateForDataError):
            return MailDeliveryError(
                f"SMTP delivery failed: {exc.left:.1f}s of the {self._deadline:g}s left for "
                f"the message and its verdict, {self._data_reserve:g}s needed; not sent"
            )
        if step:
            return MailDeliveryError(
                f"SMTP delivery failed: out of time ({self._deadline:g}s for the conversation) "
                f"waiting for {step}"
            )
        if unexpected:
            return MailDeliveryError(
                f"SMTP delivery failed: {type(exc).__name__} during {unexpected}"
            )
        return MailDeliveryError(f"SMTP delivery failed: {type(exc).__name__}")
