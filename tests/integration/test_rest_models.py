"""The Predictions rows of API.md, proved with REST calls on the edge.

The flight-delay model as listed and read, and predictions from it for a signed-in user.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.conftest import Account
from tests.integration.rest import INSTANCE
from tests.integration.rest import bad_request_fields as _violated_fields
from tests.integration.rest import expect_rpc_status as _status
from tests.integration.rest import timestamp as _timestamp

pytestmark = pytest.mark.integration

MODEL_KEYS = {"model_id", "version", "description", "features", "metrics", "create_time"}


# --- GET /v1/models ----------------------------------------------------------------------


def _flight_delay_model(http: httpx.Client) -> dict[str, Any]:
    response = http.get("/v1/models")
    assert response.status_code == 200, response.text
    found = [m for m in response.json()["models"] if m["model_id"] == "flight-delay"]
    assert len(found) == 1, response.text
    return dict(found[0])


def test_model_list_has_the_flight_delay_model(http: httpx.Client) -> None:
    response = http.get("/v1/models")

    assert response.status_code == 200, response.text
    assert "models" in response.json()
    model = _flight_delay_model(http)
    assert set(model) >= MODEL_KEYS
    assert model["version"]
    assert model["description"]
    assert _timestamp(model["create_time"])


def test_flight_delay_model_lists_its_features(http: httpx.Client) -> None:
    features = _flight_delay_model(http)["features"]

    assert {f["name"] for f in features} == set(INSTANCE)
    for feature in features:
        assert feature["type"] in {"STRING", "NUMBER", "TIMESTAMP"}, feature


def test_flight_delay_model_reports_its_evaluation_metrics(http: httpx.Client) -> None:
    metrics = _flight_delay_model(http)["metrics"]

    for name in ("roc_auc", "brier_score", "accuracy", "base_rate"):
        assert isinstance(metrics[name], float | int), (name, metrics)
        assert 0.0 <= metrics[name] <= 1.0, (name, metrics)
    assert metrics["roc_auc"] > 0.5  # better than chance: it learned something


def test_flight_delay_model_can_be_read_by_id(http: httpx.Client) -> None:
    listed = _flight_delay_model(http)

    response = http.get("/v1/models/flight-delay")

    assert response.status_code == 200, response.text
    assert response.json() == listed


def test_reading_an_unknown_model_gets_404(http: httpx.Client) -> None:
    response = http.get("/v1/models/no-such-model")

    _status(response, 404, 5)


# --- POST /v1/models/{model_id}:predict ----------------------------------------------------


def test_predicting_gives_one_probability_per_instance_and_the_model_version(
    http: httpx.Client, user: Account
) -> None:
    version = _flight_delay_model(http)["version"]
    other = {**INSTANCE, "carrier": "DL", "origin": "JFK", "destination": "ATL"}

    response = http.post(
        "/v1/models/flight-delay:predict",
        json={"instances": [INSTANCE, other]},
        headers=user.headers,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == version
    assert len(body["predictions"]) == 2
    for prediction in body["predictions"]:
        probability = prediction["delay_probability"]
        assert isinstance(probability, float | int)
        assert 0.0 <= probability <= 1.0


def test_predicting_accepts_one_thousand_instances(http: httpx.Client, user: Account) -> None:
    response = http.post(
        "/v1/models/flight-delay:predict",
        json={"instances": [INSTANCE] * 1000},
        headers=user.headers,
    )

    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1000


@pytest.mark.parametrize("count", [0, 1001])
def test_predicting_refuses_an_instance_count_outside_one_to_a_thousand(
    http: httpx.Client, user: Account, count: int
) -> None:
    response = http.post(
        "/v1/models/flight-delay:predict",
        json={"instances": [INSTANCE] * count},
        headers=user.headers,
    )

    _status(response, 400, 3)


def test_predicting_with_a_bad_feature_names_the_instance_and_field(
    http: httpx.Client, user: Account
) -> None:
    bad = {**INSTANCE, "origin": "not an airport"}

    response = http.post(
        "/v1/models/flight-delay:predict",
        json={"instances": [INSTANCE, bad]},
        headers=user.headers,
    )

    body = _status(response, 400, 3)
    assert _violated_fields(body) == {"instances[1].origin"}


def test_predicting_with_an_unknown_model_gets_404(http: httpx.Client, user: Account) -> None:
    response = http.post(
        "/v1/models/no-such-model:predict", json={"instances": [INSTANCE]}, headers=user.headers
    )

    _status(response, 404, 5)
