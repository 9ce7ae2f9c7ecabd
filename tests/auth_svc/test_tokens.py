"""Access tokens against the published JWKS, and refresh token rotation on SQLite."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy import Engine, Row, select

from services.auth_svc.keys import KeyRing
from services.auth_svc.tokens import (
    RefreshTokenRow,
    RefreshTokenStore,
    Rotated,
    TokenInvalid,
    issue_access_token,
)
from services.runtime.authn import JwksCache, TokenVerifier
from services.runtime.db import make_engine

ISSUER = "airline-auth"
AUDIENCE = "airline-api"


@dataclass(frozen=True)
class User:
    user_id: str
    email: str
    roles: tuple[str, ...]


ALICE = User("alice-id", "alice@example.com", ("user", "admin"))


@pytest.fixture
def ring(engine: Engine) -> KeyRing:
    found = KeyRing(engine)
    found.create_schema()
    found.ensure_key()
    return found


@pytest.fixture
def store(engine: Engine) -> RefreshTokenStore:
    found = RefreshTokenStore(engine)
    found.create_schema()
    return found


def rows(engine: Engine) -> Sequence[Row[Any]]:
    with engine.connect() as conn:
        return conn.execute(select(RefreshTokenRow)).all()


# --- access tokens ------------------------------------------------------------------


def test_access_token_verifies_with_the_jwk_and_carries_every_claim(ring: KeyRing) -> None:
    now = datetime.now(UTC)
    token = issue_access_token(ALICE, ring.current(), issuer=ISSUER, audience=AUDIENCE, now=now)
    header = jwt.get_unverified_header(token)
    assert header["kid"] == ring.current().kid
    assert header["alg"] == "RS256"
    [jwk] = ring.jwks()
    claims = jwt.decode(
        token, jwt.PyJWK(jwk).key, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER
    )
    assert set(claims) == {"sub", "email", "roles", "iat", "exp", "iss", "aud", "jti"}
    assert (claims["sub"], claims["email"], claims["roles"]) == (
        "alice-id",
        "alice@example.com",
        ["user", "admin"],
    )
    assert claims["iat"] == int(now.timestamp())
    assert claims["exp"] - claims["iat"] == 900


def test_every_access_token_has_its_own_jti(ring: KeyRing) -> None:
    tokens = [
        issue_access_token(ALICE, ring.current(), issuer=ISSUER, audience=AUDIENCE)
        for _ in range(2)
    ]
    jtis = {jwt.decode(t, options={"verify_signature": False})["jti"] for t in tokens}
    assert len(jtis) == 2


def test_access_token_is_accepted_by_the_services_verifier(ring: KeyRing) -> None:
    token = issue_access_token(ALICE, ring.current(), issuer=ISSUER, audience=AUDIENCE)
    verifier = TokenVerifier(JwksCache(ring.jwks), issuer=ISSUER, audience=AUDIENCE)
    principal = verifier.verify(f"Bearer {token}")
    assert (principal.user_id, principal.roles) == ("alice-id", ("user", "admin"))


def test_token_signed_before_a_rotation_still_verifies(ring: KeyRing) -> None:
    token = issue_access_token(ALICE, ring.current(), issuer=ISSUER, audience=AUDIENCE)
    ring.rotate()
    verifier = TokenVerifier(JwksCache(ring.jwks), issuer=ISSUER, audience=AUDIENCE)
    assert verifier.verify(f"Bearer {token}").user_id == "alice-id"


# --- refresh tokens -----------------------------------------------------------------


def test_refresh_token_is_stored_only_as_its_hash(store: RefreshTokenStore, engine: Engine) -> None:
    token = store.issue("alice-id")
    [row] = rows(engine)
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in {str(value) for value in row}
    assert len(token) >= 43


def test_rotation_returns_the_user_and_a_new_token(store: RefreshTokenStore) -> None:
    first = store.issue("alice-id")
    rotated = store.rotate(first)
    assert rotated.user_id == "alice-id"
    assert rotated.refresh_token != first
    assert store.rotate(rotated.refresh_token).user_id == "alice-id"


def test_rotated_token_stays_in_its_family(store: RefreshTokenStore, engine: Engine) -> None:
    store.rotate(store.issue("alice-id"))
    assert len({row.family_id for row in rows(engine)}) == 1


def test_unknown_token_is_invalid(store: RefreshTokenStore) -> None:
    with pytest.raises(TokenInvalid):
        store.rotate("never-issued")


def test_reusing_a_token_revokes_its_whole_family(store: RefreshTokenStore) -> None:
    """The newest token stops working too: whoever holds the family is signed out."""
    first = store.issue("alice-id")
    newest = store.rotate(first).refresh_token
    with pytest.raises(TokenInvalid):
        store.rotate(first)
    with pytest.raises(TokenInvalid):
        store.rotate(newest)


def test_family_revocation_on_reuse_is_committed(
    store: RefreshTokenStore, engine: Engine, db_url: str
) -> None:
    first = store.issue("alice-id")
    store.rotate(first)
    with pytest.raises(TokenInvalid):
        store.rotate(first)
    other_engine = make_engine(db_url)
    try:
        with other_engine.connect() as conn:
            revoked = conn.execute(select(RefreshTokenRow.revoked)).scalars().all()
    finally:
        other_engine.dispose()
    assert revoked == [True, True]


def test_reuse_leaves_other_families_alone(store: RefreshTokenStore) -> None:
    mine = store.issue("alice-id")
    other_device = store.issue("alice-id")
    store.rotate(mine)
    with pytest.raises(TokenInvalid):
        store.rotate(mine)
    assert store.rotate(other_device).user_id == "alice-id"


def test_concurrent_rotations_of_one_token_have_exactly_one_winner(
    store: RefreshTokenStore,
) -> None:
    """The losers count as reuse, so the family (the winner's new token too) is revoked."""
    token = store.issue("alice-id")
    start = threading.Barrier(5)

    def rotate(_: int) -> Rotated | None:
        start.wait(timeout=10)
        try:
            return store.rotate(token)
        except TokenInvalid:
            return None

    with ThreadPoolExecutor(max_workers=5) as pool:
        results = list(pool.map(rotate, range(5)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    with pytest.raises(TokenInvalid):
        store.rotate(winners[0].refresh_token)


def test_expired_token_is_invalid(engine: Engine) -> None:
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    store = RefreshTokenStore(engine, ttl=timedelta(days=30), clock=lambda: now[0])
    store.create_schema()
    token = store.issue("alice-id")
    now[0] += timedelta(days=30)
    with pytest.raises(TokenInvalid):
        store.rotate(token)


def test_token_just_before_expiry_rotates(engine: Engine) -> None:
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    store = RefreshTokenStore(engine, ttl=timedelta(days=30), clock=lambda: now[0])
    store.create_schema()
    token = store.issue("alice-id")
    now[0] += timedelta(days=30) - timedelta(seconds=1)
    assert store.rotate(token).user_id == "alice-id"


def test_revoked_token_stops_working(store: RefreshTokenStore) -> None:
    token = store.issue("alice-id")
    store.revoke(token)
    with pytest.raises(TokenInvalid):
        store.rotate(token)


def test_revoking_ends_the_family_even_with_an_older_token(store: RefreshTokenStore) -> None:
    first = store.issue("alice-id")
    newest = store.rotate(first).refresh_token
    store.revoke(first)
    with pytest.raises(TokenInvalid):
        store.rotate(newest)


def test_revoke_is_idempotent_and_silent_for_unknown_tokens(store: RefreshTokenStore) -> None:
    token = store.issue("alice-id")
    store.revoke(token)
    store.revoke(token)
    store.revoke("never-issued")


def test_reuse_racing_a_legitimate_rotation_still_revokes_the_new_token(
    store: RefreshTokenStore,
) -> None:
    """Whichever runs first, the token the legitimate rotation makes ends up revoked."""
    used = store.issue("alice-id")
    newest = store.rotate(used).refresh_token
    start = threading.Barrier(2)

    def rotate(token: str) -> Rotated | None:
        start.wait(timeout=10)
        try:
            return store.rotate(token)
        except TokenInvalid:
            return None

    with ThreadPoolExecutor(max_workers=2) as pool:
        replayed, legitimate = pool.map(rotate, [used, newest])
    assert replayed is None
    if legitimate is not None:
        with pytest.raises(TokenInvalid):
            store.rotate(legitimate.refresh_token)
