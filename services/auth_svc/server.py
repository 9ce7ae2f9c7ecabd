"""auth-svc wiring: configuration, signing keys, refresh tokens, user-svc, the servicer."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from airline.auth.v1 import auth_pb2, auth_pb2_grpc
from services.auth_svc.keys import KeyRing
from services.auth_svc.servicer import AuthServicer
from services.auth_svc.tokens import RefreshTokenStore
from services.runtime.authn import verifier_for
from services.runtime.clients import client_metrics
from services.runtime.config import ServerConfig, database_url, upstream_addr
from services.runtime.db import make_engine, ping
from services.runtime.identity import CredentialSource
from services.runtime.server import ServiceDefinition, releasing
from services.runtime.upstreams import UserClient

SERVICE_NAME = "auth-svc"
SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name


@dataclass(frozen=True)
class AuthConfig:
    database_url: str
    user_addr: str
    # Encrypts the signing keys at rest when set (SIGNING_KEY_PASSPHRASE).
    signing_key_passphrase: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AuthConfig:
        env = os.environ if env is None else env
        return cls(
            database_url=database_url(env, SERVICE_NAME),
            user_addr=upstream_addr(env, "USER_SVC_ADDR"),
            signing_key_passphrase=env.get("SIGNING_KEY_PASSPHRASE", "").encode() or None,
        )


def build(
    config: ServerConfig,
    registry: CollectorRegistry,
    settings: AuthConfig,
    *,
    identity: CredentialSource | None = None,
) -> ServiceDefinition:
    metrics = client_metrics(registry)
    engine = make_engine(settings.database_url)
    keys = KeyRing(engine, passphrase=settings.signing_key_passphrase)
    keys.create_schema()
    keys.ensure_key()
    refresh_tokens = RefreshTokenStore(engine)
    refresh_tokens.create_schema()
    users = UserClient(settings.user_addr, metrics, identity=identity)
    servicer = AuthServicer(
        keys, refresh_tokens, users, issuer=config.jwt_issuer, audience=config.jwt_audience
    )

    return ServiceDefinition(
        service_names=[SERVICE],
        add_to_server=lambda s: auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, s),
        checks={"database": lambda: ping(engine), "signing key": lambda: _has_key(keys)},
        # auth-svc verifies tokens with its own keys, read from its database.
        verifier=verifier_for(config.jwt_issuer, config.jwt_audience, keys.jwks),
        close=releasing(engine, users.channel),
    )


def _has_key(keys: KeyRing) -> None:
    keys.current()
