"""Brings up the served model: the stored artifact when there is one, else a fresh one.

A fresh database trains once, by one instance, while the others starting with it wait;
every later start, on any instance, loads that artifact. Training runs in a child
process: pandas, scikit-learn and the training data (a few hundred MiB) leave with it,
and the serving process keeps only the model's arrays.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from services.predict_svc.model import MODEL_ID, TrainedModel, model_version
from services.predict_svc.store import ModelStore


def load_or_train(store: ModelStore, max_rows: int | None, seed: int = 13) -> TrainedModel:
    """The stored model trained with these inputs, training and saving it if missing.

    Looks up the exact version these inputs give, so changing `max_rows`, the seed or
    scikit-learn trains a new version instead of serving a stale one. Instances that
    start together queue on the store's training lock: the first trains and saves, the
    rest find its artifact when their turn comes, so all serve the same one.
    """
    version = model_version(max_rows, seed)
    found = store.get(MODEL_ID, version)
    if found is not None:
        return found
    with store.training(MODEL_ID):
        found = store.get(MODEL_ID, version)
        if found is not None:
            return found
        store.save(train_apart(max_rows, seed))
    saved = store.get(MODEL_ID, version)
    if saved is None:
        raise RuntimeError(f"{MODEL_ID} {version} was saved but cannot be read back")
    return saved


def train_apart(max_rows: int | None, seed: int = 13) -> TrainedModel:
    """`fitting.train` in a fresh child process (spawned: no copy of our threads or heap)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as child:
        artifact = child.submit(_train_to_bytes, max_rows, seed).result()
    return TrainedModel.from_bytes(artifact)


def _train_to_bytes(max_rows: int | None, seed: int) -> bytes:
    # Imported here, in the child: the serving process must never load scikit-learn.
    from services.predict_svc.fitting import train

    return train(max_rows, seed).to_bytes()
