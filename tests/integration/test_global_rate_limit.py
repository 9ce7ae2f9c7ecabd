"""Sign-in and sign-up limits hold across edges, and fail closed; reads fail open.

A mesh of its own (`make up`: Redis and the rate limit service under supervisord)
with the shipped limits, 10 per client address, and a second Envoy beside its own,
fed by the same control plane and asking the same rate limit service. Each test
calls from its own loopback address, so each starts with a fresh count.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
import pytest

from tests.envoy.conftest import Envoy
from tests.integration.conftest import Mesh, running_mesh
from tests.integration.rate_limits import (
    TOKEN,
    assert_limited,
    grpc_sign_in_code,
    loopback_addresses,
    new_credentials,
    remaining,
    use_up_the_limit,
)
from tests.support import free_ports, wait_for, wait_for_window_room

pytestmark = pytest.mark.integration

LIMIT = 10  # ratelimit/limits.toml's, for sign-in and sign-up alike
# Fixed windows start at multiples of the window on Redis's clock (midnight UTC for a
# day): each test waits until the window has room left (see _room_in_the_day).
WINDOW_SECONDS = 86400
SUPERVISORCTL = str(Path(sys.executable).parent / "supervisorctl")


@pytest.fixture(autouse=True)
def _room_in_the_day() -> None:
    """A test that counts must not straddle midnight UTC, where the window ends."""
    wait_for_window_room(WINDOW_SECONDS, 60)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(
        tmp_path_factory.mktemp("global-limits"),
        BOOKING_SEED_DAYS="1",
        TOKEN_RATE_LIMIT=str(LIMIT),
        TOKEN_RATE_WINDOW_SECONDS=str(WINDOW_SECONDS),
        SIGNUP_RATE_LIMIT=str(LIMIT),
        SIGNUP_RATE_WINDOW_SECONDS=str(WINDOW_SECONDS),
        # Reads counted too, so that failing open for them is seen.
        READ_RATE_LIMIT="100000",
    ) as found:
        yield found


@pytest.fixture(scope="module")
def second_edge(limited: Mesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envoy]:
    """Another Envoy: the same control plane, the same rate limit service, its own ports."""
    edge, mesh, admin = free_ports(3)
    proxy = Envoy(tmp_path_factory.mktemp("second-edge"), edge, mesh, admin)
    ports = limited.ports
    config = proxy.render(
        {},
        env={
            "XDS_SOCKET": str(limited.var_dir / "xds" / "ads.sock"),
            "RATELIMIT_ADDR": f"127.0.0.1:{ports.ratelimit}",
            "ENVOY_NODE_ID": "airline-envoy-second",
            # An edge of the mesh: its SDS identity, which the rate limit service asks for.
            "ENVOY_MESH_TLS": "1",
        },
    )
    proxy.start(config)
    try:
        wait_for(proxy.healthy, "the second edge's /healthz to answer 200", 60)
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def credentials(limited: Mesh) -> dict[str, str]:
    return new_credentials(limited)


@pytest.fixture(scope="module")
def addresses() -> Iterator[str]:
    """Loopback addresses no other test of this module calls from."""
    return loopback_addresses(1)


@pytest.fixture
def both_edges(
    limited: Mesh, second_edge: Envoy, addresses: Iterator[str]
) -> Iterator[list[httpx.Client]]:
    """A client of each edge, both calling from one fresh client address."""
    address = next(addresses)
    clients = [
        httpx.Client(
            base_url=base, timeout=15, transport=httpx.HTTPTransport(local_address=address)
        )
        for base in (limited.edge, second_edge.edge_url)
    ]
    yield clients
    for client in clients:
        client.close()


def _alternating(clients: list[httpx.Client], count: int) -> Iterator[httpx.Client]:
    return itertools.islice(itertools.cycle(clients), count)


def test_eleven_sign_ins_spread_over_two_edges_the_eleventh_is_429(
    both_edges: list[httpx.Client], credentials: dict[str, str]
) -> None:
    answers = [edge.post(TOKEN, json=credentials) for edge in _alternating(both_edges, LIMIT + 1)]

    assert [a.status_code for a in answers] == [200] * LIMIT + [429], answers[-1].text
    # One count for both edges: each answer says what is left of the shared limit.
    assert [remaining(a) for a in answers[:LIMIT]] == list(range(LIMIT - 1, -1, -1))
    assert_limited(answers[-1], LIMIT, WINDOW_SECONDS)


def test_eleven_sign_ups_spread_over_two_edges_the_eleventh_is_429(
    both_edges: list[httpx.Client],
) -> None:
    """Refused sign-ups (a password too short) count like any other."""
    short = {"email": f"{uuid.uuid4().hex[:12]}@example.com", "password": "short"}

    codes = [e.post("/v1/users", json=short).status_code for e in _alternating(both_edges, 11)]

    assert codes == [400] * LIMIT + [429]


def test_the_second_edge_gives_grpc_clients_resource_exhausted_past_the_limit(
    limited: Mesh, second_edge: Envoy, credentials: dict[str, str]
) -> None:
    """gRPC calls from 127.0.0.1 (it cannot choose): its limit used up over REST on the first edge.

    The only test signing in from 127.0.0.1.
    """
    with limited.client() as http:
        use_up_the_limit(http, credentials, LIMIT)

    code = grpc_sign_in_code(second_edge.edge_port, credentials)

    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


# --- failure modes: the rate limit service or Redis stopped -------------------------------


def _ctl(mesh: Mesh, *args: str) -> None:
    done = subprocess.run(
        [SUPERVISORCTL, "-c", str(mesh.var_dir / "supervisord.conf"), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def _counter(base: str, name: str) -> int:
    stats = httpx.get(f"{base}/stats", params={"format": "json"}, timeout=5).json()
    return int({s["name"]: s.get("value", 0) for s in stats["stats"] if "name" in s}.get(name, 0))


@contextmanager
def _stopped(mesh: Mesh, program: str) -> Iterator[str]:
    """The mesh with one program stopped (by supervisord); started again afterwards."""
    _ctl(mesh, "stop", program)
    try:
        yield program
    finally:
        _ctl(mesh, "start", program)
        wait_for(lambda: _signs_in(mesh), f"sign-in to work again after {program} restarts", 30)


@pytest.fixture(params=["ratelimit", "redis"])
def stopped(request: pytest.FixtureRequest, limited: Mesh) -> Iterator[str]:
    """The rate limit service, or the Redis it counts in, stopped."""
    with _stopped(limited, str(request.param)) as program:
        yield program


def _signs_in(mesh: Mesh) -> bool:
    transport = httpx.HTTPTransport(local_address=f"127.0.2.{uuid.uuid4().int % 250 + 1}")
    with mesh.client(transport=transport) as http:
        return http.post(TOKEN, json={"email": "x@example.com", "password": "x"}).status_code == 401


def test_without_its_limiter_sign_in_and_sign_up_fail_closed_with_retry_after(
    limited: Mesh, stopped: str, credentials: dict[str, str]
) -> None:
    before = _counter(limited.envoy_admin, "cluster.auth-svc.ratelimit.fail_closed.error")

    with limited.client() as http:
        sign_in = http.post(TOKEN, json=credentials)
        sign_up = http.post("/v1/users", json={"email": "a@example.com", "password": "short"})

    assert sign_in.status_code == 503, f"{stopped} stopped: {sign_in.text}"
    assert int(sign_in.headers["retry-after"]) >= 1
    assert sign_in.json()["code"] == 14
    assert "access_token" not in sign_in.text
    assert sign_up.status_code == 503
    assert int(sign_up.headers["retry-after"]) >= 1
    after = _counter(limited.envoy_admin, "cluster.auth-svc.ratelimit.fail_closed.error")
    assert after > before


def test_without_the_rate_limit_service_reads_fail_open_and_the_edge_counts_them(
    limited: Mesh,
) -> None:
    allowed = "cluster.booking-svc.ratelimit.fail_open.failure_mode_allowed"
    before = _counter(limited.envoy_admin, allowed)

    with _stopped(limited, "ratelimit"), limited.client() as http:
        codes = [http.get("/v1/flights", params={"page_size": 1}).status_code for _ in range(3)]
        after = _counter(limited.envoy_admin, allowed)

    assert codes == [200] * 3
    assert after >= before + 3


def test_without_redis_reads_succeed(limited: Mesh) -> None:
    """Redis down: the service cannot count reads, and the edge lets them through."""
    with _stopped(limited, "redis"), limited.client() as http:
        codes = [http.get("/v1/flights", params={"page_size": 1}).status_code for _ in range(3)]

    assert codes == [200] * 3
