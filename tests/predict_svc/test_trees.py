"""The served arrays against the scikit-learn pipeline they come from, and their limits."""

from __future__ import annotations

import itertools
import pickle
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from services.predict_svc.model import (
    CACHE_SIZE,
    COLUMNS,
    DEADLINE_CHUNK,
    NEW_YORK,
    Instance,
    TrainedModel,
)
from services.runtime.errors import DeadlineExceeded

Fitted = tuple[TrainedModel, Pipeline, pd.DataFrame]
CARRIERS = ["UA", "B6", "EV", "DL", "AA", "MQ", "US", "9E", "WN", "VX", "ZZ", "Q9"]
AIRPORTS = ["EWR", "JFK", "LGA", "BOS"]
DESTINATIONS = ["SFO", "ORD", "ATL", "LAX", "MIA", "DEN", "SEA", "HNL", "XXX", "ANC"]


def many_instances(count: int) -> list[Instance]:
    """Instances over known and unknown carriers and routes, at every hour of a year."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    combos = itertools.cycle(itertools.product(CARRIERS, AIRPORTS, DESTINATIONS))
    return [
        Instance(
            carrier=carrier,
            origin=origin,
            destination=destination,
            scheduled_departure=start + timedelta(minutes=97 * i),
        )
        for i, (carrier, origin, destination) in zip(range(count), combos, strict=False)
    ]


def pipeline_frame(model: TrainedModel, rows: list[Instance]) -> pd.DataFrame:
    """The pipeline's input as the pandas-based predictor built it before the arrays."""
    local = [row["scheduled_departure"].astimezone(NEW_YORK) for row in rows]
    frame = pd.DataFrame(
        {
            "carrier": [row["carrier"] for row in rows],
            "origin": [row["origin"] for row in rows],
            "destination": [row["destination"] for row in rows],
            "month": [when.month for when in local],
            "day_of_week": [when.weekday() for when in local],
            "hour": [when.hour for when in local],
            "distance": [
                model.routes.get((row["origin"], row["destination"]), model.default_distance)
                for row in rows
            ],
        }
    )
    return frame[COLUMNS]


def test_arrays_give_the_pipelines_probabilities_on_many_instances(fitted: Fitted) -> None:
    model, pipeline, _ = fitted
    rows = many_instances(5000)
    expected = pipeline.predict_proba(pipeline_frame(model, rows))[:, 1]
    np.testing.assert_allclose(model.predict_proba(rows), expected, rtol=0, atol=1e-9)


def test_arrays_give_the_pipelines_probabilities_on_the_holdout(fitted: Fitted) -> None:
    model, pipeline, holdout = fitted
    codes = [holdout[name].map(model.codes[name]).astype(float) for name in COLUMNS[:3]]
    x = np.column_stack([*codes, *(holdout[name].to_numpy(float) for name in COLUMNS[3:])])
    expected = pipeline.predict_proba(holdout)[:, 1]
    np.testing.assert_allclose(model.trees.probability(x), expected, rtol=0, atol=1e-9)


def test_remembered_probabilities_equal_fresh_ones(fitted: Fitted) -> None:
    model, _, _ = fitted
    rows = many_instances(3000)
    fresh = TrainedModel.from_bytes(model.to_bytes())
    first = fresh.predict_proba(rows)
    assert 0 < fresh.cached <= len(rows)
    assert np.array_equal(fresh.predict_proba(rows), first)


def test_the_same_flight_is_computed_once(trained_model: TrainedModel) -> None:
    fresh = TrainedModel.from_bytes(trained_model.to_bytes())
    rows = many_instances(1) * 50
    assert len(set(fresh.predict_proba(rows).tolist())) == 1
    assert fresh.cached == 1


def test_the_cache_stays_bounded(trained_model: TrainedModel) -> None:
    """More distinct flights than the cache holds (every instance here is one) empty it."""
    fresh = TrainedModel.from_bytes(trained_model.to_bytes())
    fresh.predict_proba(many_instances(CACHE_SIZE + 2 * DEADLINE_CHUNK))
    # Emptied once full: only the instances after that are remembered.
    assert 0 < fresh.cached < CACHE_SIZE // 2


def test_trees_split_on_categories(trained_model: TrainedModel) -> None:
    """The equality tests above cover categorical splits only if the trees make some."""
    assert trained_model.trees.is_categorical.any()


def test_bytes_round_trip_keeps_every_probability(trained_model: TrainedModel) -> None:
    rows = many_instances(500)
    loaded = TrainedModel.from_bytes(trained_model.to_bytes())
    assert np.array_equal(loaded.predict_proba(rows), trained_model.predict_proba(rows))
    assert loaded.routes == trained_model.routes
    assert loaded.codes == trained_model.codes


def test_a_pickle_is_refused_as_an_artifact(trained_model: TrainedModel) -> None:
    with pytest.raises(ValueError, match="not a flight-delay array artifact"):
        TrainedModel.from_bytes(pickle.dumps({"version": trained_model.version}))


def test_no_work_is_done_for_a_caller_whose_deadline_has_passed(
    trained_model: TrainedModel,
) -> None:
    looked: list[int] = []

    def gone() -> float:
        looked.append(1)
        return 0.0

    with pytest.raises(DeadlineExceeded):
        trained_model.predict_proba(many_instances(DEADLINE_CHUNK * 5), time_left=gone)
    assert len(looked) == 1


def test_a_deadline_passing_midway_abandons_the_remaining_rows(
    trained_model: TrainedModel,
) -> None:
    """The deadline is read before every chunk; the first chunk that finds it gone stops."""
    remaining = iter([1.0, 1.0, 0.0, 1.0])
    looked: list[float] = []

    def time_left() -> float:
        looked.append(next(remaining))
        return looked[-1]

    with pytest.raises(DeadlineExceeded):
        trained_model.predict_proba(many_instances(DEADLINE_CHUNK * 5), time_left=time_left)
    assert looked == [1.0, 1.0, 0.0]


def test_time_left_is_enough_for_every_row(trained_model: TrainedModel) -> None:
    rows = many_instances(DEADLINE_CHUNK * 3 + 1)
    with_deadline = trained_model.predict_proba(rows, time_left=lambda: 5.0)
    assert np.array_equal(with_deadline, trained_model.predict_proba(rows))


def test_serving_predict_svc_imports_neither_pandas_nor_sklearn() -> None:
    """Wiring predict-svc up loads only the arrays' dependencies (idle memory)."""
    check = (
        "import sys, services.predict_svc.server, services.predict_svc.servicer; "
        "print(sorted(m for m in ('pandas', 'sklearn', 'scipy', 'joblib') if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=60
    )
    assert found.stdout.strip() == "[]"
