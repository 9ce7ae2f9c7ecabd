"""The real descriptor set `make gen` wrote, and the contract and document made from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contract import openapi
from contract.routes import Contract, load

ROOT = Path(__file__).resolve().parents[2]
DESCRIPTOR = ROOT / "generated" / "airline.pb"


@pytest.fixture(scope="session")
def contract() -> Contract:
    if not DESCRIPTOR.is_file():
        pytest.fail(f"{DESCRIPTOR} is missing: run `make gen`")
    return load(DESCRIPTOR)


@pytest.fixture(scope="session")
def document(contract: Contract) -> dict[str, Any]:
    return openapi.document(contract)
