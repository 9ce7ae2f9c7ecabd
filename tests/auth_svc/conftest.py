"""auth-svc's stores on a real SQLite file of their own per test."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from services.runtime.db import make_engine


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'auth.db'}"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    found = make_engine(db_url)
    yield found
    found.dispose()
