"""What the wallet's outbox relay does with each topic: send mail, store notifications.

`mail.send` events carry a template name and parameters; secrets in them (a PIN reset or IP
confirmation code) are sealed and opened only here, just before the mail is written. The
recipient's address is asked from auth at delivery time, so no address is stored in the outbox.
`notification.create` events become inbox entries, deduped by the event's dedupe key.

A mail whose code has expired (`params["expires_at"]` passed: a retry up to an hour after the
request) is dropped, logged at INFO, not sent. A mail the SMTP server had whole but never gave a
verdict on (`MailOutcomeUnknownError`) is dead-lettered, not retried: it may have been
delivered, and a retry mails the same code again (staff can replay it from the dead letters).
A relay stopped while a mail's conversation runs gets that conversation's outcome, its
cancellation swallowed (`SmtpMailer.send`): the relay settles the event as delivered, failed or
dead-lettered, instead of releasing it for another replica to mail again while the stopped
one's thread delivers its copy. An SMTP server cannot dedupe by event id as the RPCs do: the
mail handler is a `SettledOnReturn`, so the relay settles each mail sent as soon as the send
returns, not at the end of its round, and a round that fails afterwards (its settlement, the
pod killed, a pause past the lease) does not mail it again after the lease.

A PIN reset mail whose code no longer works (superseded by a newer request, used, revoked by a
PIN change) is dropped too, logged at INFO, asked of `ResetCodes` once the code is opened: the
relay runs several deliveries at once and retries later, so mails reach the user in any order,
and the one read first must not carry a dead code. The token is looked up by the SHA-256 of the
opened code, the form it is stored in: the event needs no identifier of it (its params are
stored in clear but for `token_sealed`), and events queued before this check are judged too.

So is an IP-confirmation mail whose code no longer confirms anything, asked of
`IpConfirmationCodes` the same way (by the code's SHA-256, `ip_confirmations_token_key`): the
code used (a mail replayed from the dead letters after the user confirmed), its row replaced
by a later confirmation of the address once used or discarded by a revoke, or the address
trusted meanwhile (a check that read no trust just before a confirmation committed mails a
new code). A working IP code is never superseded by a newer request: the address's next code
is minted only once its window, the code's 30 minutes, has passed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from vaultpay_common.clock import Clock, SystemClock
from vaultpay_common.errors import ValidationError
from vaultpay_common.mail import MailDeliveryError, MailOutcomeUnknownError
from vaultpay_common.outbox import (
    DeliveryError,
    Handler,
    OutboxEvent,
    PermanentDeliveryError,
    SettledOnReturn,
    UnknownToThisBuildError,
)
from vaultpay_common.sealing import UnsealError
from vaultpay_wallet.adapters.peers import UserContact
from vaultpay_wallet.domain.notifications import parse_notification_kind
from vaultpay_wallet.service_layer.notifications import CreateNotification, NotificationService

__all__ = ["MAIL_TEMPLATES", "IpConfirmationCodes", "ResetCodes", "wallet_outbox_handlers"]

log = logging.getLogger(__name__)

PIN_RESET_TEMPLATE = "pin_reset"  # service_layer.pins.PIN_RESET_TEMPLATE
IP_CONFIRMATION_TEMPLATE = "ip_confirmation"  # service_layer.ip_trust.MAIL_TEMPLATE


class Contacts(Protocol):
    async def contact(self, user_id: str) -> UserContact: ...


class Mailer(Protocol):
    async def send(self, to: str, subject: str, body: str) -> None: ...


class SecretOpener(Protocol):
    """Opens what the use case sealed (vaultpay_common.sealing.AesGcmSealer in production)."""

    def open(self, sealed: str) -> str: ...


class ResetCodes(Protocol):
    """Whether a mailed PIN reset code still works (PinService in production)."""

    async def reset_code_usable(self, code: str) -> bool: ...


class IpConfirmationCodes(Protocol):
    """Whether a mailed IP confirmation code still confirms an untrusted address
    (IpTrustService in production)."""

    async def confirmation_code_usable(self, code: str) -> bool: ...


# subject, body; {code} is the opened secret, other fields come from the event's params.
MAIL_TEMPLATES: dict[str, tuple[str, str]] = {
    # Only a signed-in session can ask for this code: a mail the user did not ask for means
    # someone else holds one, so ignoring it is not the advice.
    "pin_reset": (
        "Your VaultPay PIN reset code",
        "Hello {name},\n\nA reset of the PIN of wallet {wallet_id} was asked for from a "
        "signed-in VaultPay session.\n"
        "Your single-use code: {code}\n\nIt expires at {expires_at} (15 minutes). "
        "Never share it: VaultPay staff never ask for it.\n\n"
        "If this was not you, someone is signed in to your account: change your password "
        "now (this signs out every other session) and contact VaultPay support.\n",
    ),
    "ip_confirmation": (
        "Confirm a new device or network for VaultPay",
        "Hello {name},\n\nA payment was attempted from a network we have not seen for your "
        "account (id {ip_hash}).\n"
        "If it was you, confirm it with this single-use code: {code}\n"
        "(enter it in the VaultPay app; a client calls POST /v1/ip-trust:confirm with it as "
        '"token"), then send the payment again.\n\n'
        "It expires at {expires_at} (30 minutes). If it was not you, change your password.\n",
    ),
}


def _params(event: OutboxEvent) -> Mapping[str, Any]:
    params = event.payload.get("params", {})
    if not isinstance(params, Mapping):
        raise PermanentDeliveryError("mail params must be an object")
    return params


def _expires_at(params: Mapping[str, Any]) -> datetime | None:
    """When the mailed code stops working, if the event says (ISO 8601; naive is UTC)."""
    text = params.get("expires_at")
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def wallet_outbox_handlers(
    contacts: Contacts,
    mailer: Mailer,
    sealer: SecretOpener,
    notifications: NotificationService,
    *,
    reset_codes: ResetCodes,
    ip_codes: IpConfirmationCodes,
    clock: Clock | None = None,
) -> dict[str, Handler]:
    clock = clock or SystemClock()
    # Whether the opened code still works, by template: one indexed read each.
    code_checks: dict[str, Callable[[str], Awaitable[bool]]] = {
        PIN_RESET_TEMPLATE: reset_codes.reset_code_usable,
        IP_CONFIRMATION_TEMPLATE: ip_codes.confirmation_code_usable,
    }

    async def send_mail(event: OutboxEvent) -> None:
        name = str(event.payload.get("template", ""))
        template = MAIL_TEMPLATES.get(name)
        if template is None:  # a newer build's template, mid-rollout: retried
            raise UnknownToThisBuildError("unknown mail template")
        params = dict(_params(event))
        expires_at = _expires_at(params)
        if expires_at is not None and clock.now() >= expires_at:
            # A retry after the code's 15 or 30 minutes: the mail would carry a dead code.
            log.info(
                "mail not sent: its code has expired",
                extra={"event_id": event.event_id, "template": name, "attempts": event.attempts},
            )
            return
        try:
            code = sealer.open(str(params.pop("token_sealed", "")))
        except UnsealError as exc:
            raise PermanentDeliveryError("the sealed code does not open") from exc
        usable = code_checks.get(name)
        if usable is not None and not await usable(code):
            # A PIN reset code a newer request superseded (its own mail carries the code that
            # works), or one used or revoked; an IP confirmation code used, replaced once used
            # or discarded, or its address trusted meanwhile: it would be typed in vain.
            log.info(
                "mail not sent: its code no longer works",
                extra={"event_id": event.event_id, "template": name, "attempts": event.attempts},
            )
            return
        contact = await contacts.contact(str(event.payload.get("user_id", "")))
        if not contact.active:
            return  # a deactivated user gets no mail; nothing to retry
        subject, body = template
        values = {k: str(v) for k, v in params.items()}
        try:
            text = body.format_map({**values, "name": contact.full_name, "code": code})
        except KeyError as exc:  # this build's template needs what an older build's event lacks
            raise UnknownToThisBuildError(f"mail parameter missing: {exc.args[0]}") from exc
        try:
            await mailer.send(contact.email, subject, text)
        except MailOutcomeUnknownError as exc:
            # The server had the whole message but gave no verdict: likely delivered. A retry
            # would mail the same code again (every retry, against a slow relay); a lost mail
            # costs the user a new request. Dead-lettered, so staff see it and can replay it.
            log.warning(
                "mail outcome unknown, not retried: it may have been delivered",
                extra={"event_id": event.event_id, "template": name, "attempts": event.attempts},
            )
            raise PermanentDeliveryError(str(exc)) from exc
        except MailDeliveryError as exc:
            raise DeliveryError(str(exc)) from exc

    async def create_notification(event: OutboxEvent) -> None:
        payload = event.payload
        try:
            parse_notification_kind(str(payload.get("kind", "")))
        except ValidationError as exc:  # a newer build's kind, mid-rollout: retried
            raise UnknownToThisBuildError(f"notification kind: {exc}") from exc
        try:
            await notifications.create_notification(
                CreateNotification(
                    dedupe_key=str(payload.get("dedupe_key") or event.event_id),
                    user_id=str(payload.get("user_id", "")),
                    kind=str(payload.get("kind", "")),
                    title=str(payload.get("title", "")),
                    body=str(payload.get("body", "")),
                )
            )
        except ValidationError as exc:
            # Refused as transfer's CreateNotifications refusals are (INVALID_ARGUMENT): no
            # retry makes it valid. It was retried for up to an hour as a transient failure.
            raise PermanentDeliveryError(f"notification refused: {exc}") from exc

    # Mail is settled as soon as it is sent: a second send is a second mail (no dedupe).
    return {"mail.send": SettledOnReturn(send_mail), "notification.create": create_notification}
