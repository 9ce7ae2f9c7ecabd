"""AuthService over gRPC, with the real user-svc behind it."""

from __future__ import annotations

from functools import partial

import grpc
import jwt
import pytest
from google.protobuf import field_mask_pb2

from airline.auth.v1 import auth_pb2, auth_pb2_grpc
from airline.user.v1 import user_pb2
from services.auth_svc import server as auth_server
from tests.conftest import Stack, bearer, channel_to, make_config, serving
from tests.runtime.test_authn import Keys


def _code(call: object, request: object, **kwargs: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=10, **kwargs)  # type: ignore[operator]
    return err.value.code()


def _jwk_for(stack: Stack, token: str) -> jwt.PyJWK:
    kid = jwt.get_unverified_header(token)["kid"]
    keys = stack.tokens.GetJwks(auth_pb2.GetJwksRequest(), timeout=10).keys
    (match,) = [k for k in keys if k.kid == kid]
    return jwt.PyJWK({f: getattr(match, f) for f in ("kty", "use", "kid", "alg", "n", "e")})


def test_access_token_is_an_rs256_jwt_with_the_contract_claims(stack: Stack) -> None:
    me = stack.sign_up()
    claims = jwt.decode(
        me.access_token,
        _jwk_for(stack, me.access_token),
        algorithms=["RS256"],
        audience="airline-api",
        issuer="airline-auth",
    )
    assert claims["sub"] == me.user.user_id
    assert claims["email"] == me.user.email
    assert claims["roles"] == ["user"]
    assert claims["exp"] - claims["iat"] == 900
    assert claims["jti"]


def test_token_response_says_bearer_and_its_lifetime(stack: Stack) -> None:
    me = stack.sign_up()
    pair = stack.tokens.CreateToken(
        auth_pb2.CreateTokenRequest(email=me.user.email, password=me.password), timeout=10
    )
    assert (pair.token_type, pair.expires_in) == ("Bearer", 900)
    assert pair.refresh_token != me.refresh_token


def test_wrong_password_and_unknown_email_fail_alike(stack: Stack) -> None:
    me = stack.sign_up()
    answers = []
    for email, password in [(me.user.email, "not the password"), ("ghost@example.com", "x" * 9)]:
        with pytest.raises(grpc.RpcError) as err:
            stack.tokens.CreateToken(
                auth_pb2.CreateTokenRequest(email=email, password=password), timeout=10
            )
        answers.append((err.value.code(), err.value.details()))
    assert answers[0] == answers[1]
    assert answers[0][0] == grpc.StatusCode.UNAUTHENTICATED


def test_missing_fields_are_invalid_argument(stack: Stack) -> None:
    assert _code(stack.tokens.CreateToken, auth_pb2.CreateTokenRequest()) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def test_deactivated_user_cannot_sign_in(stack: Stack) -> None:
    assert stack.admin is not None
    me = stack.sign_up()
    stack.users.UpdateUser(
        user_pb2.UpdateUserRequest(
            user=user_pb2.User(user_id=me.user.user_id, active=False),
            update_mask=field_mask_pb2.FieldMask(paths=["active"]),
        ),
        metadata=stack.admin.auth,
        timeout=10,
    )
    request = auth_pb2.CreateTokenRequest(email=me.user.email, password=me.password)
    assert _code(stack.tokens.CreateToken, request) == grpc.StatusCode.PERMISSION_DENIED


def test_refresh_gives_a_new_pair_and_retires_the_old_refresh_token(stack: Stack) -> None:
    me = stack.sign_up()
    fresh = stack.tokens.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=me.refresh_token), timeout=10
    )
    assert fresh.access_token
    assert fresh.refresh_token != me.refresh_token
    stack.users.GetUser(
        user_pb2.GetUserRequest(user_id="me"), metadata=bearer(fresh.access_token), timeout=10
    )


def test_reusing_a_used_refresh_token_revokes_the_whole_family(stack: Stack) -> None:
    me = stack.sign_up()
    fresh = stack.tokens.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=me.refresh_token), timeout=10
    )
    reuse = auth_pb2.RefreshTokenRequest(refresh_token=me.refresh_token)
    assert _code(stack.tokens.RefreshToken, reuse) == grpc.StatusCode.UNAUTHENTICATED
    newer = auth_pb2.RefreshTokenRequest(refresh_token=fresh.refresh_token)
    assert _code(stack.tokens.RefreshToken, newer) == grpc.StatusCode.UNAUTHENTICATED


def test_revoked_refresh_token_stops_working(stack: Stack) -> None:
    me = stack.sign_up()
    stack.tokens.RevokeToken(
        auth_pb2.RevokeTokenRequest(refresh_token=me.refresh_token), timeout=10
    )
    request = auth_pb2.RefreshTokenRequest(refresh_token=me.refresh_token)
    assert _code(stack.tokens.RefreshToken, request) == grpc.StatusCode.UNAUTHENTICATED


def test_revoking_an_unknown_token_succeeds_and_reveals_nothing(stack: Stack) -> None:
    stack.tokens.RevokeToken(auth_pb2.RevokeTokenRequest(refresh_token="never-issued"), timeout=10)


def test_jwks_publishes_the_key_that_signed_the_token(stack: Stack) -> None:
    me = stack.sign_up()
    key = _jwk_for(stack, me.access_token)
    assert (key.key_type, key.algorithm_name) == ("RSA", "RS256")


def test_token_forged_under_the_real_kid_is_unauthenticated_elsewhere(stack: Stack) -> None:
    me = stack.sign_up()
    forged = Keys(jwt.get_unverified_header(me.access_token)["kid"])
    request = user_pb2.GetUserRequest(user_id="me")
    assert _code(
        stack.users.GetUser, request, metadata=bearer(forged.token(sub=me.user.user_id))
    ) == (grpc.StatusCode.UNAUTHENTICATED)


def test_user_svc_down_makes_sign_in_unavailable(tmp_path: object) -> None:
    settings = auth_server.AuthConfig(f"sqlite:///{tmp_path}/auth.db", "127.0.0.1:1")
    build = partial(auth_server.build, settings=settings)
    with serving(make_config("auth-svc"), build) as server, channel_to(server) as channel:
        request = auth_pb2.CreateTokenRequest(email="a@example.com", password="whatever1")
        with pytest.raises(grpc.RpcError) as err:
            auth_pb2_grpc.AuthServiceStub(channel).CreateToken(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
