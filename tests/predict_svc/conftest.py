"""Fixtures for predict-svc tests: one small model, trained once per session."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from services.predict_svc.fitting import fit
from services.predict_svc.model import TrainedModel

TEST_ROWS = 20_000


@pytest.fixture(scope="session")
def fitted() -> tuple[TrainedModel, Pipeline, pd.DataFrame]:
    """The flight-delay model trained on 20,000 sampled flights (about a second), with
    the scikit-learn pipeline it was compiled from and its holdout rows."""
    return fit(max_rows=TEST_ROWS)


@pytest.fixture(scope="session")
def trained_model(fitted: tuple[TrainedModel, Pipeline, pd.DataFrame]) -> TrainedModel:
    return fitted[0]


@pytest.fixture
def instance() -> dict[str, object]:
    """A valid instance as a client sends it."""
    return {
        "carrier": "UA",
        "origin": "EWR",
        "destination": "SFO",
        "scheduled_departure": "2013-07-04T17:30:00-04:00",
    }
