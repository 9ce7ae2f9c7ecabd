"""Access tokens (RS256 JWTs) and refresh tokens (opaque, single use, in families).

A refresh token is random and kept only as its SHA-256 hash. Each use returns the
next token of the same family; presenting a used token again means two parties hold
the family, so the whole family is revoked (OAuth 2.0 Security BCP, refresh token
rotation).
"""

from __future__ import annotations

import enum
import hashlib
import logging
import secrets
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, Protocol

import jwt
from sqlalchemy import Boolean, Connection, DateTime, Engine, String, insert, select, update
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Mapped, mapped_column

from services.auth_svc.keys import AuthBase, SigningKey
from services.runtime.db import create_tables
from services.runtime.errors import Unauthenticated

log = logging.getLogger(__name__)

ACCESS_TOKEN_TTL_SECONDS = 900
REFRESH_TOKEN_TTL = timedelta(days=30)

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class TokenInvalid(Unauthenticated):
    """A refresh token that is unknown, expired, revoked or reused: one message for all."""

    reason = "REFRESH_TOKEN_INVALID"

    def __init__(self, message: str = "the refresh token is invalid") -> None:
        super().__init__(message)


class ClaimsSource(Protocol):
    """Whom a token is for: a user-svc `User` message is one."""

    @property
    def user_id(self) -> str: ...

    @property
    def email(self) -> str: ...

    @property
    def roles(self) -> Sequence[str]: ...


def issue_access_token(
    user: ClaimsSource,
    key: SigningKey,
    *,
    issuer: str,
    audience: str,
    ttl_seconds: int = ACCESS_TOKEN_TTL_SECONDS,
    now: datetime | None = None,
) -> str:
    """A signed JWT for `user`, valid `ttl_seconds` from `now`, naming its key by kid."""
    issued_at = int((now or _utcnow()).timestamp())
    claims = {
        "sub": user.user_id,
        "email": user.email,
        "roles": list(user.roles),
        "iat": issued_at,
        "exp": issued_at + ttl_seconds,
        "iss": issuer,
        "aud": audience,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid})


class RefreshTokenRow(AuthBase):
    """One refresh token, by the hash of its value; the value itself is never stored."""

    __tablename__ = "refresh_tokens"

    # Plain SHA-256, no salt: the token is 256 random bits, not a guessable password.
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str] = mapped_column(String(36), index=True)
    user_id: Mapped[str] = mapped_column(String(36), index=True)
    create_time: Mapped[datetime] = mapped_column(DateTime)
    expire_time: Mapped[datetime] = mapped_column(DateTime)
    used_time: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean)


class Rotated(NamedTuple):
    user_id: str
    refresh_token: str


class _Outcome(enum.Enum):
    INVALID = enum.auto()
    REUSED = enum.auto()


class RefreshTokenStore:
    """Issues, rotates and revokes refresh tokens; safe across threads and instances."""

    def __init__(
        self, engine: Engine, *, ttl: timedelta = REFRESH_TOKEN_TTL, clock: Clock = _utcnow
    ) -> None:
        self._engine = engine
        self._ttl = ttl
        self._clock = clock

    def create_schema(self) -> None:
        create_tables(
            self._engine,
            AuthBase.metadata,
            [AuthBase.metadata.tables[RefreshTokenRow.__tablename__]],
        )

    def issue(self, user_id: str, family_id: str | None = None) -> str:
        """A new refresh token for `user_id`, starting a family unless one is given."""
        with self._engine.begin() as conn:
            return self._insert(conn, user_id, family_id or str(uuid.uuid4()))

    def rotate(self, token: str) -> Rotated:
        """The next token of `token`'s family; `token` stops working. TokenInvalid if
        it is unknown, expired or revoked, or was used before: then, and durably
        although the call fails, the whole family is revoked.
        """
        token_hash = _hash(token)
        with self._engine.begin() as conn:
            _lock_family(conn, token_hash)
            outcome = self._rotate(conn, token_hash)
            if isinstance(outcome, Rotated):
                return outcome
            if outcome is _Outcome.REUSED:
                self._revoke_family_of(conn, token_hash)
        # Leaving the block committed the revocation; only now does the call fail.
        raise TokenInvalid()

    def revoke(self, token: str) -> None:
        """Revokes the family of `token` (a sign-out ends the session); unknown is fine."""
        token_hash = _hash(token)
        with self._engine.begin() as conn:
            _lock_family(conn, token_hash)
            self._revoke_family_of(conn, token_hash)

    def _rotate(self, conn: Connection, token_hash: str) -> Rotated | _Outcome:
        now = _to_db(self._clock())
        found = conn.execute(
            select(RefreshTokenRow).where(RefreshTokenRow.token_hash == token_hash)
        ).first()
        if found is None or found.revoked:
            return _Outcome.INVALID
        if found.used_time is not None:
            return self._reused(found.family_id, found.user_id)
        if found.expire_time <= now:
            return _Outcome.INVALID
        # Claim the token. The family lock already serialises rotations; the condition
        # makes "exactly one winner" hold by this statement alone, whatever the locking.
        claimed = conn.execute(
            update(RefreshTokenRow)
            .where(
                RefreshTokenRow.token_hash == token_hash,
                RefreshTokenRow.used_time.is_(None),
                RefreshTokenRow.revoked.is_(False),
            )
            .values(used_time=now)
        ).rowcount
        if claimed != 1:
            return self._reused(found.family_id, found.user_id)
        return Rotated(found.user_id, self._insert(conn, found.user_id, found.family_id))

    def _reused(self, family_id: str, user_id: str) -> _Outcome:
        log.warning(
            "refresh token reused; revoking its family",
            extra={"family_id": family_id, "user_id": user_id},
        )
        return _Outcome.REUSED

    def _insert(self, conn: Connection, user_id: str, family_id: str) -> str:
        token = secrets.token_urlsafe(32)
        now = self._clock()
        conn.execute(
            insert(RefreshTokenRow).values(
                token_hash=_hash(token),
                family_id=family_id,
                user_id=user_id,
                create_time=_to_db(now),
                expire_time=_to_db(now + self._ttl),
                used_time=None,
                revoked=False,
            )
        )
        return token

    def _revoke_family_of(self, conn: Connection, token_hash: str) -> None:
        family = select(RefreshTokenRow.family_id).where(RefreshTokenRow.token_hash == token_hash)
        conn.execute(
            update(RefreshTokenRow)
            .where(RefreshTokenRow.family_id == family.scalar_subquery())
            .values(revoked=True)
        )


def _lock_family(conn: Connection, token_hash: str) -> None:
    """Serialises every change to one family, as SQLite's BEGIN IMMEDIATE already does.

    On PostgreSQL, concurrent family revocations updating the same rows in different
    orders deadlock, and one statement's snapshot can miss a token a concurrent rotation
    has just added. A transaction-scoped advisory lock on the family, taken first, rules
    out both; the statements after it see everything committed before it was granted.
    """
    if conn.dialect.name != "postgresql":
        return
    family = conn.execute(
        select(RefreshTokenRow.family_id).where(RefreshTokenRow.token_hash == token_hash)
    ).scalar()
    if family is not None:
        conn.execute(
            sql_text("SELECT pg_advisory_xact_lock(hashtextextended(:family, 0))"),
            {"family": family},
        )


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _to_db(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)
