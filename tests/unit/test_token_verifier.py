"""The fast path rejects every forged or misused token (ARCHITECTURE: Identity, tokens)."""

import asyncio
import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from vaultpay_common.context import Role
from vaultpay_common.grpc.tokens import (
    AuthUnavailableError,
    TokenExpiredError,
    TokenInvalidError,
    TokenVerifier,
    service_audience,
)

ISS, AUD = "vaultpay-auth", "vaultpay"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Keys:
    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.kid = "k1"
        self.public_raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.fetches = 0

    async def jwks(self) -> list[dict[str, str]]:
        self.fetches += 1
        return [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": _b64(self.public_raw),
                "kid": self.kid,
                "alg": "EdDSA",
            }
        ]


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "user-1",
        "role": "admin",
        "sid": "session-1",
        "jti": "j1",
        "typ": "access",
        "iat": now,
        "exp": now + 900,
    }
    claims.update(overrides)
    return claims


def _sign(keys: Keys, **overrides: Any) -> str:
    return jwt.encode(
        _claims(**overrides), keys.private, algorithm="EdDSA", headers={"kid": keys.kid}
    )


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
def verifier(keys: Keys) -> TokenVerifier:
    return TokenVerifier(
        keys.jwks, issuer=ISS, audience=AUD, service="wallet", min_refresh_interval=0
    )


async def test_valid_token_yields_subject_role_and_session(
    keys: Keys, verifier: TokenVerifier
) -> None:
    claims = await verifier.verify(_sign(keys))
    assert (claims.subject, claims.role, claims.session_id) == ("user-1", Role.ADMIN, "session-1")


async def test_alg_none_is_rejected(verifier: TokenVerifier) -> None:
    header = _b64(json.dumps({"alg": "none", "kid": "k1", "typ": "JWT"}).encode())
    body = _b64(json.dumps(_claims(role="super_admin")).encode())
    with pytest.raises(TokenInvalidError):
        await verifier.verify(f"{header}.{body}.")


async def test_token_signed_by_another_key_is_rejected(keys: Keys, verifier: TokenVerifier) -> None:
    forged = jwt.encode(
        _claims(), Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": keys.kid}
    )
    with pytest.raises(TokenInvalidError):
        await verifier.verify(forged)


async def test_expired_token_is_rejected_as_expired(keys: Keys, verifier: TokenVerifier) -> None:
    with pytest.raises(TokenExpiredError):
        await verifier.verify(_sign(keys, iat=int(time.time()) - 4000, exp=int(time.time()) - 3000))


async def test_tampered_claims_break_the_signature(keys: Keys, verifier: TokenVerifier) -> None:
    header, _, signature = _sign(keys).split(".")
    body = _b64(json.dumps(_claims(role="super_admin")).encode())
    with pytest.raises(TokenInvalidError):
        await verifier.verify(f"{header}.{body}.{signature}")


async def test_hs256_signed_with_the_public_key_is_rejected(
    keys: Keys, verifier: TokenVerifier
) -> None:
    header = _b64(json.dumps({"alg": "HS256", "kid": keys.kid, "typ": "JWT"}).encode())
    body = _b64(json.dumps(_claims(role="super_admin")).encode())
    import hashlib
    import hmac

    mac = hmac.new(
        _b64(keys.public_raw).encode(), f"{header}.{body}".encode(), hashlib.sha256
    ).digest()
    with pytest.raises(TokenInvalidError):
        await verifier.verify(f"{header}.{body}.{_b64(mac)}")


async def test_refresh_token_is_not_an_access_token(verifier: TokenVerifier) -> None:
    with pytest.raises(TokenInvalidError):
        await verifier.verify("vprt_" + "A" * 43)


async def test_wrong_audience_is_rejected(keys: Keys, verifier: TokenVerifier) -> None:
    with pytest.raises(TokenInvalidError):
        await verifier.verify(_sign(keys, aud="someone-else"))


async def test_unknown_token_type_is_rejected(keys: Keys, verifier: TokenVerifier) -> None:
    with pytest.raises(TokenInvalidError):
        await verifier.verify(_sign(keys, typ="refresh"))


async def test_unknown_kid_refreshes_the_key_set_once(keys: Keys, verifier: TokenVerifier) -> None:
    await verifier.verify(_sign(keys))
    keys.private, keys.kid = Ed25519PrivateKey.generate(), "k2"
    keys.public_raw = keys.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    claims = await verifier.verify(_sign(keys))
    assert claims.subject == "user-1"
    assert keys.fetches == 2


async def test_a_key_set_that_cannot_be_read_is_auth_unavailable_not_a_bad_token(
    keys: Keys,
) -> None:
    """A service started before auth, or a key rotated while auth is down: a valid token's
    key cannot be known, so the answer is UNAVAILABLE AUTH_UNAVAILABLE (retry), not
    TOKEN_INVALID (sign in again); also within the refresh interval after the failure, and
    once auth answers the token verifies (review of 2026-12-04)."""
    auth_up = False

    async def jwks() -> list[dict[str, str]]:
        if not auth_up:
            raise ConnectionError("auth is not up yet")
        return await keys.jwks()

    verifier = TokenVerifier(
        jwks, issuer=ISS, audience=AUD, service="wallet", min_refresh_interval=3600
    )
    token = _sign(keys)
    with pytest.raises(AuthUnavailableError):
        await verifier.verify(token)
    with pytest.raises(AuthUnavailableError):  # no new fetch inside the interval
        await verifier.verify(token)
    auth_up = True
    await verifier.refresh_keys(force=True)
    assert (await verifier.verify(token)).subject == "user-1"
    stranger = Keys()
    stranger.kid = "k9"
    with pytest.raises(TokenInvalidError):  # the key set was read: an unknown key is bad
        await verifier.verify(_sign(stranger))


async def test_verified_tokens_are_cached(keys: Keys, verifier: TokenVerifier) -> None:
    token = _sign(keys)
    await verifier.verify(token)
    await verifier.verify(token)
    assert keys.fetches == 1


async def test_a_key_withdrawn_from_the_jwks_stops_verifying_after_the_key_age(keys: Keys) -> None:
    verifier = TokenVerifier(
        keys.jwks, issuer=ISS, audience=AUD, service="wallet", min_refresh_interval=0, max_key_age=0
    )
    token = _sign(keys)
    await verifier.verify(token)  # cached
    withdrawn = keys.private
    keys.private, keys.kid = Ed25519PrivateKey.generate(), "k2"
    keys.public_raw = keys.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    with pytest.raises(TokenInvalidError):
        await verifier.verify(token)  # the cached claims went with the key
    fresh = jwt.encode(_claims(), withdrawn, algorithm="EdDSA", headers={"kid": "k1"})
    with pytest.raises(TokenInvalidError):
        await verifier.verify(fresh)


async def test_a_key_set_aged_by_a_vm_pause_is_refreshed_at_once(keys: Keys) -> None:
    """The monotonic clock stands still while the VM is paused: after a pause longer than the
    feed's look-back, a key withdrawn meanwhile (no longer named by the feed) kept verifying
    until a minute of monotonic time had passed (review of 2026-12-05)."""
    wall = [time.time()]
    verifier = TokenVerifier(
        keys.jwks,
        issuer=ISS,
        audience=AUD,
        service="wallet",
        max_key_age=60,
        monotonic=lambda: 1_000.0,  # paused: it never moves
        wall=lambda: wall[0],
    )
    token = _sign(keys)
    await verifier.verify(token)
    keys.private, keys.kid = Ed25519PrivateKey.generate(), "k2"  # k1 withdrawn meanwhile
    keys.public_raw = keys.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    wall[0] += 30 * 60  # the pause
    with pytest.raises(TokenInvalidError):
        await verifier.verify(token)
    assert keys.fetches == 2


async def test_after_a_pause_a_failed_refresh_is_tried_again_within_the_interval(
    keys: Keys,
) -> None:
    """Review of 2026-12-05: a failed refresh counted as a refresh, so after a pause whose
    first fetch failed (a dead channel), a key withdrawn during the pause verified for a key
    age more, auth answering or not. The set's age goes on; the next call past the refresh
    interval asks again and the key goes as soon as auth answers."""
    auth = FlakyAuth(keys)
    wall = [time.time()]
    verifier = TokenVerifier(
        auth.jwks,
        issuer=ISS,
        audience=AUD,
        service="wallet",
        max_key_age=60,
        monotonic=lambda: auth.now[0],
        wall=lambda: wall[0],
    )
    token = _sign(keys)
    await verifier.verify(token)
    keys.private, keys.kid = Ed25519PrivateKey.generate(), "k2"  # k1 withdrawn in the pause
    keys.public_raw = keys.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    wall[0] += 30 * 60  # the pause: the monotonic clock stood still
    auth.reachable = False
    assert (await verifier.verify(token)).subject == "user-1"  # unconfirmed, within the bound
    auth.reachable = True
    auth.now[0] += 3  # past the 2 s interval, far within a key age
    wall[0] += 3
    with pytest.raises(TokenInvalidError):
        await verifier.verify(token)


async def test_a_key_forgotten_as_withdrawn_refuses_its_cached_tokens_at_once(keys: Keys) -> None:
    """What the revocation feed makes of a withdrawal: no waiting for the key set's age."""
    verifier = TokenVerifier(
        keys.jwks, issuer=ISS, audience=AUD, service="wallet", max_key_age=3600
    )
    token = _sign(keys)
    await verifier.verify(token)  # cached
    verifier.forget_keys(["k1"])
    with pytest.raises(TokenInvalidError, match="withdrawn key"):
        await verifier.verify(token)
    with pytest.raises(TokenInvalidError, match="withdrawn key"):
        await verifier.verify(_sign(keys, jti="j2"))  # and any other it signed
    assert keys.fetches == 1  # refused without asking auth


async def test_a_key_set_that_still_lists_a_withdrawn_key_does_not_bring_it_back(
    keys: Keys,
) -> None:
    """An auth replica that has not reloaded yet may serve the old key set for a moment."""
    verifier = TokenVerifier(
        keys.jwks, issuer=ISS, audience=AUD, service="wallet", min_refresh_interval=0
    )
    await verifier.verify(_sign(keys))
    verifier.forget_keys(["k1"])
    await verifier.refresh_keys(force=True)  # the JWKS still names k1
    with pytest.raises(TokenInvalidError, match="withdrawn key"):
        await verifier.verify(_sign(keys, jti="j2"))


async def test_forgetting_an_unknown_or_known_kid_again_changes_nothing_else(keys: Keys) -> None:
    verifier = TokenVerifier(
        keys.jwks, issuer=ISS, audience=AUD, service="wallet", max_key_age=3600
    )
    token = _sign(keys)
    await verifier.verify(token)
    verifier.forget_keys(["k-other"])
    verifier.forget_keys(["k-other"])
    assert (await verifier.verify(token)).subject == "user-1"


async def test_the_key_set_is_not_refetched_while_young(keys: Keys) -> None:
    verifier = TokenVerifier(
        keys.jwks, issuer=ISS, audience=AUD, service="wallet", max_key_age=3600
    )
    for _ in range(3):
        await verifier.verify(_sign(keys))
    assert keys.fetches == 1


# ----- parsing as strict as Envoy's (review finding 10) -----------------------------------
# Envoy refuses these tokens at the edge; a service that accepted them would read claims the
# gateway never checked (a duplicate `role`: PyJWT keeps the last one) or honour a token for
# longer than auth ever issues one.


def _raw(keys: Keys, header: str, payload: str) -> str:
    """A token over exactly these JSON texts, correctly signed with the real key."""
    signing_input = f"{_b64(header.encode())}.{_b64(payload.encode())}"
    return f"{signing_input}.{_b64(keys.private.sign(signing_input.encode()))}"


def _header(keys: Keys) -> str:
    return json.dumps({"alg": "EdDSA", "kid": keys.kid, "typ": "JWT"})


def _payload(**overrides: Any) -> str:
    return json.dumps(_claims(**overrides))


async def test_a_hand_made_token_over_well_formed_json_is_accepted(
    keys: Keys, verifier: TokenVerifier
) -> None:
    claims = await verifier.verify(_raw(keys, _header(keys), _payload()))
    assert claims.role is Role.ADMIN


async def test_a_duplicate_claim_is_refused(keys: Keys, verifier: TokenVerifier) -> None:
    payload = _payload(role="user")[:-1] + ', "role": "super_admin"}'
    assert json.loads(payload)["role"] == "super_admin"  # what a lenient parser would read
    with pytest.raises(TokenInvalidError):
        await verifier.verify(_raw(keys, _header(keys), payload))


async def test_a_duplicate_claim_with_the_same_value_is_refused_too(
    keys: Keys, verifier: TokenVerifier
) -> None:
    payload = _payload()[:-1] + ', "sub": "user-1"}'
    with pytest.raises(TokenInvalidError):
        await verifier.verify(_raw(keys, _header(keys), payload))


@pytest.mark.parametrize("extra", ['"kid": "k1"', '"alg": "EdDSA"', '"typ": "JWT"'])
async def test_a_duplicate_header_key_is_refused(
    extra: str, keys: Keys, verifier: TokenVerifier
) -> None:
    header = _header(keys)[:-1] + f", {extra}}}"
    with pytest.raises(TokenInvalidError):
        await verifier.verify(_raw(keys, header, _payload()))


async def test_a_duplicate_key_inside_a_nested_object_is_refused(
    keys: Keys, verifier: TokenVerifier
) -> None:
    payload = _payload()[:-1] + ', "ext": {"a": 1, "a": 2}}'
    with pytest.raises(TokenInvalidError):
        await verifier.verify(_raw(keys, _header(keys), payload))


def _now() -> int:
    return int(time.time())


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": str(_now() + 600)},  # a numeric string: PyJWT would int() it
        {"iat": str(_now())},
        {"exp": float(_now() + 600)},
        {"exp": True},
        {"exp": None},
        {"exp": [_now() + 600]},
        {"iat": -1},
        {"nbf": str(_now())},
    ],
    ids=repr,
)
async def test_times_that_are_not_integers_are_refused(
    overrides: dict[str, Any], keys: Keys, verifier: TokenVerifier
) -> None:
    with pytest.raises(TokenInvalidError):
        await verifier.verify(_raw(keys, _header(keys), _payload(**overrides)))


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
async def test_json_that_is_not_json_is_refused(
    constant: str, keys: Keys, verifier: TokenVerifier
) -> None:
    payload = _payload()[:-1] + f', "exp": {constant}}}'.replace('"exp"', '"x"')
    with pytest.raises(TokenInvalidError):
        await verifier.verify(_raw(keys, _header(keys), payload))


@pytest.mark.parametrize(
    "overrides",
    [{"sub": 42}, {"jti": 7}, {"sid": ["s"]}, {"role": {"name": "admin"}}, {"typ": 1}],
    ids=repr,
)
async def test_claims_that_are_not_strings_are_refused(
    overrides: dict[str, Any], keys: Keys, verifier: TokenVerifier
) -> None:
    with pytest.raises(TokenInvalidError):
        await verifier.verify(_raw(keys, _header(keys), _payload(**overrides)))


@pytest.mark.parametrize("payload", ["[1, 2]", '"text"', "{", "null"])
async def test_a_payload_that_is_not_a_json_object_is_refused(
    payload: str, keys: Keys, verifier: TokenVerifier
) -> None:
    with pytest.raises(TokenInvalidError):
        await verifier.verify(_raw(keys, _header(keys), payload))


async def test_a_token_may_live_as_long_as_an_access_token_and_no_longer(
    keys: Keys, verifier: TokenVerifier
) -> None:
    now = _now()
    await verifier.verify(_sign(keys, iat=now, exp=now + 900))
    with pytest.raises(TokenInvalidError):
        await verifier.verify(_sign(keys, iat=now, exp=now + 901))
    with pytest.raises(TokenInvalidError):
        await verifier.verify(_sign(keys, iat=now, exp=now + 10**12))


async def test_the_lifetime_cap_is_a_setting(keys: Keys) -> None:
    verifier = TokenVerifier(
        keys.jwks,
        issuer=ISS,
        audience=AUD,
        service="wallet",
        min_refresh_interval=0,
        max_token_lifetime=300,
    )
    now = _now()
    await verifier.verify(_sign(keys, iat=now, exp=now + 300))
    with pytest.raises(TokenInvalidError):
        await verifier.verify(_sign(keys, iat=now, exp=now + 301))


async def test_a_token_that_expires_before_it_was_issued_is_refused(
    keys: Keys, verifier: TokenVerifier
) -> None:
    now = _now()
    with pytest.raises(TokenInvalidError):
        await verifier.verify(_sign(keys, iat=now + 10, exp=now + 5))


async def test_a_verifier_on_a_machine_booted_moments_ago_still_fetches_the_key_set(
    keys: Keys,
) -> None:
    """time.monotonic() counts from boot: a service started seconds after the machine must
    not take its never-done first refresh for a recent one (which answered every token
    TOKEN_INVALID, on a fresh CI machine, until the refresh interval had passed)."""
    verifier = TokenVerifier(
        keys.jwks,
        issuer=ISS,
        audience=AUD,
        service="wallet",
        min_refresh_interval=3600,
        monotonic=lambda: 5.0,
    )
    assert (await verifier.verify(_sign(keys))).subject == "user-1"
    assert keys.fetches == 1


# ----- a key set auth cannot confirm (token review, 2026-12-04 night) -----------------------


class FlakyAuth:
    """auth's key set, reachable or not as the test says; counts the fetches. `verifier()`
    runs on `now[0]` (monotonic), with a 60 s key age and a 600 s unconfirmed bound."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.reachable = True
        self.fetches = 0
        self.now = [1_000.0]
        self.wall = [time.time()]  # moves with `now` unless a test pauses the VM

    async def jwks(self) -> list[dict[str, str]]:
        self.fetches += 1
        if not self.reachable:
            raise ConnectionError("auth is unreachable")
        return await self.keys.jwks()

    def verifier(self) -> TokenVerifier:
        return TokenVerifier(
            self.jwks,
            issuer=ISS,
            audience=AUD,
            service="wallet",
            max_key_age=60,
            max_unconfirmed_key_age=600,
            monotonic=lambda: self.now[0],
            wall=lambda: self.wall[0] + self.now[0],
        )


async def test_a_key_set_unconfirmed_past_its_bound_verifies_nothing_until_auth_answers(
    keys: Keys,
) -> None:
    """auth unreachable: neither the key-set refresh nor the revocation feed can tell of a
    withdrawal, so a withdrawn (leaked) key kept verifying the tokens minted with it on every
    RPC that is not strict. Past the bound (from the first failed refresh, not the last
    success: an idle peer is not refused for one blip) nothing verifies, cached tokens too."""
    auth = FlakyAuth(keys)
    verifier = auth.verifier()
    now = auth.now
    token = _sign(keys)
    await verifier.verify(token)  # cached
    auth.reachable = False
    now[0] += 8 * 3600  # idle for hours; the first refresh since meets the outage
    assert (await verifier.verify(token)).subject == "user-1"
    now[0] += 590  # refreshes keep failing: within the bound of the first failure
    assert (await verifier.verify(token)).subject == "user-1"
    now[0] += 20
    for attempt in (token, _sign(keys, jti="j2")):
        with pytest.raises(AuthUnavailableError, match="could not be confirmed"):
            await verifier.verify(attempt)
    auth.reachable = True  # auth answers again: the next call's refresh confirms the set
    now[0] += 3  # past the refresh interval (2 s), not the key set's age (60 s)
    assert (await verifier.verify(token)).subject == "user-1"


async def test_a_vm_pause_during_an_outage_counts_toward_the_unconfirmed_bound(
    keys: Keys,
) -> None:
    """Review of 2026-12-05: the bound ran on CLOCK_MONOTONIC alone, which stands still while
    the VM is paused: after an hour's pause in an outage a key withdrawn meanwhile still had
    the bound's whole time to verify tokens minted with it."""
    auth = FlakyAuth(keys)
    verifier = auth.verifier()
    token = _sign(keys)
    await verifier.verify(token)
    auth.reachable = False
    auth.now[0] += 61
    assert (await verifier.verify(token)).subject == "user-1"  # the first failed refresh
    auth.wall[0] += 3600  # paused an hour: the wall clock moved, the monotonic one did not
    auth.now[0] += 3  # past the refresh interval only
    with pytest.raises(AuthUnavailableError, match="could not be confirmed"):
        await verifier.verify(token)


async def _past_the_bound(auth: FlakyAuth, verifier: TokenVerifier, token: str) -> None:
    """`token` verified once, then auth unreachable from the next refresh on, and the clock
    moved past the unconfirmed bound (600 s) from that first failed refresh."""
    await verifier.verify(token)
    auth.reachable = False
    auth.now[0] += 60
    await verifier.verify(token)  # the first failed refresh: the bound starts
    auth.now[0] += 601


async def test_past_the_bound_refusals_ask_auth_at_most_once_per_refresh_interval(
    keys: Keys,
) -> None:
    """Each refusal past the bound tries a refresh, but no more often than the interval:
    an outage does not turn every call into a JWKS request."""
    auth = FlakyAuth(keys)
    verifier, token = auth.verifier(), _sign(keys)
    await _past_the_bound(auth, verifier, token)
    before = auth.fetches
    for _ in range(5):
        with pytest.raises(AuthUnavailableError):
            await verifier.verify(token)
    assert auth.fetches == before + 1


def _service_token(keys: Keys, aud: str, sub: str = "service:transfer") -> str:
    claims = _claims(aud=aud, sub=sub, typ="service")
    del claims["role"], claims["sid"]
    return jwt.encode(claims, keys.private, algorithm="EdDSA", headers={"kid": keys.kid})


async def test_a_service_token_is_accepted_only_by_the_service_it_is_addressed_to(
    keys: Keys, verifier: TokenVerifier
) -> None:
    """Review of 2026-12-05: every service token was addressed to the whole mesh, so a peer
    that received one with a call could present it anywhere as its sender for its life."""
    claims = await verifier.verify(_service_token(keys, "vaultpay:wallet"))
    assert (claims.subject, claims.token_type) == ("service:transfer", "service")
    for elsewhere in ("vaultpay:auth", "vaultpay:kyc", "vaultpay", "vaultpay:wallet:x"):
        with pytest.raises(TokenInvalidError):
            await verifier.verify(_service_token(keys, elsewhere))


async def test_an_unscoped_service_token_is_accepted_only_while_configured(keys: Keys) -> None:
    token = _service_token(keys, AUD)
    rolling = TokenVerifier(
        keys.jwks,
        issuer=ISS,
        audience=AUD,
        service="wallet",
        accept_unscoped_service_tokens=True,
        min_refresh_interval=0,
    )
    assert (await rolling.verify(token)).token_type == "service"
    assert (await rolling.verify(_service_token(keys, "vaultpay:wallet"))).token_type == "service"
    with pytest.raises(TokenInvalidError):
        await rolling.verify(_service_token(keys, "vaultpay:kyc"))


async def test_a_users_access_token_addressed_to_one_service_is_refused(
    keys: Keys, verifier: TokenVerifier
) -> None:
    with pytest.raises(TokenInvalidError):
        await verifier.verify(_sign(keys, aud="vaultpay:wallet"))
    with pytest.raises(TokenInvalidError):
        await verifier.verify(_sign(keys, aud=[AUD, "vaultpay:wallet"]))


def test_a_service_audience_names_a_service_of_the_mesh() -> None:
    assert service_audience("vaultpay", "kyc") == "vaultpay:kyc"
    with pytest.raises(ValueError, match="not a service of the mesh"):
        service_audience("vaultpay", "gateway")


async def test_past_the_bound_calls_are_refused_at_once_while_auth_hangs_a_refresh(
    keys: Keys,
) -> None:
    """Review of 2026-12-05: with auth hung (each fetch waiting out a timeout longer than the
    refresh interval), every call queued on the refresh lock and then started a fetch of its
    own: the tenth waited ten timeouts. Those behind a refresh under way are refused at once."""
    auth = FlakyAuth(keys)
    verifier, token = auth.verifier(), _sign(keys)
    await _past_the_bound(auth, verifier, token)
    hung = asyncio.Event()
    answered = asyncio.Event()

    async def hanging() -> list[dict[str, str]]:
        auth.fetches += 1
        hung.set()
        await answered.wait()
        raise ConnectionError("auth timed out")

    verifier._fetch_jwks = hanging
    first = asyncio.ensure_future(verifier.verify(token))
    await asyncio.wait_for(hung.wait(), 5)
    before = auth.fetches
    for _ in range(9):
        with pytest.raises(AuthUnavailableError):
            await asyncio.wait_for(verifier.verify(token), 5)  # never queued
    answered.set()
    with pytest.raises(AuthUnavailableError):
        await first
    assert auth.fetches == before


async def test_a_hung_auth_never_holds_a_call_whose_keys_are_good(keys: Keys) -> None:
    """Review of 2026-12-05: a stale key set's refresh was awaited by the call that started
    it: with auth hung, one call in every few seconds waited out the fetch's timeout (3 s),
    service tokens on the money path among them. The call waits a moment only; the keys it
    holds serve, and the refresh goes on by itself."""
    auth = FlakyAuth(keys)
    verifier, now = auth.verifier(), auth.now
    token = _sign(keys)
    await verifier.verify(token)
    answered = asyncio.Event()

    async def hanging() -> list[dict[str, str]]:
        auth.fetches += 1
        await answered.wait()
        raise ConnectionError("auth timed out")

    verifier._fetch_jwks = hanging
    now[0] += 61  # stale: a refresh is due
    before = auth.fetches
    for _ in range(3):
        claims = await asyncio.wait_for(verifier.verify(token), 2)  # not the fetch's time
        assert claims.subject == "user-1"
    assert auth.fetches == before + 1  # one refresh, under way
    answered.set()
    await asyncio.sleep(0)
