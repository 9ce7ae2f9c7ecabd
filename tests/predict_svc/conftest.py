"""Fixtures for predict-svc tests: one small model, trained once per session."""

from __future__ import annotations

import pytest

from services.predict_svc.model import TrainedModel, train

TEST_ROWS = 20_000


@pytest.fixture(scope="session")
def trained_model() -> TrainedModel:
    """The flight-delay model trained on 20,000 sampled flights (about a second)."""
    return train(max_rows=TEST_ROWS)


@pytest.fixture
def instance() -> dict[str, object]:
    """A valid instance as a client sends it."""
    return {
        "carrier": "UA",
        "origin": "EWR",
        "destination": "SFO",
        "scheduled_departure": "2013-07-04T17:30:00-04:00",
    }
