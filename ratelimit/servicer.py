"""envoy.service.ratelimit.v3.RateLimitService: Envoy's question, Redis's count, one answer.

A descriptor is limited when its `generic_key` names a limit of the configured domain;
the rest of its entries (the client address) say whose count it is. Descriptors of
another domain, or naming no limit, are answered OK without a count: the edge may ask
about every route, and only the limits file decides which are limited.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeAlias

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf import duration_pb2

from ratelimit.limits import Decision, Limit, Limits, decide
from ratelimit.store import Counter, Unreachable
from services.runtime.errors import Unavailable

Response = rls_pb2.RateLimitResponse
# xds-protos ships no type stubs: its messages are Any to mypy.
Message: TypeAlias = Any
NAME_KEY = "generic_key"
# The quota policy Envoy's x-ratelimit-limit names (`10, 10;w=60`) has these units;
# another window is answered without one (Envoy then states the limit alone).
UNITS = {
    1: Response.RateLimit.SECOND,
    60: Response.RateLimit.MINUTE,
    3600: Response.RateLimit.HOUR,
    86400: Response.RateLimit.DAY,
}


class RateLimitServicer(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    def __init__(self, limits: Limits, counter: Counter) -> None:
        self._limits = limits
        self._counter = counter

    def ShouldRateLimit(self, request: Message, context: grpc.ServicerContext) -> Message:
        hits = request.hits_addend or 1
        statuses = [self._status(request.domain, d, hits) for d in request.descriptors]
        over = [s for s in statuses if s.code == Response.OVER_LIMIT]
        response = Response(
            overall_code=Response.OVER_LIMIT if over else Response.OK, statuses=statuses
        )
        if over:
            wait = max(s.duration_until_reset.seconds for s in over)
            response.response_headers_to_add.add(key="retry-after", value=str(wait))
        return response

    def _status(self, domain: str, descriptor: Message, hits: int) -> Message:
        limit = self._limit_for(domain, descriptor.entries)
        if limit is None:
            return Response.DescriptorStatus(code=Response.OK)
        subject = "|".join(f"{e.key}={e.value}" for e in descriptor.entries if e.key != NAME_KEY)
        try:
            counts = self._counter.hit(domain, subject, limit, hits)
        except Unreachable:
            # Envoy treats an error as "the service failed" and applies its failure
            # mode: closed for sign-in and sign-up, open for everything else.
            raise Unavailable("the rate limit store is unreachable") from None
        return _status(limit, decide(limit, counts))

    def _limit_for(self, domain: str, entries: Iterable[Message]) -> Limit | None:
        if domain != self._limits.domain:
            return None
        names = [e.value for e in entries if e.key == NAME_KEY]
        return self._limits.by_name.get(names[0]) if names else None


def _status(limit: Limit, decision: Decision) -> Message:
    return Response.DescriptorStatus(
        code=Response.OK if decision.allowed else Response.OVER_LIMIT,
        current_limit=Response.RateLimit(
            name=limit.name,
            requests_per_unit=limit.requests,
            unit=UNITS.get(limit.window_seconds, Response.RateLimit.UNKNOWN),
        ),
        limit_remaining=decision.remaining,
        duration_until_reset=duration_pb2.Duration(seconds=decision.reset_seconds),
    )
