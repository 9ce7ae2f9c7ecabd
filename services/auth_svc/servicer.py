"""AuthService: the RPC methods, thin over keys, tokens and user-svc."""

from __future__ import annotations

import grpc

from airline.auth.v1 import auth_pb2, auth_pb2_grpc
from airline.user.v1 import user_pb2
from services.auth_svc.keys import KeyRing
from services.auth_svc.tokens import (
    ACCESS_TOKEN_TTL_SECONDS,
    RefreshTokenStore,
    TokenInvalid,
    issue_access_token,
)
from services.runtime.errors import PermissionDenied, require_fields
from services.runtime.upstreams import UserClient, dependency_failed

TOKEN_TYPE = "Bearer"  # noqa: S105 - the OAuth token type, not a secret


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(
        self,
        keys: KeyRing,
        refresh_tokens: RefreshTokenStore,
        users: UserClient,
        *,
        issuer: str,
        audience: str,
    ) -> None:
        self._keys = keys
        self._refresh = refresh_tokens
        self._users = users
        self._issuer = issuer
        self._audience = audience

    def CreateToken(
        self, request: auth_pb2.CreateTokenRequest, _: grpc.ServicerContext
    ) -> auth_pb2.CreateTokenResponse:
        require_fields(email=request.email, password=request.password)
        try:
            user = self._users.verify_password(request.email, request.password)
        except grpc.RpcError as err:
            raise dependency_failed(err, "user-svc") from None
        _require_active(user)
        return auth_pb2.CreateTokenResponse(
            access_token=self._access_token(user),
            refresh_token=self._refresh.issue(user.user_id),
            token_type=TOKEN_TYPE,
            expires_in=ACCESS_TOKEN_TTL_SECONDS,
        )

    def RefreshToken(
        self, request: auth_pb2.RefreshTokenRequest, _: grpc.ServicerContext
    ) -> auth_pb2.RefreshTokenResponse:
        require_fields(refresh_token=request.refresh_token)
        rotated = self._refresh.rotate(request.refresh_token)
        try:
            # Roles and the active flag may have changed since the last token.
            user = self._users.lookup(rotated.user_id)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                self._refresh.revoke(rotated.refresh_token)
                raise TokenInvalid() from None
            raise dependency_failed(err, "user-svc") from None
        _require_active(user)
        return auth_pb2.RefreshTokenResponse(
            access_token=self._access_token(user),
            refresh_token=rotated.refresh_token,
            token_type=TOKEN_TYPE,
            expires_in=ACCESS_TOKEN_TTL_SECONDS,
        )

    def RevokeToken(
        self, request: auth_pb2.RevokeTokenRequest, _: grpc.ServicerContext
    ) -> auth_pb2.RevokeTokenResponse:
        require_fields(refresh_token=request.refresh_token)
        self._refresh.revoke(request.refresh_token)
        return auth_pb2.RevokeTokenResponse()

    def GetJwks(
        self, request: auth_pb2.GetJwksRequest, _: grpc.ServicerContext
    ) -> auth_pb2.GetJwksResponse:
        return auth_pb2.GetJwksResponse(keys=[auth_pb2.Jwk(**jwk) for jwk in self._keys.jwks()])

    def _access_token(self, user: user_pb2.User) -> str:
        return issue_access_token(
            user, self._keys.current(), issuer=self._issuer, audience=self._audience
        )


def _require_active(user: user_pb2.User) -> None:
    if not user.active:
        raise PermissionDenied("this account is deactivated", reason="USER_INACTIVE")
