"""The `models` table: trained artifacts kept in predict-svc's own database.

Every instance of predict-svc reads the same artifacts, so a model is trained once
and served alike by all of them.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from datetime import UTC, datetime

from sqlalchemy import DateTime, Engine, Executable, LargeBinary, String, Text, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.predict_svc.model import TrainedModel
from services.runtime.db import create_tables, exclusive


class _Base(DeclarativeBase):
    pass


class ModelRow(_Base):
    """One trained version of a model; the artifact is the whole `TrainedModel`."""

    __tablename__ = "models"

    model_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    artifact: Mapped[bytes] = mapped_column(LargeBinary)
    # Kept beside the artifact so the table can be read without unpickling.
    metrics: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    # Naive UTC: SQLite keeps no offset.
    create_time: Mapped[datetime] = mapped_column(DateTime)


class ModelStore:
    """Saves and loads trained models; safe to share between threads and instances."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create_schema(self) -> None:
        create_tables(self._engine, _Base.metadata)

    def training(self, model_id: str) -> AbstractContextManager[None]:
        """Held while an instance trains `model_id`; the others wait here, then load it."""
        return exclusive(self._engine, f"train:{model_id}")

    def save(self, trained: TrainedModel) -> None:
        """Stores `trained`; a version already stored (by any instance) is left as it is."""
        key = (ModelRow.model_id == trained.model_id) & (ModelRow.version == trained.version)
        try:
            with self._engine.begin() as conn:
                if conn.execute(select(ModelRow.version).where(key)).first() is None:
                    conn.execute(insert(ModelRow).values(**_row(trained)))
        except IntegrityError:
            # Another instance inserted the same version between our read and write.
            pass

    def get(self, model_id: str, version: str) -> TrainedModel | None:
        """The stored `version` of `model_id`, or None."""
        query = select(ModelRow.artifact).where(
            (ModelRow.model_id == model_id) & (ModelRow.version == version)
        )
        return self._load(query)

    def latest(self, model_id: str) -> TrainedModel | None:
        """The most recently trained version of `model_id`, or None."""
        query = (
            select(ModelRow.artifact)
            .where(ModelRow.model_id == model_id)
            .order_by(ModelRow.create_time.desc(), ModelRow.version.desc())
            .limit(1)
        )
        return self._load(query)

    def _load(self, query: Executable) -> TrainedModel | None:
        with self._engine.connect() as conn:
            artifact = conn.execute(query).scalar()
        return None if artifact is None else TrainedModel.from_bytes(bytes(artifact))


def _row(trained: TrainedModel) -> dict[str, object]:
    return {
        "model_id": trained.model_id,
        "version": trained.version,
        "artifact": trained.to_bytes(),
        "metrics": json.dumps(trained.metrics, sort_keys=True),
        "description": trained.description,
        "create_time": trained.create_time.astimezone(UTC).replace(tzinfo=None),
    }
