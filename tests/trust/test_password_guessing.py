"""VerifyPassword's guessing limit, over real mutual TLS with real certificates: a
compromised auth-svc (the one identity allowed to call it) cannot brute-force a password,
on any instance, and learns nothing about which emails exist."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from airline.user.v1 import user_internal_pb2, user_internal_pb2_grpc, user_pb2, user_pb2_grpc
from controlplane.ca import MeshCA, write_credentials
from services.runtime import logs
from services.runtime.authz import load_policy
from services.runtime.identity import CredentialFiles, FileSource, channel_credentials
from services.runtime.server import Server, Trust
from services.user_svc import server as user_server
from services.user_svc.attempts import GuessLimits
from tests.conftest import make_config
from tests.support import wait_for_window_room

POLICY_FILE = Path(__file__).resolve().parents[2] / "mesh" / "policy.toml"
PASSWORD = "correct horse battery"
PER_EMAIL, PER_CALLER = 3, 8


@dataclass(frozen=True)
class Pki:
    user_svc: CredentialFiles
    auth_svc: CredentialFiles
    edge: CredentialFiles


WINDOW_SECONDS = 3600


@pytest.fixture(autouse=True)
def _room_in_the_window() -> None:
    """Failed checks count per fixed window of the wall clock (epoch-aligned): a window
    ending between two checks of one test would reset its counts."""
    wait_for_window_room(WINDOW_SECONDS, 60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca, folder = MeshCA.create(), tmp_path_factory.mktemp("pki")
    return Pki(
        user_svc=write_credentials(ca.issue("user-svc", ip_addresses=["127.0.0.1"]), folder),
        auth_svc=write_credentials(ca.issue("auth-svc"), folder),
        edge=write_credentials(ca.issue("edge"), folder),
    )


def _instance(pki: Pki, database_url: str) -> Server:
    logs.configure("user-svc", "WARNING")
    registry = CollectorRegistry()
    identity = FileSource(pki.user_svc)
    settings = user_server.UserConfig(
        database_url,
        "127.0.0.1:1",  # auth-svc: not needed by VerifyPassword
        bcrypt_cost=4,
        guesses=GuessLimits(
            per_email=PER_EMAIL, per_caller=PER_CALLER, window_seconds=WINDOW_SECONDS
        ),
    )
    config = make_config("user-svc")
    definition = partial(user_server.build, settings=settings)(config, registry, identity=identity)
    trust = Trust(identity, load_policy(POLICY_FILE))
    return Server(config, definition, registry, trust=trust)


@pytest.fixture
def instances(pki: Pki, tmp_path: Path) -> Iterator[list[Server]]:
    """Two user-svc instances on one database, serving mutual TLS with the mesh policy."""
    url = f"sqlite:///{tmp_path / 'user.db'}"
    with ExitStack() as running:
        servers = []
        for _ in range(2):
            server = _instance(pki, url)
            server.start()
            running.callback(server.stop)
            servers.append(server)
        yield servers


def _channel(server: Server, files: CredentialFiles) -> grpc.Channel:
    return grpc.secure_channel(f"127.0.0.1:{server.port}", channel_credentials(files))


@pytest.fixture
def as_auth_svc(instances: list[Server], pki: Pki) -> Iterator[list[Verifier]]:
    """A VerifyPassword caller per instance, presenting auth-svc's certificate."""
    channels = [_channel(server, pki.auth_svc) for server in instances]
    yield [Verifier(user_internal_pb2_grpc.UserInternalServiceStub(c)) for c in channels]
    for channel in channels:
        channel.close()


@pytest.fixture
def sign_up(instances: list[Server], pki: Pki) -> Iterator[Callable[[], str]]:
    """Creates users through the first instance, as the edge would."""
    channel = _channel(instances[0], pki.edge)
    stub = user_pb2_grpc.UserServiceStub(channel)

    def create() -> str:
        email = f"{uuid.uuid4().hex[:10]}@example.com"
        request = user_pb2.CreateUserRequest(email=email, password=PASSWORD, display_name="G")
        stub.CreateUser(request, timeout=10)
        return email

    yield create
    channel.close()


@dataclass(frozen=True)
class Verifier:
    stub: user_internal_pb2_grpc.UserInternalServiceStub

    def check(self, email: str, password: str) -> grpc.RpcError | None:
        """None when the password is right, else the error."""
        request = user_internal_pb2.VerifyPasswordRequest(email=email, password=password)
        try:
            self.stub.VerifyPassword(request, timeout=10)
        except grpc.RpcError as err:
            return err
        return None

    def code(self, email: str, password: str) -> grpc.StatusCode:
        err = self.check(email, password)
        return grpc.StatusCode.OK if err is None else err.code()


def _retry_after(err: grpc.RpcError) -> int:
    trailers = err.trailing_metadata()
    found = [str(m.value) for m in trailers if m.key == "retry-after"]
    assert len(found) == 1, "a refusal names when to retry"
    return int(found[0])


def test_a_caller_guessing_one_email_is_cut_off_after_n_failures(
    as_auth_svc: list[Verifier], sign_up: Callable[[], str]
) -> None:
    email, (verifier, _) = sign_up(), as_auth_svc
    for _ in range(PER_EMAIL):
        assert verifier.code(email, "wrong password") == grpc.StatusCode.UNAUTHENTICATED
    refused = verifier.check(email, PASSWORD)  # even the right password, now
    assert refused is not None
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 0 < _retry_after(refused) <= 3600
    assert email not in (refused.details() or "")


def test_another_email_still_works_for_the_cut_off_caller(
    as_auth_svc: list[Verifier], sign_up: Callable[[], str]
) -> None:
    guessed, other, (verifier, _) = sign_up(), sign_up(), as_auth_svc
    for _ in range(PER_EMAIL):
        verifier.check(guessed, "wrong password")
    assert verifier.code(guessed, PASSWORD) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert verifier.code(other, PASSWORD) == grpc.StatusCode.OK
    assert verifier.code(other, "wrong password") == grpc.StatusCode.UNAUTHENTICATED


def test_an_unknown_email_is_refused_exactly_like_a_known_one(
    as_auth_svc: list[Verifier], sign_up: Callable[[], str]
) -> None:
    known, unknown, (verifier, _) = sign_up(), f"{uuid.uuid4().hex}@example.com", as_auth_svc
    answers = []
    for email in (known, unknown):
        codes = [verifier.code(email, "wrong password") for _ in range(PER_EMAIL)]
        refused = verifier.check(email, "wrong password")
        assert refused is not None
        answers.append((codes, refused.code(), refused.details()))
    assert answers[0] == answers[1]
    assert answers[0][1] == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_second_instance_on_the_same_database_sees_the_same_count(
    as_auth_svc: list[Verifier], sign_up: Callable[[], str]
) -> None:
    email, (first, second) = sign_up(), as_auth_svc
    assert first.code(email, "wrong password") == grpc.StatusCode.UNAUTHENTICATED
    for _ in range(PER_EMAIL - 1):
        assert second.code(email, "wrong password") == grpc.StatusCode.UNAUTHENTICATED
    assert second.code(email, PASSWORD) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert first.code(email, PASSWORD) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_caller_spreading_guesses_over_many_emails_is_cut_off_overall(
    as_auth_svc: list[Verifier], sign_up: Callable[[], str]
) -> None:
    verifier, fresh = as_auth_svc[0], sign_up()
    for _ in range(PER_CALLER):
        email = f"{uuid.uuid4().hex}@example.com"
        assert verifier.code(email, "wrong password") == grpc.StatusCode.UNAUTHENTICATED
    assert verifier.code(fresh, PASSWORD) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_right_passwords_use_up_no_failures(
    as_auth_svc: list[Verifier], sign_up: Callable[[], str]
) -> None:
    email, verifier = sign_up(), as_auth_svc[0]
    for _ in range(PER_CALLER + 1):
        assert verifier.code(email, PASSWORD) == grpc.StatusCode.OK


def test_user_svc_itself_may_not_check_passwords(instances: list[Server], pki: Pki) -> None:
    """The limit is behind the policy: only auth-svc's identity reaches VerifyPassword."""
    with _channel(instances[0], pki.user_svc) as channel:
        verifier = Verifier(user_internal_pb2_grpc.UserInternalServiceStub(channel))
        assert verifier.code("a@example.com", PASSWORD) == grpc.StatusCode.PERMISSION_DENIED
