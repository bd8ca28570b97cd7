"""gRPC servicers of the auth service. Each method: convert request, await a use case,
convert the result. No SQL, no try/except, no context.abort here.
"""

from __future__ import annotations

from datetime import timedelta

from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay_auth.adapters.signing import KeyRing
from vaultpay_auth.entrypoints.convert import (
    INACTIVE_REASONS,
    feed_page_to_proto,
    role_to_proto,
    token_pair_to_proto,
    user_to_proto,
)
from vaultpay_auth.service_layer.accounts import AccountService
from vaultpay_auth.service_layer.admin import AdminService
from vaultpay_auth.service_layer.introspection import LocalIntrospector, ServiceIdentityService
from vaultpay_auth.service_layer.ports import UserFilter
from vaultpay_auth.service_layer.revocations import RevocationFeedService
from vaultpay_common.context import CLIENT_IP
from vaultpay_common.grpc.audit_listing import list_audit_events
from vaultpay_common.grpc.convert import (
    current_principal,
    page_scope,
    role_from_proto,
    timestamp,
)
from vaultpay_common.grpc.servicer import ServicerContext
from vaultpay_common.ids import parse_uuid
from vaultpay_common.input_checks import InputChecks
from vaultpay_common.pagination import (
    PageTokens,
    page_size,
    paginate,
    uuid_cursor,
)

__all__ = ["AuthAdminServicer", "AuthInternalServicer", "AuthServicer"]

Ctx = ServicerContext
# A held feed poll is answered this long before its caller's deadline (room for the read).
_HELD_ANSWER_MARGIN = 0.1


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, accounts: AccountService, keys: KeyRing) -> None:
        self._accounts = accounts
        self._keys = keys

    async def Register(
        self, request: auth_pb2.RegisterRequest, context: Ctx
    ) -> auth_pb2.RegisterResponse:
        user = await self._accounts.register(
            request.email, request.password, request.full_name, CLIENT_IP.get()
        )
        return auth_pb2.RegisterResponse(user=user_to_proto(user))

    async def Login(self, request: auth_pb2.LoginRequest, context: Ctx) -> auth_pb2.LoginResponse:
        tokens, user = await self._accounts.login(request.email, request.password, CLIENT_IP.get())
        return auth_pb2.LoginResponse(tokens=token_pair_to_proto(tokens), user=user_to_proto(user))

    async def RefreshToken(
        self, request: auth_pb2.RefreshTokenRequest, context: Ctx
    ) -> auth_pb2.RefreshTokenResponse:
        tokens = await self._accounts.refresh(request.refresh_token, CLIENT_IP.get())
        return auth_pb2.RefreshTokenResponse(tokens=token_pair_to_proto(tokens))

    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: Ctx
    ) -> auth_pb2.LogoutResponse:
        caller = current_principal()
        await self._accounts.logout(
            caller.session_id, user_id=caller.user_id, client_ip=CLIENT_IP.get()
        )
        return auth_pb2.LogoutResponse()

    async def GetMe(self, request: auth_pb2.GetMeRequest, context: Ctx) -> auth_pb2.GetMeResponse:
        user = await self._accounts.get_me(current_principal().user_id)
        return auth_pb2.GetMeResponse(user=user_to_proto(user))

    async def ChangePassword(
        self, request: auth_pb2.ChangePasswordRequest, context: Ctx
    ) -> auth_pb2.ChangePasswordResponse:
        caller = current_principal()
        revoked = await self._accounts.change_password(
            caller.user_id,
            caller.session_id,
            request.current_password,
            request.new_password,
            CLIENT_IP.get(),
        )
        return auth_pb2.ChangePasswordResponse(revoked_session_count=revoked)

    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: Ctx
    ) -> auth_pb2.GetJwksResponse:
        return auth_pb2.GetJwksResponse(
            keys=[auth_pb2.JsonWebKey(**jwk) for jwk in self._keys.jwks()]
        )


class AuthAdminServicer(auth_pb2_grpc.AuthAdminServiceServicer):
    def __init__(self, admin: AdminService, page_tokens: PageTokens) -> None:
        self._admin = admin
        self._tokens = page_tokens

    async def ListUsers(
        self, request: auth_pb2.ListUsersRequest, context: Ctx
    ) -> auth_pb2.ListUsersResponse:
        with InputChecks() as checks:  # one refusal names every bad field
            checks.run(lambda: page_size(request.page_size))
            role = checks.run(lambda: role_from_proto(request.role))
        flt = UserFilter(
            role=role.value,
            active=request.active if request.HasField("active") else None,
            email_prefix=request.email_prefix.strip(),
        )
        viewer, client_ip = current_principal(), CLIENT_IP.get()
        page = await paginate(
            self._tokens,
            page_size=request.page_size,
            page_token=request.page_token,
            scope=page_scope(),
            filters={"role": flt.role, "active": flt.active, "email_prefix": flt.email_prefix},
            fetch_slice=lambda after, limit: self._admin.list_users(
                flt, after, limit, viewer=viewer, client_ip=client_ip
            ),
            cursor_of=lambda u: {"c": u.created_at.isoformat(), "i": u.id},
            parse=uuid_cursor,
        )
        return auth_pb2.ListUsersResponse(
            users=[user_to_proto(u) for u in page.items], next_page_token=page.next_page_token
        )

    async def GetUser(
        self, request: auth_pb2.GetUserRequest, context: Ctx
    ) -> auth_pb2.GetUserResponse:
        user = await self._admin.get_user(
            parse_uuid(request.user_id, "user_id"),
            viewer=current_principal(),
            client_ip=CLIENT_IP.get(),
        )
        return auth_pb2.GetUserResponse(user=user_to_proto(user))

    async def SetUserRole(
        self, request: auth_pb2.SetUserRoleRequest, context: Ctx
    ) -> auth_pb2.SetUserRoleResponse:
        user = await self._admin.set_role(
            current_principal(),
            parse_uuid(request.user_id, "user_id"),
            role_from_proto(request.role),
            request.reason,
            client_ip=CLIENT_IP.get(),
        )
        return auth_pb2.SetUserRoleResponse(user=user_to_proto(user))

    async def DeactivateUser(
        self, request: auth_pb2.DeactivateUserRequest, context: Ctx
    ) -> auth_pb2.DeactivateUserResponse:
        user = await self._admin.deactivate(
            current_principal(),
            parse_uuid(request.user_id, "user_id"),
            request.reason,
            client_ip=CLIENT_IP.get(),
        )
        return auth_pb2.DeactivateUserResponse(user=user_to_proto(user))

    async def ReactivateUser(
        self, request: auth_pb2.ReactivateUserRequest, context: Ctx
    ) -> auth_pb2.ReactivateUserResponse:
        user = await self._admin.reactivate(
            current_principal(),
            parse_uuid(request.user_id, "user_id"),
            request.reason,
            client_ip=CLIENT_IP.get(),
        )
        return auth_pb2.ReactivateUserResponse(user=user_to_proto(user))

    async def ListAuthAuditEvents(
        self, request: auth_pb2.ListAuthAuditEventsRequest, context: Ctx
    ) -> auth_pb2.ListAuthAuditEventsResponse:
        viewer, client_ip = current_principal(), CLIENT_IP.get()
        events, next_token = await list_audit_events(
            self._tokens,
            request,
            fetch_slice=lambda query, before, limit: self._admin.list_audit_events(
                query, before, limit, viewer=viewer, client_ip=client_ip
            ),
        )
        return auth_pb2.ListAuthAuditEventsResponse(events=events, next_page_token=next_token)


class AuthInternalServicer(auth_pb2_grpc.AuthInternalServiceServicer):
    def __init__(
        self,
        introspector: LocalIntrospector,
        identities: ServiceIdentityService,
        admin: AdminService,
        revocations: RevocationFeedService,
    ) -> None:
        self._introspector = introspector
        self._identities = identities
        self._admin = admin
        self._revocations = revocations

    async def IntrospectToken(
        self, request: auth_pb2.IntrospectTokenRequest, context: Ctx
    ) -> auth_pb2.IntrospectTokenResponse:
        answer = await self._introspector.introspect(request.token)
        if not answer.active:
            reason = INACTIVE_REASONS.get(answer.reason, auth_pb2.INACTIVE_REASON_TOKEN_INVALID)
            return auth_pb2.IntrospectTokenResponse(active=False, inactive_reason=reason)
        return auth_pb2.IntrospectTokenResponse(
            active=True,
            user_id=answer.user_id,
            role=role_to_proto(answer.role),
            session_id=answer.session_id,
        )

    async def IssueServiceToken(
        self, request: auth_pb2.IssueServiceTokenRequest, context: Ctx
    ) -> auth_pb2.IssueServiceTokenResponse:
        token, expires_at = self._identities.issue(
            request.client_id, request.client_secret, request.audience
        )
        return auth_pb2.IssueServiceTokenResponse(
            access_token=token, expire_time=timestamp(expires_at)
        )

    async def GetUserContact(
        self, request: auth_pb2.GetUserContactRequest, context: Ctx
    ) -> auth_pb2.GetUserContactResponse:
        user = await self._admin.get_user(parse_uuid(request.user_id, "user_id"))
        return auth_pb2.GetUserContactResponse(
            email=user.email,
            full_name=user.full_name,
            active=user.active,
            role=role_to_proto(user.role),
        )

    async def GetUserRole(
        self, request: auth_pb2.GetUserRoleRequest, context: Ctx
    ) -> auth_pb2.GetUserRoleResponse:
        standing = await self._admin.role_of(parse_uuid(request.user_id, "user_id"))
        return auth_pb2.GetUserRoleResponse(
            role=role_to_proto(standing.role), active=standing.active
        )

    async def PollSessionRevocations(
        self, request: auth_pb2.PollSessionRevocationsRequest, context: Ctx
    ) -> auth_pb2.PollSessionRevocationsResponse:
        wait = request.wait.ToTimedelta()
        remaining = context.time_remaining()
        if remaining is not None:  # answer while the caller still listens, read included
            wait = min(wait, timedelta(seconds=max(0.0, remaining - _HELD_ANSWER_MARGIN)))
        return feed_page_to_proto(await self._revocations.poll(request.cursor, wait=wait))
