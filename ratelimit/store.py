"""Counting in Redis: one atomic script call per descriptor (ratelimit/*.lua).

The scripts decide and count in one step, on Redis's clock, so any number of rate
limit service instances (and edges) share one count per descriptor. Keys carry a
hash tag ({...}) so that a descriptor's windows stay in one slot of a Redis cluster.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from ratelimit.limits import Algorithm, Counts, Limit

KEY_PREFIX = "ratelimit"


class Unreachable(Exception):
    """Redis did not answer in time or refused the connection."""


class Counter:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._scripts = {
            algorithm: client.register_script(
                resources.files("ratelimit").joinpath(f"{algorithm.value}_window.lua").read_text()
            )
            for algorithm in Algorithm
        }

    def hit(self, domain: str, subject: str, limit: Limit, hits: int) -> Counts:
        """Counts `hits` for `subject` under `limit` if they fit; what Redis then holds."""
        key = f"{KEY_PREFIX}:{domain}:{{{limit.name}|{subject}}}"
        try:
            result = self._scripts[limit.algorithm](
                keys=[key], args=[limit.requests, limit.window_seconds, hits]
            )
        except redis.RedisError as err:
            raise Unreachable(type(err).__name__) from err
        allowed, previous, current, elapsed_ms = (int(v) for v in result)
        return Counts(bool(allowed), previous, current, elapsed_ms)

    def ping(self) -> None:
        """Raises when Redis does not answer (the health check)."""
        self._client.ping()

    def close(self) -> None:
        self._client.close()


def connect(url: str, timeout_seconds: float) -> redis.Redis:
    """A client (with its own connection pool) whose every call ends within the timeout.

    A `password_file=PATH` query parameter names a file holding the password (as
    libpq's passfile): the password is then in no URL, environment or log line.
    `rediss://` URLs speak TLS, with redis-py's `ssl_*` parameters (the CA to trust).
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    files = [value for key, value in query if key == "password_file"]
    rest = urlunsplit(
        parts._replace(query=urlencode([(k, v) for k, v in query if k != "password_file"]))
    )
    password = Path(files[-1]).read_text().strip() if files else None
    return redis.Redis.from_url(
        rest,
        password=password,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
    )
