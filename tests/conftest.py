"""Fixtures shared by every test: real servers on ephemeral ports, stopped on teardown,
and the databases every store is tested on (a SQLite file; PostgreSQL where installed).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from airline.auth.v1 import auth_pb2, auth_pb2_grpc
from airline.booking.v1 import booking_pb2_grpc
from airline.predict.v1 import predict_pb2_grpc
from airline.user.v1 import user_internal_pb2_grpc, user_pb2, user_pb2_grpc
from services.auth_svc import server as auth_server
from services.booking_svc import server as booking_server
from services.predict_svc import server as predict_server
from services.runtime import logs
from services.runtime.config import ServerConfig
from services.runtime.server import Builder, Server
from services.user_svc import server as user_server
from tests.postgres import PostgresMissing, fresh_database, postgres_server
from tests.support import PREDICT_TIMEOUT_SECONDS, free_ports


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """One throwaway PostgreSQL server for the whole session; yields its base URL.

    Skips, with the reason, where PostgreSQL is not installed (CI installs it).
    """
    try:
        with postgres_server() as url:
            yield url
    except PostgresMissing as missing:
        pytest.skip(str(missing))


@pytest.fixture
def postgres_url(postgres: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the session's server."""
    with fresh_database(postgres) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind a service runs on: a SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'service.db'}"
        return
    url: str = request.getfixturevalue("postgres_url")
    yield url


@contextmanager
def serving(config: ServerConfig, build: Builder) -> Iterator[Server]:
    """Runs a service instance in this process on 127.0.0.1:0 until the block ends."""
    logs.configure(config.service_name, "WARNING")
    registry = CollectorRegistry()
    server = Server(config, build(config, registry), registry)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def make_config(service_name: str, **overrides: object) -> ServerConfig:
    """A config for tests: ephemeral ports, short grace, cheap health polling."""
    fields: dict[str, object] = {
        "service_name": service_name,
        "grace_seconds": 2.0,
        "check_interval_seconds": 0.5,
    }
    fields.update(overrides)
    return ServerConfig(**fields)  # type: ignore[arg-type]


@contextmanager
def channel_to(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield channel


def address(server: Server) -> str:
    return f"127.0.0.1:{server.port}"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@dataclass(frozen=True)
class Account:
    """A signed-up user and their tokens."""

    user: user_pb2.User
    password: str
    access_token: str
    refresh_token: str

    @property
    def auth(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.access_token)


@dataclass
class Stack:
    """The four services, each on its own ephemeral port and SQLite file."""

    user: Server
    auth: Server
    predict: Server
    booking: Server
    channels: dict[str, grpc.Channel]
    first_admin: Account | None = None
    admin_signed_in: float = 0.0

    @property
    def admin(self) -> Account | None:
        """The first user (an admin), signed in again once its token is 10 minutes old:
        access tokens live 15, and a slow run of the suite outlives them."""
        if self.first_admin is not None and time.monotonic() - self.admin_signed_in > 600:
            pair = self.tokens.CreateToken(
                auth_pb2.CreateTokenRequest(
                    email=self.first_admin.user.email, password=self.first_admin.password
                ),
                timeout=10,
            )
            self.first_admin = replace(
                self.first_admin, access_token=pair.access_token, refresh_token=pair.refresh_token
            )
            self.admin_signed_in = time.monotonic()
        return self.first_admin

    @property
    def users(self) -> user_pb2_grpc.UserServiceStub:
        return user_pb2_grpc.UserServiceStub(self.channels["user"])

    @property
    def users_internal(self) -> user_internal_pb2_grpc.UserInternalServiceStub:
        return user_internal_pb2_grpc.UserInternalServiceStub(self.channels["user"])

    @property
    def tokens(self) -> auth_pb2_grpc.AuthServiceStub:
        return auth_pb2_grpc.AuthServiceStub(self.channels["auth"])

    @property
    def predictions(self) -> predict_pb2_grpc.PredictionServiceStub:
        return predict_pb2_grpc.PredictionServiceStub(self.channels["predict"])

    @property
    def bookings(self) -> booking_pb2_grpc.BookingServiceStub:
        return booking_pb2_grpc.BookingServiceStub(self.channels["booking"])

    def sign_up(self, *, display_name: str = "Test User") -> Account:
        """A new user with a unique email, signed in."""
        password = "correct horse battery"
        email = f"{uuid.uuid4().hex[:12]}@example.com"
        user = self.users.CreateUser(
            user_pb2.CreateUserRequest(email=email, password=password, display_name=display_name),
            timeout=10,
        )
        pair = self.tokens.CreateToken(
            auth_pb2.CreateTokenRequest(email=email, password=password), timeout=10
        )
        return Account(user, password, pair.access_token, pair.refresh_token)


TRAIN_ROWS = 20_000
SEED_DAYS = 2


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    db = tmp_path_factory.mktemp("databases")
    (auth_port,) = free_ports(1)
    auth_addr = f"127.0.0.1:{auth_port}"
    with ExitStack() as running:
        user = running.enter_context(
            serving(
                make_config("user-svc"),
                partial(
                    user_server.build,
                    settings=user_server.UserConfig(
                        f"sqlite:///{db}/user.db", auth_addr, bcrypt_cost=4
                    ),
                ),
            )
        )
        auth = running.enter_context(
            serving(
                make_config("auth-svc", port=auth_port),
                partial(
                    auth_server.build,
                    settings=auth_server.AuthConfig(f"sqlite:///{db}/auth.db", address(user)),
                ),
            )
        )
        predict = running.enter_context(
            serving(
                make_config("predict-svc"),
                partial(
                    predict_server.build,
                    settings=predict_server.PredictConfig(
                        f"sqlite:///{db}/predict.db",
                        auth_addr,
                        address(user),
                        train_rows=TRAIN_ROWS,
                    ),
                ),
            )
        )
        booking = running.enter_context(
            serving(
                make_config("booking-svc"),
                partial(
                    booking_server.build,
                    settings=booking_server.BookingConfig(
                        database_url=f"sqlite:///{db}/booking.db",
                        auth_addr=auth_addr,
                        user_addr=address(user),
                        predict_addr=address(predict),
                        seed_days=SEED_DAYS,
                        # The in-process stack has no workload identities, so the batch
                        # refresh could never authenticate to predict-svc: off, not failing
                        # every few seconds into other tests' captured logs.
                        risk_refresh_seconds=0,
                        predict_timeout_seconds=PREDICT_TIMEOUT_SECONDS,
                    ),
                ),
            )
        )
        channels = {
            name: running.enter_context(channel_to(server))
            for name, server in {
                "user": user,
                "auth": auth,
                "predict": predict,
                "booking": booking,
            }.items()
        }
        found = Stack(user, auth, predict, booking, channels)
        found.first_admin = found.sign_up(display_name="First Admin")  # the first user: admin
        found.admin_signed_in = time.monotonic()
        yield found
