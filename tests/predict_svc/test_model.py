"""The flight-delay model: holdout metrics, versions, instance validation, prediction."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from services.predict_svc.fitting import train
from services.predict_svc.model import (
    FEATURES,
    MODEL_ID,
    TrainedModel,
    Violation,
    model_version,
    validate_instances,
)
from tests.predict_svc.conftest import TEST_ROWS


def _violations(*instances: object) -> list[Violation]:
    return validate_instances(list(instances))[1]  # type: ignore[arg-type]


def test_metrics_have_exactly_the_documented_keys(trained_model: TrainedModel) -> None:
    assert set(trained_model.metrics) == {
        "roc_auc",
        "brier_score",
        "accuracy",
        "base_rate",
        "holdout_rows",
        "train_rows",
    }


def test_holdout_roc_auc_beats_chance(trained_model: TrainedModel) -> None:
    assert trained_model.metrics["roc_auc"] > 0.6


def test_base_rate_is_the_share_of_late_departures(trained_model: TrainedModel) -> None:
    assert 0.1 < trained_model.metrics["base_rate"] < 0.4


def test_brier_score_beats_predicting_the_base_rate(trained_model: TrainedModel) -> None:
    """A constant base-rate forecast scores p(1-p); the model must do at least as well."""
    base = trained_model.metrics["base_rate"]
    assert trained_model.metrics["brier_score"] < base * (1 - base) + 0.005


def test_rows_split_eighty_twenty(trained_model: TrainedModel) -> None:
    assert trained_model.metrics["train_rows"] == 0.8 * TEST_ROWS
    assert trained_model.metrics["holdout_rows"] == 0.2 * TEST_ROWS


def test_model_is_named_flight_delay_and_trained_now(trained_model: TrainedModel) -> None:
    assert trained_model.model_id == MODEL_ID == "flight-delay"
    assert trained_model.create_time.tzinfo is UTC
    assert trained_model.create_time <= datetime.now(UTC)


def test_version_is_the_same_for_the_same_inputs(trained_model: TrainedModel) -> None:
    assert trained_model.version == model_version(TEST_ROWS, 13)
    assert model_version(TEST_ROWS, 13) == model_version(TEST_ROWS, 13)


@pytest.mark.parametrize(("max_rows", "seed"), [(TEST_ROWS + 1, 13), (TEST_ROWS, 14), (None, 13)])
def test_version_changes_with_the_inputs(max_rows: int | None, seed: int) -> None:
    assert model_version(max_rows, seed) != model_version(TEST_ROWS, 13)


@pytest.mark.slow
def test_training_twice_gives_the_same_predictions(instance: dict[str, object]) -> None:
    rows, _ = validate_instances([instance])
    first, second = train(max_rows=3000), train(max_rows=3000)
    assert np.array_equal(first.predict_proba(rows), second.predict_proba(rows))


def test_features_name_every_key_an_instance_carries(instance: dict[str, object]) -> None:
    assert {feature.name for feature in FEATURES} == set(instance)
    assert {feature.type for feature in FEATURES} <= {"STRING", "NUMBER", "TIMESTAMP"}


def test_valid_instance_is_parsed_with_an_aware_departure(instance: dict[str, object]) -> None:
    rows, violations = validate_instances([instance])
    assert violations == []
    assert rows[0]["scheduled_departure"] == datetime(2013, 7, 4, 21, 30, tzinfo=UTC)


def test_zulu_and_fractional_seconds_are_accepted(instance: dict[str, object]) -> None:
    instance["scheduled_departure"] = "2013-07-04T21:30:00.123456789Z"
    assert _violations(instance) == []


def test_empty_batch_is_refused() -> None:
    assert [v.field for v in _violations()] == ["instances"]


def test_batch_of_1001_is_refused_once(instance: dict[str, object]) -> None:
    assert [v.field for v in _violations(*[instance] * 1001)] == ["instances"]


def test_batch_of_1000_is_accepted(instance: dict[str, object]) -> None:
    assert _violations(*[instance] * 1000) == []


def test_instance_that_is_not_an_object_is_named_by_index(instance: dict[str, object]) -> None:
    assert _violations(instance, "UA") == [Violation("instances[1]", "must be an object")]


def test_missing_feature_is_required(instance: dict[str, object]) -> None:
    del instance["origin"]
    assert _violations(instance) == [Violation("instances[0].origin", "required")]


def test_unknown_key_is_an_unknown_feature(instance: dict[str, object]) -> None:
    instance["foo"] = "bar"
    assert _violations(instance) == [Violation("instances[0].foo", "unknown feature")]


def test_number_where_a_string_belongs_is_refused(instance: dict[str, object]) -> None:
    instance["carrier"] = 9.0
    assert _violations(instance) == [Violation("instances[0].carrier", "must be a string")]


@pytest.mark.parametrize("carrier", ["ua", "U", "UAL", "U-", "UA\n"])
def test_carrier_must_be_two_upper_case_characters(
    instance: dict[str, object], carrier: str
) -> None:
    instance["carrier"] = carrier
    assert [v.field for v in _violations(instance)] == ["instances[0].carrier"]


@pytest.mark.parametrize("field", ["origin", "destination"])
@pytest.mark.parametrize("code", ["jfk", "JF", "JFKX", "J1K"])
def test_airports_must_be_three_upper_case_letters(
    instance: dict[str, object], field: str, code: str
) -> None:
    instance[field] = code
    assert [v.field for v in _violations(instance)] == [f"instances[0].{field}"]


@pytest.mark.parametrize(
    "when",
    [
        "2013-07-04T17:30:00",  # no offset: local to whom?
        "2013-07-04",
        "2013-07-04 17:30:00Z",
        "2013-02-30T17:30:00Z",
        "July 4th",
        "9999-12-31T23:59:59-05:00",  # past year 9999 in New York
    ],
)
def test_departure_must_be_rfc3339_with_an_offset(instance: dict[str, object], when: str) -> None:
    instance["scheduled_departure"] = when
    assert [v.field for v in _violations(instance)] == ["instances[0].scheduled_departure"]


def test_every_violation_is_reported_with_its_index(instance: dict[str, object]) -> None:
    bad = {**instance, "origin": "x", "destination": None, "extra": 1.0}
    assert {v.field for v in _violations(instance, bad, instance, bad)} == {
        "instances[1].origin",
        "instances[1].destination",
        "instances[1].extra",
        "instances[3].origin",
        "instances[3].destination",
        "instances[3].extra",
    }


def test_no_rows_are_returned_when_any_instance_is_bad(instance: dict[str, object]) -> None:
    rows, _ = validate_instances([instance, {}])
    assert rows == []


def test_predictions_are_one_probability_per_instance(
    trained_model: TrainedModel, instance: dict[str, object]
) -> None:
    rows, _ = validate_instances([instance] * 7)
    probabilities = trained_model.predict_proba(rows)
    assert probabilities.shape == (7,)
    assert np.all((probabilities >= 0) & (probabilities <= 1))


def test_unknown_carrier_and_route_still_get_a_probability(
    trained_model: TrainedModel, instance: dict[str, object]
) -> None:
    rows, _ = validate_instances([{**instance, "carrier": "ZZ", "origin": "BOS"}])
    assert 0 <= trained_model.predict_proba(rows)[0] <= 1


def test_departure_hour_is_read_in_new_york_time(
    trained_model: TrainedModel, instance: dict[str, object]
) -> None:
    """The same instant written with two offsets is the same flight."""
    utc = {**instance, "scheduled_departure": "2013-07-04T21:30:00Z"}
    rows, _ = validate_instances([instance, utc])
    first, second = trained_model.predict_proba(rows)
    assert first == second


def test_bytes_round_trip_gives_the_same_predictions(
    trained_model: TrainedModel, instance: dict[str, object]
) -> None:
    rows, _ = validate_instances([instance, {**instance, "origin": "JFK"}])
    loaded = TrainedModel.from_bytes(trained_model.to_bytes())
    assert loaded.version == trained_model.version
    assert np.array_equal(loaded.predict_proba(rows), trained_model.predict_proba(rows))


@pytest.mark.parametrize(
    "when", ["9999-12-31T23:59:59Z", "1999-12-31T23:59:59Z", "2100-01-01T00:00:00Z"]
)
def test_departure_outside_the_window_is_named(instance: dict[str, object], when: str) -> None:
    instance["scheduled_departure"] = when
    ((field, description),) = [(v.field, v.description) for v in _violations(instance)]
    assert field == "instances[0].scheduled_departure"
    assert "2000-01-01" in description
