"""The limit on guessing passwords through VerifyPassword: failed checks counted per
calling identity and email, and per calling identity overall, in user-svc's own
database, so every instance sees the same counts (no state only one instance holds).

Counts are kept per fixed window. A check is counted as a failure before bcrypt runs,
in one transaction that also refuses it when a count would pass its limit, so
concurrent guesses on several instances cannot slip past the limit together; a check
that then succeeds gives its count back. An unknown email counts exactly like a known
one and is refused the same way: the limit reveals nothing about which accounts exist.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import BigInteger, Connection, Engine, Integer, String, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.runtime.db import create_tables
from services.runtime.errors import ResourceExhausted
from services.user_svc.domain import normalise_email

# The subject of a caller's overall count; email subjects are 64 hex digits.
ALL_EMAILS = "*"
# The caller of a server without mutual TLS (a service run alone in development).
NO_IDENTITY = ""


@dataclass(frozen=True)
class GuessLimits:
    """At most `per_email` failed checks per (caller, email) and `per_caller` per caller
    in each window of `window_seconds`."""

    per_email: int = 10
    per_caller: int = 1000
    window_seconds: int = 900


class TooManyFailedChecks(ResourceExhausted):
    """The caller used up its failed checks for this window; the same for every email."""

    reason = "TOO_MANY_FAILED_CHECKS"

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(
            "too many failed password checks; retry later",
            metadata={"retry_after_seconds": str(retry_after_seconds)},
        )
        self.retry_after_seconds = retry_after_seconds


class _Base(DeclarativeBase):
    pass


class FailedChecks(_Base):
    """Failed checks of one caller on one subject (an email's hash, or `*`) in one window."""

    __tablename__ = "password_check_failures"

    caller: Mapped[str] = mapped_column(String(128), primary_key=True)
    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True, index=True)
    failures: Mapped[int] = mapped_column(Integer)


@dataclass(frozen=True)
class Admission:
    """A check let through and counted as a failure until `GuessCounter.give_back`."""

    caller: str
    subject: str
    window_start: int


def email_subject(email: str) -> str:
    """The key an email is counted under: its normalised form's SHA-256, so the table
    holds no address that was merely guessed at."""
    return hashlib.sha256(normalise_email(email).encode()).hexdigest()


class GuessCounter:
    """Admits password checks within the limits; shared by all instances through the database."""

    def __init__(
        self, engine: Engine, limits: GuessLimits, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._engine = engine
        self._limits = limits
        self._clock = clock

    def create_schema(self) -> None:
        create_tables(self._engine, _Base.metadata)

    def admit(self, caller: str | None, email: str) -> Admission:
        """Counts one more failed check for `caller` and `email`, or refuses it.

        TooManyFailedChecks when either count would pass its limit; a refused check is
        not counted (its transaction is rolled back).
        """
        now = self._clock()
        window = self._limits.window_seconds
        start = int(now // window) * window
        admission = Admission(caller or NO_IDENTITY, email_subject(email), start)
        retry_after = max(1, math.ceil(start + window - now))
        with self._engine.begin() as conn:
            # Old windows are never read again; the window_start index keeps this cheap.
            conn.execute(delete(FailedChecks).where(FailedChecks.window_start < start))
            per_email = _count_one_more(conn, admission.caller, admission.subject, start)
            overall = _count_one_more(conn, admission.caller, ALL_EMAILS, start)
            if per_email > self._limits.per_email or overall > self._limits.per_caller:
                raise TooManyFailedChecks(retry_after)  # leaving the block rolls back
        return admission

    def give_back(self, admission: Admission) -> None:
        """Takes back the failure `admit` counted: the password was right, or never checked."""
        with self._engine.begin() as conn:
            for subject in (admission.subject, ALL_EMAILS):
                conn.execute(
                    update(FailedChecks)
                    .where(
                        FailedChecks.caller == admission.caller,
                        FailedChecks.subject == subject,
                        FailedChecks.window_start == admission.window_start,
                        FailedChecks.failures > 0,
                    )
                    .values(failures=FailedChecks.failures - 1)
                )


def _count_one_more(conn: Connection, caller: str, subject: str, start: int) -> int:
    """Adds one to a count (creating it at 1) and returns it.

    An upsert: on PostgreSQL its row lock makes concurrent callers on the same count
    wait for each other's commit; on SQLite the transaction holds the write lock.
    """
    values = {"caller": caller, "subject": subject, "window_start": start, "failures": 1}
    keys = ["caller", "subject", "window_start"]
    one_more = {"failures": FailedChecks.failures + 1}
    if conn.dialect.name == "postgresql":
        pg = postgresql.insert(FailedChecks).values(values)
        conn.execute(pg.on_conflict_do_update(index_elements=keys, set_=one_more))
    else:
        lite = sqlite.insert(FailedChecks).values(values)
        conn.execute(lite.on_conflict_do_update(index_elements=keys, set_=one_more))
    key = (
        FailedChecks.caller == caller,
        FailedChecks.subject == subject,
        FailedChecks.window_start == start,
    )
    return int(conn.execute(select(FailedChecks.failures).where(*key)).scalar_one())
