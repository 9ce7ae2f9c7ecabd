"""Access token verification: RS256 JWTs checked against auth-svc's JWKS.

Keys are cached by `kid`. A token naming an unknown kid triggers one refresh of
the key set (at most once per `min_refresh_seconds`, so forged kids cannot turn
every request into a call to auth-svc); known keys are refreshed after a TTL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jwt

from services.runtime.context import Principal
from services.runtime.errors import Unauthenticated, Unavailable

log = logging.getLogger(__name__)

JwksSource = Callable[[], Sequence[dict[str, Any]]]
"""Returns the current public keys as JWK dicts (RFC 7517)."""

LEEWAY_SECONDS = 5


class JwksCache:
    """The public keys by kid, fetched from a `JwksSource` when needed."""

    def __init__(
        self,
        source: JwksSource,
        *,
        ttl_seconds: float = 300.0,
        min_refresh_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._ttl = ttl_seconds
        self._min_refresh = min_refresh_seconds
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def key(self, kid: str) -> jwt.PyJWK | None:
        with self._lock:
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at > self._ttl
            may_refresh = self._fetched_at is None or now - self._fetched_at >= self._min_refresh
            if stale or (kid not in self._keys and may_refresh):
                self._refresh(now)
            return self._keys.get(kid)

    def _refresh(self, now: float) -> None:
        try:
            jwks = self._source()
        except Exception as exc:  # noqa: BLE001 - keep serving with the keys we have
            log.warning("jwks refresh failed", extra={"error": type(exc).__name__})
            if self._fetched_at is None:
                # No keys yet (an instance just started, auth-svc not reachable yet):
                # the token is not the problem, this instance is. UNAVAILABLE lets the
                # caller (Envoy, a client) try another instance; 401 would be a lie.
                raise Unavailable("the token signing keys cannot be fetched yet") from None
            return
        keys: dict[str, jwt.PyJWK] = {}
        for jwk in jwks:
            try:
                keys[str(jwk["kid"])] = jwt.PyJWK(dict(jwk), algorithm="RS256")
            except (KeyError, jwt.PyJWKError):
                log.warning("jwks key skipped: not an RS256 key with a kid")
        self._keys = keys
        self._fetched_at = now


class TokenVerifier:
    """Verifies bearer tokens and turns their claims into a `Principal`."""

    def __init__(self, keys: JwksCache, *, issuer: str, audience: str) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience

    def verify(self, authorization: str) -> Principal:
        """The caller named by an `authorization` header value; Unauthenticated if not valid."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the authorization header must be 'Bearer <token>'")
        try:
            kid = jwt.get_unverified_header(token.strip()).get("kid")
            key = self._keys.key(str(kid)) if kid else None
            if key is None:
                raise Unauthenticated("the access token is invalid")
            claims = jwt.decode(
                token.strip(),
                key=key,
                algorithms=["RS256"],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "iss", "aud", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the access token has expired") from None
        except jwt.PyJWTError:
            raise Unauthenticated("the access token is invalid") from None
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Unauthenticated("the access token is invalid")
        return Principal(
            user_id=str(claims["sub"]),
            email=str(claims.get("email", "")),
            roles=tuple(roles),
            token_id=str(claims["jti"]),
            expires_at=float(claims["exp"]),
        )


def verifier_for(issuer: str, audience: str, source: JwksSource) -> TokenVerifier:
    """A verifier with a cached key set from `source`, for one issuer and audience."""
    return TokenVerifier(JwksCache(source), issuer=issuer, audience=audience)
