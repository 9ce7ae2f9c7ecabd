"""predict-svc instances starting together on one database: one trains, all serve its model."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial

import pytest

from airline.predict.v1 import predict_pb2, predict_pb2_grpc
from services.predict_svc import server as predict_server
from services.predict_svc import training
from services.predict_svc.model import TrainedModel
from tests.conftest import channel_to, make_config, serving
from tests.instances import started_together
from tests.predict_svc.conftest import TEST_ROWS

# Never dialled: listing models needs no other service.
UNUSED_ADDR = "127.0.0.1:1"
INSTANCES = 3


@pytest.fixture
def trainings(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """Counts real trainings: every call of `train_apart` from `load_or_train` is recorded."""
    calls: list[int | None] = []
    lock = threading.Lock()
    real: Callable[..., TrainedModel] = training.train_apart

    def counted(max_rows: int | None, seed: int = 13) -> TrainedModel:
        with lock:
            calls.append(max_rows)
        return real(max_rows, seed)

    monkeypatch.setattr(training, "train_apart", counted)
    return calls


def test_instances_starting_together_train_once_and_serve_one_version(
    database_url: str, trainings: list[int | None]
) -> None:
    settings = predict_server.PredictConfig(
        database_url, UNUSED_ADDR, UNUSED_ADDR, train_rows=TEST_ROWS
    )
    launches = [
        serving(make_config("predict-svc"), partial(predict_server.build, settings=settings))
        for _ in range(INSTANCES)
    ]
    with started_together(*launches) as servers:
        served = []
        for server in servers:
            with channel_to(server) as channel:
                stub = predict_pb2_grpc.PredictionServiceStub(channel)
                served.append(stub.ListModels(predict_pb2.ListModelsRequest(), timeout=10))
    assert trainings == [TEST_ROWS]
    assert all(response == served[0] for response in served)
    assert served[0].models[0].version
