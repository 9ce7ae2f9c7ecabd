"""booking-svc wiring: configuration, storage and seed data, clients, the servicer."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter

from airline.booking.v1 import booking_pb2, booking_pb2_grpc
from services.booking_svc.accounts import DEFAULT_TTL_SECONDS, LiveAccounts
from services.booking_svc.risks import RiskPrecomputer
from services.booking_svc.seed import seed_flights
from services.booking_svc.servicer import BookingServicer
from services.booking_svc.store import BookingStore
from services.runtime.authn import verifier_for
from services.runtime.clients import client_metrics
from services.runtime.config import (
    ServerConfig,
    database_url,
    env_float,
    env_int,
    upstream_addr,
)
from services.runtime.db import make_engine, service_secret
from services.runtime.identity import CredentialSource
from services.runtime.pagination import PageTokens
from services.runtime.server import ServiceDefinition, releasing
from services.runtime.upstreams import AuthClient, PredictClient, UserClient

SERVICE_NAME = "booking-svc"
SERVICE = booking_pb2.DESCRIPTOR.services_by_name["BookingService"].full_name
BATCH_PREDICT_SECONDS = 10.0


@dataclass(frozen=True)
class BookingConfig:
    database_url: str
    auth_addr: str
    user_addr: str
    predict_addr: str
    # Days of the real 2013 schedule seeded into the coming weeks on first start.
    seed_days: int = 14
    # The most a booking waits for its optional delay risk.
    predict_timeout_seconds: float = 0.3
    # How often upcoming flights' stored delay risks are checked against the model
    # (0: never; bookings then ask predict-svc each time).
    risk_refresh_seconds: float = 60.0
    # How long CreateBooking may trust a positive live-account answer from user-svc: a
    # deleted or deactivated account can still book for at most this long. 0 (the
    # default, what the contract promises): ask every time. Other methods always ask.
    live_account_cache_seconds: float = DEFAULT_TTL_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BookingConfig:
        env = os.environ if env is None else env
        return cls(
            database_url=database_url(env, SERVICE_NAME),
            auth_addr=upstream_addr(env, "AUTH_SVC_ADDR"),
            user_addr=upstream_addr(env, "USER_SVC_ADDR"),
            predict_addr=upstream_addr(env, "PREDICT_SVC_ADDR"),
            seed_days=env_int(env, "BOOKING_SEED_DAYS", 14),
            predict_timeout_seconds=env_float(env, "PREDICT_TIMEOUT_SECONDS", 0.3),
            risk_refresh_seconds=env_float(env, "RISK_REFRESH_SECONDS", 60.0),
            live_account_cache_seconds=env_float(
                env, "LIVE_ACCOUNT_CACHE_SECONDS", DEFAULT_TTL_SECONDS
            ),
        )


def build(
    config: ServerConfig,
    registry: CollectorRegistry,
    settings: BookingConfig,
    *,
    identity: CredentialSource | None = None,
) -> ServiceDefinition:
    metrics = client_metrics(registry)
    engine = make_engine(settings.database_url)
    store = BookingStore(engine)
    store.create_schema()
    if settings.seed_days:
        store.seed_if_empty(lambda: seed_flights(datetime.now(UTC).date(), settings.seed_days))
    auth = AuthClient(settings.auth_addr, metrics, identity=identity)
    users = UserClient(settings.user_addr, metrics, identity=identity)
    predictions = PredictClient(
        settings.predict_addr,
        metrics,
        timeout=settings.predict_timeout_seconds,
        identity=identity,
    )
    risk_sources = Counter(
        "booking_delay_risk",
        "Bookings by where their delay risk came from: stored with the flight, asked of "
        "predict-svc, or absent (predict-svc could not answer in time)",
        ["source"],
        registry=registry,
    )
    servicer = BookingServicer(
        store,
        PageTokens(service_secret(engine, "page_tokens")),
        users,
        predictions,
        risk_sources,
        LiveAccounts(users.active, ttl_seconds=settings.live_account_cache_seconds),
    )
    # Batches of risks take longer than one booking may wait: a channel of their own.
    batch_predictions = PredictClient(
        settings.predict_addr, metrics, timeout=BATCH_PREDICT_SECONDS, identity=identity
    )
    risks = RiskPrecomputer(
        store, batch_predictions, interval_seconds=settings.risk_refresh_seconds
    )
    if settings.risk_refresh_seconds > 0:
        risks.start()
    close = releasing(
        engine, auth.channel, users.channel, predictions.channel, batch_predictions.channel
    )

    def stop() -> None:
        risks.stop()
        close()

    return ServiceDefinition(
        service_names=[SERVICE],
        add_to_server=lambda s: booking_pb2_grpc.add_BookingServiceServicer_to_server(servicer, s),
        checks={"database": store.ping},
        verifier=verifier_for(config.jwt_issuer, config.jwt_audience, auth.jwks),
        close=stop,
    )
