"""The models table on a real SQLite file, and bringing up the served model."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from services.predict_svc.model import MODEL_ID, TrainedModel
from services.predict_svc.store import ModelRow, ModelStore
from services.predict_svc.training import load_or_train
from services.runtime.db import make_engine
from tests.predict_svc.conftest import TEST_ROWS


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    found = make_engine(f"sqlite:///{tmp_path / 'predict.db'}")
    yield found
    found.dispose()


@pytest.fixture
def store(engine: Engine) -> ModelStore:
    found = ModelStore(engine)
    found.create_schema()
    return found


def test_empty_store_has_no_latest_model(store: ModelStore) -> None:
    assert store.latest(MODEL_ID) is None


def test_saved_model_is_the_latest(store: ModelStore, trained_model: TrainedModel) -> None:
    store.save(trained_model)
    loaded = store.latest(MODEL_ID)
    assert loaded is not None
    assert (loaded.version, loaded.metrics, loaded.create_time) == (
        trained_model.version,
        trained_model.metrics,
        trained_model.create_time,
    )


def test_saving_the_same_version_twice_keeps_one_row(
    engine: Engine, store: ModelStore, trained_model: TrainedModel
) -> None:
    store.save(trained_model)
    store.save(trained_model)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ModelRow)).scalar_one() == 1


def test_create_schema_twice_is_harmless(store: ModelStore) -> None:
    store.create_schema()
    assert store.latest(MODEL_ID) is None


def test_latest_is_the_most_recently_trained_version(
    store: ModelStore, trained_model: TrainedModel
) -> None:
    newer = dataclasses.replace(
        trained_model, version="1.newer", create_time=trained_model.create_time + timedelta(1)
    )
    store.save(newer)
    store.save(trained_model)
    loaded = store.latest(MODEL_ID)
    assert loaded is not None
    assert loaded.version == "1.newer"


def test_get_finds_a_version_and_misses_others(
    store: ModelStore, trained_model: TrainedModel
) -> None:
    store.save(trained_model)
    assert store.get(MODEL_ID, trained_model.version) is not None
    assert store.get(MODEL_ID, "1.other") is None


def test_load_or_train_serves_the_stored_artifact(
    store: ModelStore, trained_model: TrainedModel
) -> None:
    """A model already in the database is loaded, not retrained."""
    store.save(trained_model)
    loaded = load_or_train(store, max_rows=TEST_ROWS)
    assert loaded.create_time == trained_model.create_time


@pytest.mark.slow
def test_load_or_train_trains_and_saves_on_a_fresh_database(store: ModelStore) -> None:
    loaded = load_or_train(store, max_rows=3000)
    assert store.latest(MODEL_ID) is not None
    assert load_or_train(store, max_rows=3000).create_time == loaded.create_time


def test_two_instances_saving_at_once_keep_one_row(
    tmp_path: Path, engine: Engine, store: ModelStore, trained_model: TrainedModel
) -> None:
    """Two instances on a fresh database both train and save the same version."""
    other = make_engine(f"sqlite:///{tmp_path / 'predict.db'}")
    stores = [store, ModelStore(other)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        for done in [pool.submit(s.save, trained_model) for s in stores]:
            done.result(timeout=30)
    other.dispose()
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ModelRow)).scalar_one() == 1


@pytest.mark.slow
def test_training_on_a_fresh_database_leaves_sklearn_out_of_the_serving_process(
    tmp_path: Path,
) -> None:
    """Training happens in a child process; the server keeps only the model's arrays."""
    check = (
        "import sys; from services.predict_svc.store import ModelStore; "
        "from services.predict_svc.training import load_or_train; "
        "from services.runtime.db import make_engine; "
        f"store = ModelStore(make_engine('sqlite:///{tmp_path / 'fresh.db'}')); "
        "store.create_schema(); model = load_or_train(store, max_rows=3000); "
        "print(model.metrics['train_rows'], 'pandas' in sys.modules, 'sklearn' in sys.modules)"
    )
    found = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=300
    )
    assert found.stdout.split() == ["2400.0", "False", "False"]
