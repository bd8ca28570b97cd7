"""IP-trust use cases: the transfer service's check, confirming by emailed token, listing
and revoking.

Where the truth lives: PostgreSQL holds the trusted addresses (`trusted_ips`) and the pending
confirmations (`ip_confirmations`, one per user and address, whose `sent_at` is also the
one-mail-per-30-minutes window, decided atomically by an upsert). Redis is only a fast path:
a cache of "this (user, address) is trusted until T", filled from PostgreSQL by the check and
dropped on revoke; its entries live at most a few minutes, which also bounds how stale
`last_seen` may be (a cache hit does not write to PostgreSQL).

Fail-open (the product brief's choice, ARCHITECTURE.md "IP trust"): when Redis cannot be
reached the check answers trusted=true with `failed_open=True`, logs a warning and touches
nothing; the transaction PIN remains the gate. Every other failure (PostgreSQL down, bad
input) fails closed as usual. Not for a money movement: its PIN settlement reads the
address's trust itself, and an address it did not find trusted (found untrusted, or not read:
a replayed or joined check, the general path) is checked without the cache
(`movement=True`), so a Redis outage never turns PostgreSQL's answer into a pass.

The mailed token travels through the outbox sealed (`SecretSealer`); the database holds
only its SHA-256. The mail delivery opens it and drops the mail when the code no longer
confirms anything (`confirmation_code_usable`): used, expired, replaced or discarded, or its
address trusted meanwhile.

A code is never superseded while it works: a pair's pending confirmation is replaced only once
its mail window has passed, and the window is the code's lifetime (`token_ttl`), or once it
was used. A later check within the 30 minutes mails nothing and the code in force stays.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol, Self

from vaultpay_common.audit.model import AuditEntry
from vaultpay_common.clock import Clock
from vaultpay_common.idempotency.codec import DataclassCodec
from vaultpay_common.idempotency.model import IdempotencyKey, IdempotencyRecords
from vaultpay_common.idempotency.service import run_once
from vaultpay_common.outbox.model import Outbox, OutboxMessage
from vaultpay_common.pagination import page_size
from vaultpay_wallet.domain.ip_trust import (
    CONFIRMATION_TOKEN_TTL,
    TRUST_TTL,
    IpConfirmation,
    IpConfirmationTokenInvalidError,
    IpHasher,
    TrustedIp,
    TrustedIpCursor,
    TrustedIpNotFoundError,
    check_confirmation_token,
    check_public_ip_hash,
    hash_confirmation_token,
    new_confirmation_token,
)
from vaultpay_wallet.domain.notifications import (
    NotificationKind,
    canonical_uuid,
    new_notification,
)
from vaultpay_wallet.service_layer.notifications import NotificationRepository
from vaultpay_wallet.service_layer.ports import SecretSealer
from vaultpay_wallet.service_layer.results import MovementAddress

__all__ = [
    "MAIL_TEMPLATE",
    "CheckIpTrust",
    "ConfirmIp",
    "ConfirmedIp",
    "IpConfirmationRepository",
    "IpTrustCheck",
    "IpTrustService",
    "IpTrustUnitOfWork",
    "ListTrustedIps",
    "RevokeTrustedIp",
    "RevokedIp",
    "TrustCacheUnavailableError",
    "TrustedIpCache",
    "TrustedIpPage",
    "TrustedIpRepository",
    "TrustedIpView",
]

log = logging.getLogger(__name__)

MAIL_TEMPLATE = "ip_confirmation"


class TrustCacheUnavailableError(Exception):
    """Raised by a TrustedIpCache that cannot reach its store; never reaches a client."""


class TrustedIpRepository(Protocol):
    async def get(self, user_id: str, ip_hash: str) -> TrustedIp | None: ...

    async def save(self, trusted: TrustedIp) -> None:
        """Inserts or replaces the (user, ip_hash) row."""
        ...

    async def touch(self, user_id: str, ip_hash: str, at: datetime) -> None:
        """Moves last_seen forward (never back)."""
        ...

    async def list(
        self, user_id: str, *, now: datetime, after: TrustedIpCursor | None, limit: int
    ) -> Sequence[TrustedIp]:
        """Unexpired rows, most recently confirmed first (first_seen, ip_hash descending)."""
        ...

    async def delete_by_public_hash(self, user_id: str, public_hash: str) -> TrustedIp | None:
        """Deletes the user's row whose hash starts with `public_hash`; returns it."""
        ...


class IpConfirmationRepository(Protocol):
    async def issue(self, pending: IpConfirmation, *, window_start: datetime) -> IpConfirmation:
        """Atomically stores `pending` unless the pair already has an unused confirmation
        sent after `window_start`. Returns the confirmation in force: `pending` itself when
        stored, else the earlier one (whose mail already went)."""
        ...

    async def get_for_update(self, token_hash: str) -> IpConfirmation | None:
        """Locks the row so two concurrent confirmations of one token take turns."""
        ...

    async def mark_used(self, token_hash: str, at: datetime) -> None: ...

    async def discard(self, user_id: str, ip_hash: str) -> None: ...

    async def awaits_confirmation(self, token_hash: str, now: datetime) -> bool:
        """Whether `token_hash` is the pending confirmation of its pair (not replaced, not
        discarded), unused and unexpired at `now`, and its address is not trusted at `now`.
        One read, no lock."""
        ...


class TrustedIpCache(Protocol):
    """Redis fast path (adapters.ip_trust_redis.RedisTrustedIpCache)."""

    async def lookup(self, user_id: str, ip_hash: str) -> datetime | None:
        """The cached trust expiry, or None on a miss. Raises TrustCacheUnavailableError."""
        ...

    async def remember(self, user_id: str, ip_hash: str, expires_at: datetime) -> None:
        """Best effort: never raises."""
        ...

    async def forget(self, user_id: str, ip_hash: str) -> None:
        """Best effort: never raises (a stale entry lapses with its short TTL)."""
        ...


class IpTrustUnitOfWork(Protocol):
    @property
    def trusted_ips(self) -> TrustedIpRepository: ...
    @property
    def ip_tokens(self) -> IpConfirmationRepository: ...
    @property
    def notifications(self) -> NotificationRepository: ...
    @property
    def outbox(self) -> Outbox: ...
    @property
    def idempotency(self) -> IdempotencyRecords: ...

    async def audit(self, entry: AuditEntry) -> None: ...
    async def commit(self) -> None: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class CheckIpTrust:
    """Internal (the transfer service): may `user_id` move money from `client_ip`?"""

    request_id: str  # of the money movement: its retries mail at most once
    user_id: str
    client_ip: str  # the gateway's trusted header, as text; hashed at once


@dataclass(frozen=True, slots=True)
class IpTrustCheck:
    trusted: bool
    confirmation_sent: bool
    failed_open: bool = False  # trusted only because the cache was unreachable


@dataclass(frozen=True, slots=True)
class TrustedIpView:
    """What users see: the public 16-digit hash, never the address or the full HMAC."""

    ip_hash: str
    first_seen_at: datetime
    last_seen_at: datetime
    expires_at: datetime

    @classmethod
    def of(cls, trusted: TrustedIp) -> TrustedIpView:
        return cls(
            trusted.public_hash, trusted.first_seen_at, trusted.last_seen_at, trusted.expires_at
        )


@dataclass(frozen=True, slots=True)
class ConfirmIp:
    """Public: the token is the credential."""

    token: str
    idempotency: IdempotencyKey | None = None


@dataclass(frozen=True, slots=True)
class ConfirmedIp:
    user_id: str
    trusted_ip: TrustedIpView


@dataclass(frozen=True, slots=True)
class ListTrustedIps:
    user_id: str  # the caller: only their own
    page_size: int = 0  # 0 means 50; capped at 100
    after: TrustedIpCursor | None = None


@dataclass(frozen=True, slots=True)
class TrustedIpPage:
    items: tuple[TrustedIpView, ...]
    has_more: bool

    @property
    def next_cursor(self) -> TrustedIpCursor | None:
        if not self.has_more:
            return None
        last = self.items[-1]
        return TrustedIpCursor(last.first_seen_at, last.ip_hash)


@dataclass(frozen=True, slots=True)
class RevokeTrustedIp:
    user_id: str  # the caller: another user's hash answers NOT_FOUND
    ip_hash: str  # the public 16-digit hash
    idempotency: IdempotencyKey | None = None


@dataclass(frozen=True, slots=True)
class RevokedIp:
    trusted_ip: TrustedIpView


_CONFIRMED = DataclassCodec(ConfirmedIp)
_REVOKED = DataclassCodec(RevokedIp)


class IpTrustService:
    def __init__(
        self,
        uow: Callable[[], IpTrustUnitOfWork],
        cache: TrustedIpCache,
        sealer: SecretSealer,
        clock: Clock,
        *,
        ip_hash_key: bytes,
        trust_ttl: timedelta = TRUST_TTL,
        token_ttl: timedelta = CONFIRMATION_TOKEN_TTL,
    ) -> None:
        self._uow = uow
        self._cache = cache
        self._sealer = sealer
        self._clock = clock
        self._hasher = IpHasher(ip_hash_key)
        self._trust_ttl = trust_ttl
        self._token_ttl = token_ttl

    def movement_address(self, user_id: str, client_ip: str) -> MovementAddress:
        """A money movement's address as the PIN check's settlement looks it up (the same
        user and keyed hash this check reads); INVALID_ARGUMENT for a bad id or address."""
        return MovementAddress(canonical_uuid(user_id, "user_id"), self._hasher.hash(client_ip))

    async def check_ip_trust(
        self, command: CheckIpTrust, *, movement: bool = False
    ) -> IpTrustCheck:
        """`movement`: a money movement's check, whose PIN settlement did not find the address
        trusted: the cache is not asked, so neither a stale entry nor an unreachable Redis
        (which fails open) can overrule PostgreSQL, the truth."""
        request_id = canonical_uuid(command.request_id, "request_id")
        user_id = canonical_uuid(command.user_id, "user_id")
        ip_hash = self._hasher.hash(command.client_ip)
        if not movement:
            try:
                cached_until = await self._cache.lookup(user_id, ip_hash)
            except TrustCacheUnavailableError:
                log.warning(
                    "IP trust cache unavailable: failing open (the PIN remains the gate)",
                    extra={"user_id": user_id, "ip_hash": ip_hash[:16]},
                )
                return IpTrustCheck(trusted=True, confirmation_sent=False, failed_open=True)
            if cached_until is not None and self._clock.now() < cached_until:
                return IpTrustCheck(trusted=True, confirmation_sent=False)
        now = self._clock.now()
        async with self._uow() as uow:
            trusted = await uow.trusted_ips.get(user_id, ip_hash)
            if trusted is None or not trusted.is_trusted_at(now):
                sent = await self._mail_confirmation(uow, user_id, ip_hash, request_id, now)
                await uow.commit()
                return IpTrustCheck(trusted=False, confirmation_sent=sent)
            await uow.trusted_ips.touch(user_id, ip_hash, now)
            await uow.commit()
        await self._cache.remember(user_id, ip_hash, trusted.expires_at)
        return IpTrustCheck(trusted=True, confirmation_sent=False)

    async def _mail_confirmation(
        self, uow: IpTrustUnitOfWork, user_id: str, ip_hash: str, request_id: str, now: datetime
    ) -> bool:
        """Mails a token unless one went out in this window. A retry of the very check
        that mailed it answers True again (the same answer) and mails nothing."""
        token = new_confirmation_token()
        pending = IpConfirmation(
            user_id=user_id,
            ip_hash=ip_hash,
            token_hash=hash_confirmation_token(token),
            request_id=request_id,
            sent_at=now,
            expires_at=now + self._token_ttl,
        )
        in_force = await uow.ip_tokens.issue(pending, window_start=now - self._token_ttl)
        if in_force.token_hash != pending.token_hash:
            return in_force.request_id == request_id
        params = {
            "token_sealed": self._sealer.seal(token),
            "ip_hash": ip_hash[:16],
            "expires_at": pending.expires_at.isoformat(),
        }
        await uow.outbox.add(
            OutboxMessage(
                "mail.send",
                {"user_id": user_id, "template": MAIL_TEMPLATE, "params": params},
                key=user_id,
            )
        )
        return True

    async def confirmation_code_usable(self, code: str) -> bool:
        """Whether a mailed confirmation code would still confirm an address not trusted yet:
        the mail delivery drops the mail of one that would not (used, expired, replaced by a
        later confirmation of its address once used, discarded by a revoke, or its address
        trusted meanwhile), so no mail carries a dead or needless code. Looked up by the
        code's SHA-256, as `confirm_ip` looks it up (`ip_confirmations_token_key`)."""
        now = self._clock.now()
        async with self._uow() as uow:
            return await uow.ip_tokens.awaits_confirmation(hash_confirmation_token(code), now)

    async def confirm_ip(self, command: ConfirmIp) -> ConfirmedIp:
        token_hash = hash_confirmation_token(check_confirmation_token(command.token))
        async with self._uow() as uow:

            async def work() -> ConfirmedIp:
                now = self._clock.now()
                pending = await uow.ip_tokens.get_for_update(token_hash)
                if pending is None:
                    raise IpConfirmationTokenInvalidError()
                pending.check_usable(now)
                await uow.ip_tokens.mark_used(token_hash, now)
                existing = await uow.trusted_ips.get(pending.user_id, pending.ip_hash)
                trusted = TrustedIp.confirm(
                    existing,
                    user_id=pending.user_id,
                    ip_hash=pending.ip_hash,
                    now=now,
                    ttl=self._trust_ttl,
                )
                await uow.trusted_ips.save(trusted)
                await self._security_event(
                    uow,
                    trusted,
                    action="ip_trust.confirmed",
                    dedupe_key=f"ip-confirmed:{token_hash}",
                    title="New IP address confirmed",
                    body=(
                        f"An IP address (id {trusted.public_hash}) can now be used to move "
                        f"money until {trusted.expires_at:%Y-%m-%d %H:%M} UTC. If this was not "
                        "you, revoke it in your security settings and change your PIN."
                    ),
                    now=now,
                    actor_id=trusted.user_id,  # a public RPC: no principal to take it from
                )
                return ConfirmedIp(trusted.user_id, TrustedIpView.of(trusted))

            return await run_once(uow, command.idempotency, _CONFIRMED, work)

    async def list_trusted_ips(self, query: ListTrustedIps) -> TrustedIpPage:
        user_id = canonical_uuid(query.user_id, "user_id")
        limit = page_size(query.page_size)
        now = self._clock.now()
        async with self._uow() as uow:
            rows = await uow.trusted_ips.list(user_id, now=now, after=query.after, limit=limit + 1)
        items = tuple(TrustedIpView.of(row) for row in rows[:limit])
        return TrustedIpPage(items, len(rows) > limit)

    async def revoke_trusted_ip(self, command: RevokeTrustedIp) -> RevokedIp:
        user_id = canonical_uuid(command.user_id, "user_id")
        public_hash = check_public_ip_hash(command.ip_hash)
        removed: list[TrustedIp] = []
        async with self._uow() as uow:

            async def work() -> RevokedIp:
                now = self._clock.now()
                trusted = await uow.trusted_ips.delete_by_public_hash(user_id, public_hash)
                if trusted is None:
                    raise TrustedIpNotFoundError()
                await uow.ip_tokens.discard(user_id, trusted.ip_hash)
                await self._security_event(
                    uow,
                    trusted,
                    action="ip_trust.revoked",
                    dedupe_key=f"ip-revoked:{trusted.ip_hash[:32]}:{now.isoformat()}",
                    title="Trusted IP address removed",
                    body=(
                        f"The IP address with id {trusted.public_hash} is no longer trusted; "
                        "a money movement from it will need a new email confirmation."
                    ),
                    now=now,
                )
                removed.append(trusted)
                return RevokedIp(TrustedIpView.of(trusted))

            result = await run_once(uow, command.idempotency, _REVOKED, work)
        for trusted in removed:  # empty on a replay: the first call already dropped it
            await self._cache.forget(trusted.user_id, trusted.ip_hash)
        return result

    async def _security_event(
        self,
        uow: IpTrustUnitOfWork,
        trusted: TrustedIp,
        *,
        action: str,
        dedupe_key: str,
        title: str,
        body: str,
        now: datetime,
        actor_id: str = "",
    ) -> None:
        """Audit row (hash prefix only, never the address) + a SECURITY notification,
        both in the use case's transaction. Without `actor_id` the audit log takes the
        caller's principal."""
        await uow.audit(
            AuditEntry(
                action,
                "user",
                trusted.user_id,
                {"ip_hash": trusted.public_hash, "expires_at": trusted.expires_at.isoformat()},
                actor_id=actor_id,
            )
        )
        note = new_notification(
            notification_id=str(uuid.uuid4()),
            user_id=trusted.user_id,
            kind=NotificationKind.SECURITY,
            title=title,
            body=body,
            now=now,
        )
        await uow.notifications.add(note, dedupe_key)
