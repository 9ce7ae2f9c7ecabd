"""Rate limit service wiring: configuration, the limits file, Redis, the servicer.

It runs on the shared service runtime (health, reflection, metrics, logs, graceful
stop), like the airline's own services, and is a workload of the mesh like them: its
certificate (identity `ratelimit`) comes from the mesh CA, it serves mutual TLS only
and answers each method only to the callers mesh/policy.toml names (the edge, for
ShouldRateLimit). docs/trust.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from prometheus_client import CollectorRegistry

from ratelimit import limits, store
from ratelimit.servicer import RateLimitServicer
from services.runtime.config import ServerConfig, env_float, env_str
from services.runtime.identity import CredentialSource
from services.runtime.server import ServiceDefinition

SERVICE_NAME = "ratelimit"
SERVICE = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name
LIMITS_FILE = Path(__file__).resolve().parent / "limits.toml"


@dataclass(frozen=True)
class RateLimitConfig:
    redis_url: str
    limits: limits.Limits
    # Each Redis call's limit: well under the edge's timeout for asking this service,
    # so that a stalled Redis is an error Envoy sees, not a timeout it waits out.
    redis_timeout_seconds: float = 0.25

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RateLimitConfig:
        env = os.environ if env is None else env
        path = Path(env_str(env, "RATELIMIT_LIMITS_FILE", str(LIMITS_FILE)))
        return cls(
            redis_url=env_str(env, "REDIS_URL", "redis://127.0.0.1:6379/0"),
            limits=limits.load(path, env),
            redis_timeout_seconds=env_float(env, "REDIS_TIMEOUT_SECONDS", 0.25),
        )


def build(
    config: ServerConfig,
    registry: CollectorRegistry,
    settings: RateLimitConfig,
    *,
    identity: CredentialSource | None = None,
) -> ServiceDefinition:
    """The servicer on Redis. `identity` is the runtime's certificate for outbound
    channels (services.runtime.server.Builder); this service calls no other, so it
    has no use for it: the server's own mutual TLS comes from the runtime."""
    counter = store.Counter(store.connect(settings.redis_url, settings.redis_timeout_seconds))
    servicer = RateLimitServicer(settings.limits, counter)
    return ServiceDefinition(
        service_names=[SERVICE],
        add_to_server=lambda s: rls_pb2_grpc.add_RateLimitServiceServicer_to_server(servicer, s),
        checks={"redis": counter.ping},
        close=counter.close,
    )
