"""Auth as API.md describes it, proven from outside: REST through the edge.

Tokens issued, refreshed and revoked, the published keys, and bearer-token handling:
forged, expired and garbage tokens are refused with a 401 and a Bearer challenge.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.integration.conftest import Account, Mesh
from tests.integration.rest import PASSWORD, TOKEN_KEYS
from tests.integration.rest import bearer as _bearer
from tests.integration.rest import new_email as _email
from tests.integration.rest import rpc_status as _status

pytestmark = pytest.mark.integration


def _refresh(http: httpx.Client, refresh_token: str) -> httpx.Response:
    return http.post("/v1/auth/token:refresh", json={"refresh_token": refresh_token})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


# --- POST /v1/auth/token -----------------------------------------------------------


def test_token_is_issued_for_the_right_password(http: httpx.Client, flyer: Account) -> None:
    response = http.post(
        "/v1/auth/token", json={"email": flyer.user["email"], "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == TOKEN_KEYS
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["access_token"]
    assert body["refresh_token"]


def test_sign_in_matches_the_email_case_insensitively(http: httpx.Client, flyer: Account) -> None:
    response = http.post(
        "/v1/auth/token", json={"email": flyer.user["email"].upper(), "password": PASSWORD}
    )
    assert response.status_code == 200, response.text


def test_wrong_password_and_unknown_email_give_the_same_401(
    http: httpx.Client, flyer: Account
) -> None:
    wrong_password = http.post(
        "/v1/auth/token", json={"email": flyer.user["email"], "password": "not the password"}
    )
    unknown_email = http.post(
        "/v1/auth/token", json={"email": _email(), "password": "not the password"}
    )
    assert wrong_password.status_code == unknown_email.status_code == 401
    first, second = _status(wrong_password), _status(unknown_email)
    assert first["code"] == second["code"] == 16
    assert first["message"] == second["message"]
    assert first["message"]


# --- POST /v1/auth/token:refresh and :revoke -----------------------------------------


def test_refresh_returns_a_new_working_token_pair(http: httpx.Client, flyer: Account) -> None:
    response = _refresh(http, flyer.refresh_token)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == TOKEN_KEYS
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["refresh_token"] != flyer.refresh_token
    me = http.get("/v1/users/me", headers=_bearer(body["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json()["user_id"] == flyer.user["user_id"]


def test_refresh_token_stops_working_once_used(http: httpx.Client, flyer: Account) -> None:
    assert _refresh(http, flyer.refresh_token).status_code == 200
    again = _refresh(http, flyer.refresh_token)
    assert again.status_code == 401, again.text
    assert _status(again)["code"] == 16


def test_rotated_refresh_token_works_in_turn(http: httpx.Client, flyer: Account) -> None:
    rotated = _refresh(http, flyer.refresh_token)
    assert rotated.status_code == 200, rotated.text
    again = _refresh(http, rotated.json()["refresh_token"])
    assert again.status_code == 200, again.text


def test_presenting_a_used_refresh_token_revokes_its_whole_family(
    http: httpx.Client, flyer: Account
) -> None:
    rotated = _refresh(http, flyer.refresh_token)
    assert rotated.status_code == 200, rotated.text
    assert _refresh(http, flyer.refresh_token).status_code == 401
    newer = _refresh(http, rotated.json()["refresh_token"])
    assert newer.status_code == 401, newer.text
    assert _status(newer)["code"] == 16


def test_revoke_answers_200_with_an_empty_object(http: httpx.Client, flyer: Account) -> None:
    response = http.post("/v1/auth/token:revoke", json={"refresh_token": flyer.refresh_token})
    assert response.status_code == 200, response.text
    assert response.json() == {}


def test_revoked_refresh_token_stops_working(http: httpx.Client, flyer: Account) -> None:
    revoked = http.post("/v1/auth/token:revoke", json={"refresh_token": flyer.refresh_token})
    assert revoked.status_code == 200, revoked.text
    response = _refresh(http, flyer.refresh_token)
    assert response.status_code == 401, response.text
    assert _status(response)["code"] == 16


# --- GET /v1/auth/jwks and the access token ----------------------------------------


def test_jwks_publishes_rsa_public_keys(http: httpx.Client) -> None:
    response = http.get("/v1/auth/jwks")
    assert response.status_code == 200, response.text
    keys = response.json()["keys"]
    assert keys
    for key in keys:
        assert key["kty"] == "RSA"
        assert key["kid"]
        assert key["n"]
        assert key["e"]
        assert "d" not in key  # the private exponent never leaves auth-svc


def test_access_token_verifies_against_the_published_key(
    http: httpx.Client, flyer: Account
) -> None:
    header = jwt.get_unverified_header(flyer.access_token)
    assert header["alg"] == "RS256"
    keys = {k["kid"]: k for k in http.get("/v1/auth/jwks").json()["keys"]}
    assert header["kid"] in keys
    unverified = jwt.decode(flyer.access_token, options={"verify_signature": False})
    claims = jwt.decode(
        flyer.access_token,
        jwt.PyJWK(keys[header["kid"]]).key,
        algorithms=["RS256"],
        audience=unverified["aud"],
        issuer=unverified["iss"],
    )
    assert set(claims) >= {"sub", "email", "roles", "iat", "exp", "iss", "aud", "jti"}
    assert claims["sub"] == flyer.user["user_id"]
    assert claims["email"] == flyer.user["email"]
    assert claims["roles"] == ["user"]
    assert claims["exp"] - claims["iat"] == 900
    assert claims["iss"]
    assert claims["aud"]
    assert claims["jti"]


def test_admin_access_token_carries_the_admin_role(admin: Account) -> None:
    claims = jwt.decode(admin.access_token, options={"verify_signature": False})
    assert claims["roles"] == ["user", "admin"]


# --- bearer tokens -------------------------------------------------------------------


def test_get_me_returns_the_callers_user(http: httpx.Client, flyer: Account) -> None:
    response = http.get("/v1/users/me", headers=flyer.headers)
    assert response.status_code == 200, response.text
    assert response.json() == flyer.user


def test_missing_token_gives_401_with_www_authenticate(http: httpx.Client) -> None:
    response = http.get("/v1/users/me")
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert _status(response)["code"] == 16


Jwks = dict[str, Any]


def _forge_with_a_fresh_key(token: str, jwks: Jwks) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    fresh = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = jwt.get_unverified_header(token)["kid"]
    return jwt.encode(claims, fresh, algorithm="RS256", headers={"kid": kid})


def _forge_admin_claims(token: str, jwks: Jwks) -> str:
    header, _, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    return f"{header}.{_segment({**claims, 'roles': ['user', 'admin']})}.{signature}"


def _forge_alg_none(token: str, jwks: Jwks) -> str:
    claims = jwt.decode(token, options={"verify_signature": False})
    kid = jwt.get_unverified_header(token)["kid"]
    return f"{_segment({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_segment(claims)}."


def _forge_hs256_with_the_public_key(token: str, jwks: Jwks) -> str:
    """The classic algorithm confusion: HMAC keyed with the published RSA key."""
    claims = jwt.decode(token, options={"verify_signature": False})
    kid = jwt.get_unverified_header(token)["kid"]
    public = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == kid)).key
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{_segment(claims)}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(_forge_with_a_fresh_key, id="fresh-key-real-kid"),
        pytest.param(_forge_admin_claims, id="claims-changed-after-signing"),
        pytest.param(_forge_alg_none, id="alg-none"),
        pytest.param(_forge_hs256_with_the_public_key, id="hs256-keyed-with-public-key"),
    ],
)
def test_forged_token_gives_401_with_www_authenticate(
    http: httpx.Client, flyer: Account, forge: Callable[[str, Jwks], str]
) -> None:
    jwks = http.get("/v1/auth/jwks").json()
    response = http.get("/v1/users/me", headers=_bearer(forge(flyer.access_token, jwks)))
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert _status(response)["code"] == 16


def _current_signing_key(mesh: Mesh) -> rsa.RSAPrivateKey:
    """auth-svc's current private key, read (read-only) from its database file."""
    path = mesh.var_dir / "db" / "auth-svc.db"
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT private_pem FROM signing_keys WHERE state = 'current'").fetchone()
    key = serialization.load_pem_private_key(row[0].encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def test_expired_token_gives_401_with_www_authenticate(
    mesh: Mesh, http: httpx.Client, flyer: Account
) -> None:
    """A genuinely signed token whose time is up.

    No client can get one without waiting 15 minutes, so the test signs it with
    auth-svc's own key, read from its database; the request itself goes through the edge.
    """
    claims = jwt.decode(flyer.access_token, options={"verify_signature": False})
    kid = jwt.get_unverified_header(flyer.access_token)["kid"]
    now = int(time.time())
    # Ten minutes past expiry: well beyond any clock-skew allowance.
    expired = {**claims, "iat": now - 1500, "exp": now - 600, "jti": str(uuid.uuid4())}
    token = jwt.encode(expired, _current_signing_key(mesh), algorithm="RS256", headers={"kid": kid})
    response = http.get("/v1/users/me", headers=_bearer(token))
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert _status(response)["code"] == 16


@pytest.mark.parametrize("path", ["/v1/flights", "/v1/auth/jwks"])
def test_garbage_token_on_a_public_route_gives_401(http: httpx.Client, path: str) -> None:
    response = http.get(path, headers=_bearer("junk"))
    assert response.status_code == 401, response.text
    assert _status(response)["code"] == 16
