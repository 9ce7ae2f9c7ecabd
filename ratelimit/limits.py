"""Limits and what a count means: the rules, with no Redis and no gRPC.

A limit allows `requests` per `window_seconds` for one descriptor (a route's name
and the client address). Counting happens in Redis (ratelimit/store.py); this module
reads the limits file and turns a window's counts into remaining calls and the time
until the next call fits.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from services.runtime.config import ConfigError, env_int


class Algorithm(Enum):
    # Counts reset when a window of wall-clock time (Redis's clock) ends.
    FIXED = "fixed"
    # The previous window's count, weighted by how much of it still overlaps the
    # last `window_seconds`, plus the current one: no burst of twice the limit
    # across a window's edge.
    SLIDING = "sliding"


@dataclass(frozen=True)
class Limit:
    name: str
    requests: int
    window_seconds: int
    algorithm: Algorithm = Algorithm.FIXED


@dataclass(frozen=True)
class Limits:
    """Every limit of one rate limit domain, by name."""

    domain: str
    by_name: Mapping[str, Limit]


def load(path: Path, env: Mapping[str, str]) -> Limits:
    """The limits in the TOML file at `path`, with the environment's overrides."""
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"limits file {path}: {err}") from None
    return parse(document, env, str(path))


def parse(document: Mapping[str, object], env: Mapping[str, str], source: str) -> Limits:
    domain = document.get("domain")
    tables = document.get("limits", {})
    if not isinstance(domain, str) or not domain:
        raise ConfigError(f"{source}: `domain` must be a non-empty string")
    if not isinstance(tables, dict):
        raise ConfigError(f"{source}: `limits` must be a table of tables")
    by_name = {name: _limit(name, table, env, source) for name, table in tables.items()}
    return Limits(domain, by_name)


def _limit(name: str, table: object, env: Mapping[str, str], source: str) -> Limit:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: limits.{name} must be a table")
    requests, window = table.get("requests"), table.get("window_seconds")
    if not isinstance(requests, int) or requests < 1:
        raise ConfigError(f"{source}: limits.{name}.requests must be a whole number >= 1")
    if not isinstance(window, int) or window < 1:
        raise ConfigError(f"{source}: limits.{name}.window_seconds must be a whole number >= 1")
    try:
        algorithm = Algorithm(table.get("algorithm", "fixed"))
    except ValueError:
        raise ConfigError(f"{source}: limits.{name}.algorithm must be fixed or sliding") from None
    prefix = table.get("env")
    if isinstance(prefix, str) and prefix:
        requests = env_int(env, f"{prefix}_LIMIT", requests, minimum=1)
        window = env_int(env, f"{prefix}_WINDOW_SECONDS", window, minimum=1)
    return Limit(name, requests, window, algorithm)


@dataclass(frozen=True)
class Counts:
    """What Redis reports for one descriptor at one instant (its own clock)."""

    allowed: bool
    previous: int  # hits in the window before the current one (sliding only)
    current: int  # hits in the current window, this call's included when allowed
    elapsed_ms: int  # how far into the current window the call came


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int
    reset_seconds: int  # until the window resets, or (when refused) until a call fits


def decide(limit: Limit, counts: Counts) -> Decision:
    """The answer for `counts`: remaining calls and when the count resets or frees up."""
    window_ms = limit.window_seconds * 1000
    to_window_end = window_ms - counts.elapsed_ms
    if limit.algorithm is Algorithm.FIXED:
        remaining = limit.requests - counts.current
        return Decision(counts.allowed, max(0, remaining), _seconds(to_window_end))
    overlap = (window_ms - counts.elapsed_ms) / window_ms
    estimate = counts.previous * overlap + counts.current
    remaining = max(0, math.floor(limit.requests - estimate))
    if remaining > 0 and counts.allowed:
        return Decision(True, remaining, _seconds(to_window_end))
    return Decision(counts.allowed, remaining, _seconds(_until_one_fits(limit, counts)))


def _until_one_fits(limit: Limit, counts: Counts) -> float:
    """Milliseconds until the sliding estimate leaves room for one more call."""
    window_ms = limit.window_seconds * 1000
    room = limit.requests - 1
    if counts.current <= room:
        # The previous window's weight falls until prev * (1 - e/W) + cur <= room.
        if counts.previous == 0:
            return 0.0
        fits_at = window_ms * (1 - (room - counts.current) / counts.previous)
        return max(0.0, fits_at - counts.elapsed_ms)
    # The current window alone is full: it becomes the previous one first.
    fits_at = window_ms * (1 - room / counts.current)
    return window_ms - counts.elapsed_ms + fits_at


def _seconds(ms: float) -> int:
    """Whole seconds, rounded up, at least one: what Retry-After and reset headers carry."""
    return max(1, math.ceil(ms / 1000))
