"""The IP-trust service wired to fakes, shared by the wallet unit tests."""

from __future__ import annotations

import uuid

from tests.fakes.wallet import ReversibleSealer
from tests.fakes.wallet_ip_notifications import (
    FakeClock,
    FakeIpNotificationsUnitOfWork,
    FakeTrustedIpCache,
)
from vaultpay_wallet.service_layer.ip_trust import (
    CheckIpTrust,
    ConfirmIp,
    IpTrustCheck,
    IpTrustService,
)

__all__ = ["IP", "KEY", "OTHER", "USER", "Env"]

KEY = b"0123456789abcdef0123456789abcdef"
USER = str(uuid.uuid4())
OTHER = str(uuid.uuid4())
IP = "203.0.113.7"


class Env:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.uow = FakeIpNotificationsUnitOfWork()
        self.cache = FakeTrustedIpCache()
        self.sealer = ReversibleSealer()
        self.service = IpTrustService(
            lambda: self.uow, self.cache, self.sealer, self.clock, ip_hash_key=KEY
        )

    async def check(
        self, ip: str = IP, user: str = USER, request_id: str | None = None
    ) -> IpTrustCheck:
        return await self.service.check_ip_trust(
            CheckIpTrust(request_id or str(uuid.uuid4()), user, ip)
        )

    def mails(self) -> list[dict[str, object]]:
        return [dict(m.payload) for m in self.uow.outbox.of_topic("mail.send")]

    def last_token(self) -> str:
        params = self.mails()[-1]["params"]
        assert isinstance(params, dict)
        return self.sealer.open(str(params["token_sealed"]))

    async def trust(self, ip: str = IP, user: str = USER) -> str:
        await self.check(ip, user)
        confirmed = await self.service.confirm_ip(ConfirmIp(self.last_token()))
        return confirmed.trusted_ip.ip_hash
