"""Service identities, introspection, JWKS and signing-key rotation."""

from __future__ import annotations

import asyncio

import grpc
import jwt

from tests.integration.auth.conftest import SERVICE_SECRET, AuthStack, bearer
from tests.support import rpc_failure
from vaultpay.auth.v1 import auth_pb2


async def _service_token(auth: AuthStack) -> str:
    reply: auth_pb2.IssueServiceTokenResponse = await auth.internal.IssueServiceToken(
        auth_pb2.IssueServiceTokenRequest(client_id="wallet", client_secret=SERVICE_SECRET)
    )
    return reply.access_token


async def test_service_identity_introspects_a_live_user_token(auth: AuthStack) -> None:
    user, tokens = await auth.user_with_token()
    answer = await auth.internal.IntrospectToken(
        auth_pb2.IntrospectTokenRequest(token=tokens.access_token),
        metadata=bearer(await _service_token(auth)),
    )
    assert answer.active
    assert answer.user_id == user.user_id
    assert answer.role == user.role


async def test_introspection_reports_a_revoked_token(auth: AuthStack) -> None:
    _, tokens = await auth.user_with_token()
    await auth.public.Logout(auth_pb2.LogoutRequest(), metadata=bearer(tokens))
    answer = await auth.internal.IntrospectToken(
        auth_pb2.IntrospectTokenRequest(token=tokens.access_token),
        metadata=bearer(await _service_token(auth)),
    )
    assert not answer.active
    assert answer.inactive_reason == auth_pb2.INACTIVE_REASON_TOKEN_REVOKED


async def test_users_cannot_call_internal_rpcs(auth: AuthStack) -> None:
    _, tokens = await auth.user_with_token()
    failure = await rpc_failure(
        auth.internal.IntrospectToken(
            auth_pb2.IntrospectTokenRequest(token=tokens.access_token), metadata=bearer(tokens)
        )
    )
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_PERMISSIONS",
    )


async def test_service_tokens_cannot_call_user_rpcs(auth: AuthStack) -> None:
    failure = await rpc_failure(
        auth.public.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(await _service_token(auth)))
    )
    assert failure.code is grpc.StatusCode.PERMISSION_DENIED


async def test_wrong_client_secret_is_refused(auth: AuthStack) -> None:
    failure = await rpc_failure(
        auth.internal.IssueServiceToken(
            auth_pb2.IssueServiceTokenRequest(client_id="wallet", client_secret="guess")
        )
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CLIENT")


async def test_jwks_publishes_the_key_that_signs_tokens(auth: AuthStack) -> None:
    _, tokens = await auth.user_with_token()
    jwks = await auth.public.GetJwks(auth_pb2.GetJwksRequest())
    kid = jwt.get_unverified_header(tokens.access_token)["kid"]
    assert kid in {key.kid for key in jwks.keys}
    assert all(key.kty == "OKP" and key.alg == "EdDSA" for key in jwks.keys)
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    assert {"sub", "role", "jti", "iat", "exp", "iss", "aud", "typ", "sid"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 15 * 60


async def test_rotation_publishes_first_then_signs_and_old_tokens_stay_valid(
    auth: AuthStack,
) -> None:
    user, old = await auth.user_with_token()
    old_kid = jwt.get_unverified_header(old.access_token)["kid"]
    result = auth.cli("rotate-signing-key", env={"AUTH_KEY_PUBLISH_LEAD_SECONDS": "3"})
    assert result.returncode == 0, result.stderr
    await asyncio.sleep(1.2)  # replicas reload keys every AUTH_KEY_RELOAD_SECONDS (1 s here)
    kids = {key.kid for key in (await auth.public.GetJwks(auth_pb2.GetJwksRequest())).keys}
    (new_kid,) = kids - {old_kid}
    # Published, but the old key still signs until the lead time has passed.
    during = await auth.login(user.email)
    assert jwt.get_unverified_header(during.access_token)["kid"] == old_kid
    await asyncio.sleep(2.5)
    after = await auth.login(user.email)
    assert jwt.get_unverified_header(after.access_token)["kid"] == new_kid
    for tokens in (old, during, after):
        await auth.public.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(tokens))


async def test_immediate_rotation_switches_at_once(auth: AuthStack) -> None:
    user, old = await auth.user_with_token()
    result = auth.cli("rotate-signing-key", "--immediate")
    assert result.returncode == 0, result.stderr
    await asyncio.sleep(1.2)
    new = await auth.login(user.email)
    assert (
        jwt.get_unverified_header(new.access_token)["kid"]
        != jwt.get_unverified_header(old.access_token)["kid"]
    )
    await auth.public.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(old))


async def test_services_look_up_a_users_contact(auth: AuthStack) -> None:
    user = await auth.register()
    reply = await auth.internal.GetUserContact(
        auth_pb2.GetUserContactRequest(user_id=user.user_id),
        metadata=bearer(await _service_token(auth)),
    )
    assert (reply.email, reply.active) == (user.email, True)


async def test_a_withdrawn_key_stops_verifying_and_a_new_one_signs(auth: AuthStack) -> None:
    user, old = await auth.user_with_token()
    old_kid = jwt.get_unverified_header(old.access_token)["kid"]
    result = auth.cli("withdraw-signing-key", "--kid", old_kid)
    assert result.returncode == 0, result.stderr
    await asyncio.sleep(1.5)  # the server reloads keys every second here
    kids = {key.kid for key in (await auth.public.GetJwks(auth_pb2.GetJwksRequest())).keys}
    assert old_kid not in kids
    refused = await rpc_failure(auth.public.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(old)))
    assert refused.reason == "TOKEN_INVALID"
    new = await auth.login(user.email)
    assert jwt.get_unverified_header(new.access_token)["kid"] in kids
    await auth.public.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(new))


async def test_withdrawing_an_unknown_key_is_a_clear_error(auth: AuthStack) -> None:
    result = auth.cli("withdraw-signing-key", "--kid", "no-such-key")
    assert result.returncode == 2
    assert "no signing key" in result.stderr
