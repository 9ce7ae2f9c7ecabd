"""The RS256 keys auth-svc signs access tokens with, kept in its database so every
instance signs with the same key, and published as a JWKS (RFC 7517).

A key is `current` (signs and verifies), then `previous` (only verifies, so tokens
signed just before a rotation stay valid until they expire), then `retired` (kept
for the record, private half deleted). This module also owns auth-svc's declarative
base; `tokens.py` adds its table to it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import JSON, Connection, DateTime, Engine, Index, String, Text, insert, select
from sqlalchemy import text as sql_text
from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.runtime.db import create_tables

CURRENT = "current"
PREVIOUS = "previous"
RETIRED = "retired"

KEY_SIZE = 2048
PUBLIC_EXPONENT = 65537


class AuthBase(DeclarativeBase):
    """The tables of auth-svc's own database."""


class SigningKeyRow(AuthBase):
    __tablename__ = "signing_keys"
    # At most one current key, whatever the instances do at once.
    __table_args__ = (
        Index(
            "uq_signing_keys_one_current",
            "state",
            unique=True,
            sqlite_where=sql_text("state = 'current'"),
            postgresql_where=sql_text("state = 'current'"),
        ),
    )

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    # PKCS#8 PEM; None once retired, as a retired key never signs again.
    private_pem: Mapped[str | None] = mapped_column(Text, nullable=True)
    public_jwk: Mapped[dict[str, str]] = mapped_column(JSON)
    create_time: Mapped[datetime] = mapped_column(DateTime)
    state: Mapped[str] = mapped_column(String(16))


class SigningKey(NamedTuple):
    """The key to sign with and the `kid` to name it by in the token header."""

    kid: str
    private_key: rsa.RSAPrivateKey


_CURRENT_KID = select(SigningKeyRow.kid).where(SigningKeyRow.state == CURRENT)


class NoSigningKey(RuntimeError):
    """No current key in the database: `ensure_key()` was not called at start."""


@dataclass(frozen=True)
class _Snapshot:
    current: SigningKey | None
    jwks: list[dict[str, str]]
    loaded_at: float


class KeyRing:
    """The signing keys of every instance, cached here for `refresh_seconds`.

    Another instance's rotation reaches this one's `current()` within
    `refresh_seconds`; meanwhile it signs with the key that is now previous, which
    still verifies. `jwks()` always reads the database, so a verifier that meets a
    new kid finds it at whichever instance it asks.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        refresh_seconds: float = 60.0,
        key_size: int = KEY_SIZE,
        clock: Callable[[], float] = time.monotonic,
        passphrase: bytes | None = None,
    ) -> None:
        self._engine = engine
        # With a passphrase, new private keys are stored encrypted (PKCS#8, the best
        # encryption `cryptography` has); keys stored before without one still load.
        self._passphrase = passphrase or None
        self._refresh_seconds = refresh_seconds
        self._key_size = key_size
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._private_keys: dict[str, rsa.RSAPrivateKey] = {}

    def create_schema(self) -> None:
        create_tables(
            self._engine, AuthBase.metadata, [AuthBase.metadata.tables[SigningKeyRow.__tablename__]]
        )

    def ensure_key(self) -> str:
        """The current kid, making the first key if there is none yet.

        Instances starting together may each make a key, but only one is stored:
        the check and the insert are one serialised transaction, and the rest adopt it.
        """
        found = self._reload().current
        if found is not None:
            return found.kid
        # Made before the transaction so that the database lock is not held for it.
        candidate = _new_key(self._key_size, self._passphrase)
        try:
            with self._engine.begin() as conn:
                _lock_keys(conn)
                if conn.execute(_CURRENT_KID).first() is None:
                    _insert_current(conn, candidate)
        except IntegrityError:
            pass  # another instance's key got in first; the unique index kept it single
        found = self._reload().current
        if found is None:
            raise NoSigningKey("no current signing key after creating one")
        return found.kid

    def current(self) -> SigningKey:
        """The key to sign new tokens with; NoSigningKey before `ensure_key()`."""
        with self._lock:
            snapshot = self._snapshot
            if snapshot is None or self._clock() - snapshot.loaded_at > self._refresh_seconds:
                snapshot = self._reload_locked()
        if snapshot.current is None:
            raise NoSigningKey("no current signing key; call ensure_key() at start")
        return snapshot.current

    def jwks(self) -> list[dict[str, str]]:
        """The public keys that verify tokens, current then previous, as JWK dicts."""
        return [dict(jwk) for jwk in self._reload().jwks]

    def jwk(self, kid: str) -> dict[str, str] | None:
        """The public key named `kid` if it still verifies; re-reads on an unknown kid."""
        with self._lock:
            snapshot = self._snapshot or self._reload_locked()
            found = _find(snapshot, kid)
            if found is None:
                found = _find(self._reload_locked(), kid)
        return None if found is None else dict(found)

    def rotate(self) -> str:
        """Makes a new current key; current becomes previous, previous is retired."""
        candidate = _new_key(self._key_size, self._passphrase)
        with self._engine.begin() as conn:
            _lock_keys(conn)
            conn.execute(
                sql_update(SigningKeyRow)
                .where(SigningKeyRow.state == PREVIOUS)
                .values(state=RETIRED, private_pem=None)
            )
            conn.execute(
                sql_update(SigningKeyRow)
                .where(SigningKeyRow.state == CURRENT)
                .values(state=PREVIOUS)
            )
            _insert_current(conn, candidate)
        self._reload()
        return candidate.kid

    def _reload(self) -> _Snapshot:
        with self._lock:
            return self._reload_locked()

    def _reload_locked(self) -> _Snapshot:
        query = select(SigningKeyRow.kid, SigningKeyRow.private_pem, SigningKeyRow.public_jwk)
        query = query.where(SigningKeyRow.state == CURRENT)
        with self._engine.connect() as conn:
            current = conn.execute(query).first()
            previous = conn.execute(
                select(SigningKeyRow.public_jwk)
                .where(SigningKeyRow.state == PREVIOUS)
                .order_by(SigningKeyRow.create_time.desc())
            ).scalars()
            jwks = ([current.public_jwk] if current else []) + list(previous)
        signing = None
        if current is not None and current.private_pem is not None:
            signing = SigningKey(current.kid, self._private_key(current.kid, current.private_pem))
        self._snapshot = _Snapshot(signing, jwks, self._clock())
        return self._snapshot

    def _private_key(self, kid: str, pem: str) -> rsa.RSAPrivateKey:
        # Parsing checks the key, which is slow enough to do once per kid.
        if kid not in self._private_keys:
            encrypted = pem.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
            if encrypted and self._passphrase is None:
                raise NoSigningKey(f"signing key {kid} is encrypted: set SIGNING_KEY_PASSPHRASE")
            password = self._passphrase if encrypted else None
            try:
                key = serialization.load_pem_private_key(pem.encode("ascii"), password=password)
            except ValueError:
                raise NoSigningKey(
                    f"signing key {kid} does not open with this passphrase"
                ) from None
            if not isinstance(key, rsa.RSAPrivateKey):
                raise TypeError(f"signing key {kid} is not an RSA key")
            self._private_keys[kid] = key
        return self._private_keys[kid]


@dataclass(frozen=True)
class _NewKey:
    kid: str
    private_pem: str
    public_jwk: dict[str, str]


def _new_key(key_size: int, passphrase: bytes | None = None) -> _NewKey:
    private_key = rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=key_size)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode("ascii")
    numbers = private_key.public_key().public_numbers()
    n, e = _b64_uint(numbers.n), _b64_uint(numbers.e)
    kid = _thumbprint(n, e)
    jwk = {"kty": "RSA", "use": "sig", "kid": kid, "alg": "RS256", "n": n, "e": e}
    return _NewKey(kid, pem, jwk)


def _thumbprint(n: str, e: str) -> str:
    """The RFC 7638 JWK thumbprint: a kid that names the key itself, not a counter."""
    canonical = json.dumps({"e": e, "kty": "RSA", "n": n}, separators=(",", ":"))
    return _b64(hashlib.sha256(canonical.encode("ascii")).digest())


def _b64_uint(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _find(snapshot: _Snapshot, kid: str) -> dict[str, str] | None:
    return next((jwk for jwk in snapshot.jwks if jwk.get("kid") == kid), None)


def _insert_current(conn: Connection, key: _NewKey) -> None:
    conn.execute(
        insert(SigningKeyRow).values(
            kid=key.kid,
            private_pem=key.private_pem,
            public_jwk=key.public_jwk,
            create_time=datetime.now(UTC).replace(tzinfo=None),
            state=CURRENT,
        )
    )


def _lock_keys(conn: Connection) -> None:
    # SQLite: the engine's BEGIN IMMEDIATE already holds the database write lock.
    # PostgreSQL: a self-conflicting lock makes concurrent creators and rotators queue.
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
