"""Signing keys on a real SQLite file: first key, racing instances, rotation, JWKS."""

from __future__ import annotations

import base64
import threading
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
from sqlalchemy import Engine, select

from services.auth_svc.keys import KeyRing, NoSigningKey, SigningKeyRow
from services.runtime.db import make_engine


@pytest.fixture
def ring(engine: Engine) -> KeyRing:
    found = KeyRing(engine)
    found.create_schema()
    return found


def states(engine: Engine) -> dict[str, tuple[str, bool]]:
    """kid -> (state, whether the private key is still stored)."""
    query = select(SigningKeyRow.kid, SigningKeyRow.state, SigningKeyRow.private_pem)
    with engine.connect() as conn:
        return {kid: (state, pem is not None) for kid, state, pem in conn.execute(query)}


def unpad_b64(value: str) -> bytes:
    assert "=" not in value
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def test_current_before_ensure_key_is_an_error(ring: KeyRing) -> None:
    with pytest.raises(NoSigningKey):
        ring.current()


def test_first_start_makes_one_2048_bit_key(ring: KeyRing, engine: Engine) -> None:
    kid = ring.ensure_key()
    assert ring.ensure_key() == kid
    assert ring.current().kid == kid
    assert ring.current().private_key.key_size == 2048
    assert states(engine) == {kid: ("current", True)}


def test_jwks_describes_the_current_key(ring: KeyRing) -> None:
    kid = ring.ensure_key()
    [jwk] = ring.jwks()
    assert {k: jwk[k] for k in ("kty", "use", "kid", "alg")} == {
        "kty": "RSA",
        "use": "sig",
        "kid": kid,
        "alg": "RS256",
    }
    numbers = ring.current().private_key.public_key().public_numbers()
    assert int.from_bytes(unpad_b64(jwk["n"]), "big") == numbers.n
    assert int.from_bytes(unpad_b64(jwk["e"]), "big") == numbers.e == 65537


def test_token_signed_with_current_key_verifies_with_its_jwk(ring: KeyRing) -> None:
    ring.ensure_key()
    key = ring.current()
    token = jwt.encode({"sub": "x"}, key.private_key, algorithm="RS256")
    [jwk] = ring.jwks()
    assert jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["RS256"]) == {"sub": "x"}


def test_two_instances_starting_together_share_one_key(db_url: str, engine: Engine) -> None:
    """Both make a candidate key at once; only one is stored and both sign with it."""
    KeyRing(engine).create_schema()
    engines = [make_engine(db_url), make_engine(db_url)]
    rings = [KeyRing(e) for e in engines]
    start = threading.Barrier(2)

    def start_instance(ring: KeyRing) -> str:
        start.wait(timeout=10)
        return ring.ensure_key()

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            kids = list(pool.map(start_instance, rings))
        assert kids[0] == kids[1]
        assert rings[0].current().kid == rings[1].current().kid == kids[0]
        assert states(engine) == {kids[0]: ("current", True)}
    finally:
        for e in engines:
            e.dispose()


def test_rotation_keeps_the_previous_key_in_jwks(ring: KeyRing, engine: Engine) -> None:
    first = ring.ensure_key()
    second = ring.rotate()
    assert ring.current().kid == second
    assert [jwk["kid"] for jwk in ring.jwks()] == [second, first]
    assert states(engine) == {first: ("previous", True), second: ("current", True)}


def test_second_rotation_retires_the_oldest_key_and_drops_its_private_half(
    ring: KeyRing, engine: Engine
) -> None:
    first = ring.ensure_key()
    second = ring.rotate()
    third = ring.rotate()
    assert [jwk["kid"] for jwk in ring.jwks()] == [third, second]
    assert states(engine)[first] == ("retired", False)
    assert ring.jwk(first) is None


def test_another_instances_rotation_is_signed_with_after_the_refresh_interval(
    engine: Engine,
) -> None:
    now = [0.0]
    rotator = KeyRing(engine)
    rotator.create_schema()
    rotator.ensure_key()
    follower = KeyRing(engine, refresh_seconds=60.0, clock=lambda: now[0])
    old = follower.current().kid
    new = rotator.rotate()
    assert follower.current().kid == old
    now[0] = 61.0
    assert follower.current().kid == new


def test_unknown_kid_is_looked_up_again(engine: Engine) -> None:
    rotator = KeyRing(engine)
    rotator.create_schema()
    rotator.ensure_key()
    follower = KeyRing(engine, clock=lambda: 0.0)
    follower.current()
    new = rotator.rotate()
    found = follower.jwk(new)
    assert found is not None
    assert found["kid"] == new
    assert follower.jwk("no-such-kid") is None


def test_jwks_reads_the_database_so_other_instances_rotations_show_at_once(
    engine: Engine,
) -> None:
    rotator = KeyRing(engine)
    rotator.create_schema()
    rotator.ensure_key()
    follower = KeyRing(engine, clock=lambda: 0.0)
    follower.current()
    new = rotator.rotate()
    assert follower.jwks()[0]["kid"] == new


def test_with_a_passphrase_the_stored_signing_key_is_encrypted_and_still_signs(
    engine: Engine,
) -> None:
    ring = KeyRing(engine, passphrase=b"correct horse")
    ring.create_schema()
    kid = ring.ensure_key()
    with engine.connect() as conn:
        stored = conn.execute(select(SigningKeyRow.private_pem)).scalar_one()
    assert stored is not None
    assert stored.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert KeyRing(engine, passphrase=b"correct horse").current().kid == kid
    with pytest.raises(NoSigningKey):
        KeyRing(engine).current()
    with pytest.raises(NoSigningKey):
        KeyRing(engine, passphrase=b"wrong").current()
