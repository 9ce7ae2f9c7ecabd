"""predict-svc wiring: configuration, storage, the model, and the servicer."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from airline.predict.v1 import predict_pb2, predict_pb2_grpc
from services.predict_svc.servicer import PredictionServicer
from services.predict_svc.store import ModelStore
from services.predict_svc.training import load_or_train
from services.runtime.authn import verifier_for
from services.runtime.clients import client_metrics
from services.runtime.config import ServerConfig, database_url, env_int, upstream_addr
from services.runtime.db import make_engine, ping, service_secret
from services.runtime.identity import CredentialSource
from services.runtime.pagination import PageTokens
from services.runtime.server import ServiceDefinition, releasing
from services.runtime.upstreams import AuthClient, UserClient

SERVICE_NAME = "predict-svc"
SERVICE = predict_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name


@dataclass(frozen=True)
class PredictConfig:
    database_url: str
    auth_addr: str
    # user-svc: whether the caller's account still exists and is active.
    user_addr: str
    # Flights to train on when no artifact is stored; 0 means all of them.
    train_rows: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PredictConfig:
        env = os.environ if env is None else env
        return cls(
            database_url=database_url(env, SERVICE_NAME),
            auth_addr=upstream_addr(env, "AUTH_SVC_ADDR"),
            user_addr=upstream_addr(env, "USER_SVC_ADDR"),
            train_rows=env_int(env, "PREDICT_TRAIN_ROWS", 0),
        )


def build(
    config: ServerConfig,
    registry: CollectorRegistry,
    settings: PredictConfig,
    *,
    identity: CredentialSource | None = None,
) -> ServiceDefinition:
    metrics = client_metrics(registry)
    engine = make_engine(settings.database_url)
    store = ModelStore(engine)
    store.create_schema()
    model = load_or_train(store, settings.train_rows or None)
    auth = AuthClient(settings.auth_addr, metrics, identity=identity)
    users = UserClient(settings.user_addr, metrics, identity=identity)
    servicer = PredictionServicer(
        {model.model_id: model}, PageTokens(service_secret(engine, "page_tokens")), users.active
    )

    return ServiceDefinition(
        service_names=[SERVICE],
        add_to_server=lambda s: predict_pb2_grpc.add_PredictionServiceServicer_to_server(
            servicer, s
        ),
        checks={"database": lambda: ping(engine)},
        verifier=verifier_for(config.jwt_issuer, config.jwt_audience, auth.jwks),
        close=releasing(engine, auth.channel, users.channel),
    )
