"""user-svc wiring: configuration, storage, password hashing, and the servicers."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from grpc import Server as GrpcServer
from prometheus_client import CollectorRegistry

from airline.user.v1 import user_internal_pb2, user_internal_pb2_grpc, user_pb2, user_pb2_grpc
from services.runtime.authn import verifier_for
from services.runtime.clients import client_metrics
from services.runtime.config import ServerConfig, database_url, env_int, upstream_addr
from services.runtime.cpu import CpuLimiter
from services.runtime.db import make_engine, ping, service_secret
from services.runtime.identity import CredentialSource
from services.runtime.pagination import PageTokens
from services.runtime.server import ServiceDefinition, releasing
from services.runtime.upstreams import AuthClient
from services.user_svc.attempts import GuessCounter, GuessLimits
from services.user_svc.domain import DEFAULT_BCRYPT_COST, PasswordHasher
from services.user_svc.servicer import UserInternalServicer, UserServicer
from services.user_svc.store import UserStore

SERVICE_NAME = "user-svc"
SERVICE = user_pb2.DESCRIPTOR.services_by_name["UserService"].full_name
INTERNAL_SERVICE = user_internal_pb2.DESCRIPTOR.services_by_name["UserInternalService"].full_name


@dataclass(frozen=True)
class UserConfig:
    database_url: str
    auth_addr: str
    bcrypt_cost: int = DEFAULT_BCRYPT_COST
    guesses: GuessLimits = field(default_factory=GuessLimits)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> UserConfig:
        env = os.environ if env is None else env
        return cls(
            database_url=database_url(env, SERVICE_NAME),
            auth_addr=upstream_addr(env, "AUTH_SVC_ADDR"),
            bcrypt_cost=env_int(env, "BCRYPT_COST", DEFAULT_BCRYPT_COST, minimum=4),
            guesses=GuessLimits(
                per_email=env_int(env, "VERIFY_FAILURES_PER_EMAIL", 10, minimum=1),
                per_caller=env_int(env, "VERIFY_FAILURES_PER_CALLER", 1000, minimum=1),
                window_seconds=env_int(env, "VERIFY_FAILURE_WINDOW_SECONDS", 900, minimum=1),
            ),
        )


def build(
    config: ServerConfig,
    registry: CollectorRegistry,
    settings: UserConfig,
    *,
    identity: CredentialSource | None = None,
) -> ServiceDefinition:
    metrics = client_metrics(registry)
    engine = make_engine(settings.database_url)
    store = UserStore(engine)
    store.create_schema()
    hasher = PasswordHasher(settings.bcrypt_cost)
    _ = hasher.dummy_hash  # made now, so the first unknown-email login costs no extra
    cpu = CpuLimiter(
        config.cpu_slots, config.cpu_queue, max_wait_seconds=config.cpu_max_wait_seconds
    )
    public = UserServicer(store, hasher, cpu, PageTokens(service_secret(engine, "page_tokens")))
    guesses = GuessCounter(engine, settings.guesses)
    guesses.create_schema()
    internal = UserInternalServicer(store, hasher, cpu, guesses)
    auth = AuthClient(settings.auth_addr, metrics, identity=identity)

    def add(server: GrpcServer) -> None:
        user_pb2_grpc.add_UserServiceServicer_to_server(public, server)
        user_internal_pb2_grpc.add_UserInternalServiceServicer_to_server(internal, server)

    return ServiceDefinition(
        service_names=[SERVICE, INTERNAL_SERVICE],
        add_to_server=add,
        checks={"database": lambda: ping(engine)},
        verifier=verifier_for(config.jwt_issuer, config.jwt_audience, auth.jwks),
        close=releasing(engine, auth.channel),
    )
