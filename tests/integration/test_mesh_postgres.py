"""`make up` on PostgreSQL (MESH_DATABASE=postgres): a booking end to end, its state in the server.

Starts a mesh of its own beside the session's, with the cluster in a folder the
server's user can reach (when run as root, the server runs as `postgres`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import URL, text
from sqlalchemy.exc import OperationalError

from mesh import postgres
from mesh.config import MeshConfig
from services.runtime.db import make_engine
from tests.integration.conftest import Mesh, running_mesh
from tests.integration.rest import bearer, create_user, sign_in

pytestmark = pytest.mark.integration


def _skip_without_postgres() -> None:
    try:
        postgres.binary("initdb")
        postgres.binary("postgres")
    except FileNotFoundError as missing:
        pytest.skip(str(missing))
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(postgres.SERVER_USER)
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server")


@pytest.fixture(scope="module")
def pg_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    _skip_without_postgres()
    pg_dir = Path(tempfile.mkdtemp(prefix="mesh-pg-"))
    try:
        with running_mesh(
            tmp_path_factory.mktemp("pg-mesh"), MESH_DATABASE="postgres", MESH_PG_DIR=str(pg_dir)
        ) as found:
            yield found
    finally:
        shutil.rmtree(pg_dir, ignore_errors=True)


def _config(mesh: Mesh) -> MeshConfig:
    return MeshConfig.from_env(mesh.env)


def test_a_booking_end_to_end_lands_in_postgresql(pg_mesh: Mesh) -> None:
    with pg_mesh.client() as http:
        created = create_user(http)
        assert created.status_code == 201, created.text
        tokens = sign_in(http, created.json()["email"])
        headers = bearer(tokens["access_token"])
        flights = http.get("/v1/flights", params={"page_size": 1})
        assert flights.status_code == 200, flights.text
        flight_id = flights.json()["flights"][0]["flight_id"]
        body = {
            "flight_id": flight_id,
            "seat_class": "ECONOMY",
            "passenger_name": "Ada Lovelace",
            "request_id": uuid.uuid4().hex,
        }
        booked = http.post("/v1/bookings", json=body, headers=headers)
        assert booked.status_code == 201, booked.text
        again = http.post("/v1/bookings", json=body, headers=headers)
        assert again.json()["booking_id"] == booked.json()["booking_id"]
        read = http.get(f"/v1/bookings/{booked.json()['booking_id']}", headers=headers)
        assert read.status_code == 200, read.text
    engine = make_engine(postgres.database_url(_config(pg_mesh), "booking-svc"))
    try:
        with engine.connect() as conn:
            ids = conn.execute(text("SELECT booking_id FROM bookings")).scalars().all()
    finally:
        engine.dispose()
    assert ids == [booked.json()["booking_id"]]
    assert not list(pg_mesh.var_dir.glob("db/*.db"))


def test_each_service_has_its_own_role_password_file_and_database(pg_mesh: Mesh) -> None:
    cfg = _config(pg_mesh)
    for service in cfg.services:
        assert postgres.passfile(cfg, service).stat().st_mode & 0o777 == 0o600
    assert cfg.pg_dir.stat().st_mode & 0o777 == 0o700
    # booking-svc's role, with its own password, cannot open user-svc's database.
    password = postgres.passfile(cfg, "booking-svc").read_text().strip().split(":")[-1]
    url = URL.create(
        "postgresql+psycopg",
        username="booking_svc",
        password=password,
        host=cfg.host,
        port=cfg.ports.postgres,
        database="user_svc",
    )
    engine = make_engine(url.render_as_string(hide_password=False))
    try:
        with pytest.raises(OperationalError, match=r"permission denied for database"):
            engine.connect().close()
    finally:
        engine.dispose()


def test_signing_keys_are_served_from_postgresql(pg_mesh: Mesh) -> None:
    jwks = httpx.get(f"{pg_mesh.edge}/v1/auth/jwks", timeout=10).json()
    engine = make_engine(postgres.database_url(_config(pg_mesh), "auth-svc"))
    try:
        with engine.connect() as conn:
            kids = conn.execute(text("SELECT kid FROM signing_keys WHERE state = 'current'"))
            assert [key["kid"] for key in jwks["keys"]][:1] == list(kids.scalars())
    finally:
        engine.dispose()
