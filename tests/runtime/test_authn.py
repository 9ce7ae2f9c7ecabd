"""RS256 verification against a cached JWKS."""

import base64
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from services.runtime.authn import JwksCache, TokenVerifier
from services.runtime.errors import Unauthenticated, Unavailable

ISS, AUD = "airline-auth", "airline-api"


def _b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Keys:
    """An RSA key pair with a kid and its JWK."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self.private.public_key().public_numbers()
        self.jwk = {
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": kid,
            "n": _b64(numbers.n),
            "e": _b64(numbers.e),
        }

    def token(self, kid: str | None = None, **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "sub": "u1",
            "email": "a@b.co",
            "roles": ["user"],
            "iat": now,
            "exp": now + 900,
            "iss": ISS,
            "aud": AUD,
            "jti": uuid.uuid4().hex,
        }
        claims.update(overrides)
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": kid or self.kid})


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys("k1")


@pytest.fixture(scope="module")
def other_keys() -> Keys:
    return Keys("k2")


class CountingSource:
    def __init__(self, *jwks: dict[str, str]) -> None:
        self.jwks = list(jwks)
        self.calls = 0

    def __call__(self) -> list[dict[str, str]]:
        self.calls += 1
        return self.jwks


def _verifier(source: CountingSource, **kwargs: Any) -> TokenVerifier:
    return TokenVerifier(JwksCache(source, **kwargs), issuer=ISS, audience=AUD)


def test_valid_token_gives_its_principal(keys: Keys) -> None:
    principal = _verifier(CountingSource(keys.jwk)).verify(
        "Bearer " + keys.token(roles=["user", "admin"])
    )
    assert (principal.user_id, principal.email, principal.is_admin) == ("u1", "a@b.co", True)


def test_expired_token_is_unauthenticated(keys: Keys) -> None:
    past = int(time.time()) - 3600
    with pytest.raises(Unauthenticated, match="expired"):
        _verifier(CountingSource(keys.jwk)).verify("Bearer " + keys.token(iat=past, exp=past + 900))


def test_token_signed_by_another_key_under_a_known_kid_is_unauthenticated(
    keys: Keys, other_keys: Keys
) -> None:
    forged = other_keys.token(kid=keys.kid)
    with pytest.raises(Unauthenticated, match="invalid"):
        _verifier(CountingSource(keys.jwk)).verify("Bearer " + forged)


@pytest.mark.parametrize("claim", [{"aud": "someone-else"}, {"iss": "evil"}])
def test_token_for_another_audience_or_issuer_is_unauthenticated(
    keys: Keys, claim: dict[str, str]
) -> None:
    with pytest.raises(Unauthenticated):
        _verifier(CountingSource(keys.jwk)).verify("Bearer " + keys.token(**claim))


def test_unsigned_token_is_unauthenticated(keys: Keys) -> None:
    # PyJWT's types leave out the key "none" takes: None.
    unsigned = jwt.encode(
        {"sub": "u1"},
        key=None,  # type: ignore[arg-type]
        algorithm="none",
        headers={"kid": keys.kid},
    )
    with pytest.raises(Unauthenticated):
        _verifier(CountingSource(keys.jwk)).verify("Bearer " + unsigned)


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer ", "token"])
def test_malformed_authorization_header_is_unauthenticated(keys: Keys, header: str) -> None:
    with pytest.raises(Unauthenticated):
        _verifier(CountingSource(keys.jwk)).verify(header)


def test_unknown_kid_refreshes_the_key_set_once(keys: Keys, other_keys: Keys) -> None:
    source = CountingSource(keys.jwk)
    verifier = _verifier(source, min_refresh_seconds=0)
    verifier.verify("Bearer " + keys.token())
    source.jwks.append(other_keys.jwk)  # the key was rotated in
    assert verifier.verify("Bearer " + other_keys.token()).user_id == "u1"
    assert source.calls == 2


def test_forged_kids_do_not_turn_every_request_into_a_refresh(keys: Keys) -> None:
    source = CountingSource(keys.jwk)
    verifier = _verifier(source, min_refresh_seconds=60)
    for i in range(5):
        with pytest.raises(Unauthenticated):
            verifier.verify("Bearer " + keys.token(kid=f"nope-{i}"))
    assert source.calls == 1


def test_failing_key_source_keeps_the_cached_keys(keys: Keys) -> None:
    clock = [0.0]
    down = [False]

    def source() -> list[dict[str, str]]:
        if down[0]:
            raise ConnectionError("auth-svc down")
        return [keys.jwk]

    verifier = TokenVerifier(
        JwksCache(source, ttl_seconds=10, clock=lambda: clock[0]), issuer=ISS, audience=AUD
    )
    verifier.verify("Bearer " + keys.token())
    down[0], clock[0] = True, 100.0  # the cache is stale and the source fails
    assert verifier.verify("Bearer " + keys.token()).user_id == "u1"


def test_no_keys_ever_fetched_is_unavailable_not_unauthenticated(keys: Keys) -> None:
    """A new instance that cannot reach auth-svc yet says so; the token is not at fault."""

    def source() -> list[dict[str, str]]:
        raise ConnectionError("auth-svc not reachable yet")

    verifier = TokenVerifier(JwksCache(source), issuer=ISS, audience=AUD)
    with pytest.raises(Unavailable):
        verifier.verify("Bearer " + keys.token())
