"""Real Envoy, rendered by envoy_bootstrap, in front of real gRPC servers on free ports.

`edge_stack`: the four services as subprocesses (`python -m services.<name>`), calling
each other through Envoy's mesh listener, behind an Envoy with static clusters.
`probe_edge`: the same bootstrap in front of one small in-test gRPC server, for what
the real services cannot be made to do on demand (leave an optional field unset,
fail with UNAVAILABLE, report the deadline they were given).

Every process a fixture starts is stopped by its PID on teardown, also on failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from airline.auth.v1 import auth_pb2, auth_pb2_grpc
from airline.user.v1 import user_pb2, user_pb2_grpc
from contract.routes import load
from envoy_bootstrap.render import Settings, write
from tests.envoy.probe import Probe
from tests.support import free_ports, stop_process, wait_for

ROOT = Path(__file__).resolve().parents[2]
ENVOY = Path(os.environ.get("ENVOY_BIN", Path(sys.executable).parent / "envoy"))
# Every service of the contracts (auth-svc, ...), as contract/routes.py names them.
SERVICES = load(ROOT / "generated" / "airline.pb").workloads
ORIGIN = "http://app.example.com"
# Low enough for a test to exhaust, per client address.
TOKEN_LIMIT = 3
SIGNUP_LIMIT = 5
PASSWORD = "correct horse battery"


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@dataclass
class Envoy:
    """One Envoy process running a bootstrap rendered by envoy_bootstrap."""

    workdir: Path
    edge_port: int
    mesh_port: int
    admin_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def edge_url(self) -> str:
        return f"http://127.0.0.1:{self.edge_port}"

    @property
    def mesh_addr(self) -> str:
        return f"127.0.0.1:{self.mesh_port}"

    @property
    def log(self) -> Path:
        return self.workdir / "envoy.log"

    def render(self, static: Mapping[str, str], env: Mapping[str, str] | None = None) -> Path:
        """The bootstrap for this Envoy's ports, `static` clusters (none: ADS), `env` on top."""
        settings = {
            "ENVOY_CONFIG": str(self.workdir / "envoy.yaml"),
            "ENVOY_EDGE_ADDR": f"127.0.0.1:{self.edge_port}",
            "ENVOY_MESH_ADDR": self.mesh_addr,
            "ENVOY_ADMIN_ADDR": f"127.0.0.1:{self.admin_port}",
            "ENVOY_ACCESS_LOG": str(self.workdir / "access.log"),
            "CORS_ORIGINS": ORIGIN,
            "TOKEN_RATE_LIMIT": str(TOKEN_LIMIT),
            "SIGNUP_RATE_LIMIT": str(SIGNUP_LIMIT),
            "ENVOY_STATIC_CLUSTERS": ";".join(f"{n}={a}" for n, a in static.items()),
            **(env or {}),
        }
        return write(Settings.from_env(settings))

    def start(self, config: Path) -> None:
        command = [
            str(ENVOY), "-c", str(config), "--use-dynamic-base-id",
            "--base-id-path", str(self.workdir / "base-id"),
            "--log-level", "info", "--log-path", str(self.log), "--concurrency", "2",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            wait_for(self._live, "envoy's admin endpoint", 60)
        except BaseException:
            self.stop()
            raise

    def _live(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"envoy exited with {self.process.returncode}:\n{tail(self.log)}")
        try:
            return httpx.get(self.admin("/ready"), timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def admin(self, path: str) -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def counter(self, name: str) -> int:
        """A counter or gauge from the admin API, 0 while it does not exist yet."""
        stats = httpx.get(self.admin("/stats"), params={"format": "json"}, timeout=5).json()
        values = {s["name"]: s.get("value", 0) for s in stats["stats"] if "name" in s}
        return int(values.get(name, 0))

    def healthy(self) -> bool:
        return httpx.get(f"{self.edge_url}/healthz", timeout=2).status_code == 200

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


@pytest.fixture(scope="session")
def envoy_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Envoy]]:
    """Envoys on free ports, each stopped (by PID) when the session ends."""
    started: list[Envoy] = []

    def make() -> Envoy:
        edge, mesh, admin = free_ports(3)
        proxy = Envoy(tmp_path_factory.mktemp("envoy"), edge, mesh, admin)
        started.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in started:
            proxy.stop()


@dataclass
class Service:
    """One service instance: `python -m services.<package>` on a fixed port."""

    name: str
    port: int
    metrics_port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, env: Mapping[str, str]) -> None:
        package = "services." + self.name.replace("-", "_")
        variables = {k: v for k, v in os.environ.items() if k != "CONSUL_HTTP_ADDR"}
        variables.update(env, GRPC_PORT=str(self.port), METRICS_PORT=str(self.metrics_port))
        # These tests are about the edge in front of plaintext static clusters; mutual TLS
        # and authorization are tests/trust's and the integration tests' (make up).
        variables.setdefault("INSECURE_PLAINTEXT", "1")
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", package],
                env=variables, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def serving(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.process.returncode}:\n{tail(self.log)}")
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.RpcError:
                return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


@dataclass(frozen=True)
class Account:
    user_id: str
    email: str
    access_token: str

    @property
    def bearer(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.access_token}"}


@dataclass
class EdgeStack:
    """The four services behind one Envoy; admin and member signed in directly."""

    envoy: Envoy
    services: dict[str, Service]
    admin: Account
    member: Account
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, local_address: str | None = None) -> httpx.Client:
        """An HTTP/1.1 client of the edge, from `local_address` (127.0.0.x) if given."""
        transport = httpx.HTTPTransport(local_address=local_address)
        client = httpx.Client(base_url=self.envoy.edge_url, transport=transport, timeout=10)
        self.clients.append(client)
        return client

    def sign_up(self, display_name: str) -> Account:
        """A new user, created and signed in with the services themselves (not the edge)."""
        email = f"{display_name.lower().replace(' ', '.')}.{time.monotonic_ns()}@example.com"
        with grpc.insecure_channel(self.services["user-svc"].address) as channel:
            user = user_pb2_grpc.UserServiceStub(channel).CreateUser(
                user_pb2.CreateUserRequest(
                    email=email, password=PASSWORD, display_name=display_name
                ),
                timeout=10,
            )
        with grpc.insecure_channel(self.services["auth-svc"].address) as channel:
            pair = auth_pb2_grpc.AuthServiceStub(channel).CreateToken(
                auth_pb2.CreateTokenRequest(email=email, password=PASSWORD), timeout=10
            )
        return Account(user.user_id, email, pair.access_token)


def _start_services(envoy: Envoy, workdir: Path, ports: Sequence[int]) -> dict[str, Service]:
    services = {
        name: Service(name, ports[2 * i], ports[2 * i + 1], workdir / f"{name}.log")
        for i, name in enumerate(SERVICES)
    }
    for name, service in services.items():
        service.start(
            {
                # Every call between services goes through Envoy's mesh listener.
                "MESH_ADDR": envoy.mesh_addr,
                "DATABASE_URL": f"sqlite:///{workdir / name}.db",
                "BCRYPT_COST": "4",
                "PREDICT_TRAIN_ROWS": "20000",
                "BOOKING_SEED_DAYS": "2",
                "LOG_LEVEL": "WARNING",
                "SHUTDOWN_GRACE_SECONDS": "1",
            }
        )
    return services


@pytest.fixture(scope="session")
def edge_stack(
    envoy_factory: Callable[[], Envoy], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EdgeStack]:
    workdir = tmp_path_factory.mktemp("services")
    ports = free_ports(2 * len(SERVICES))
    envoy = envoy_factory()
    static = {name: f"127.0.0.1:{ports[2 * i]}" for i, name in enumerate(SERVICES)}
    envoy.start(envoy.render(static))
    services = _start_services(envoy, workdir, ports)
    try:
        for service in services.values():
            wait_for(service.serving, f"{service.name} to serve", 90)
        wait_for(envoy.healthy, "GET /healthz on the edge to answer 200", 60)
        wait_for(
            lambda: envoy.counter("http.edge.jwt_authn.jwks_fetch_success"),
            "the edge to fetch auth-svc's JWKS",
            60,
        )
        stack = EdgeStack(envoy, services, Account("", "", ""), Account("", "", ""))
        stack.admin = stack.sign_up("First Admin")  # the first user of an empty database
        stack.member = stack.sign_up("Member")
        yield stack
        for client in stack.clients:
            client.close()
    finally:
        for service in services.values():
            service.stop()


def status_body(response: httpx.Response) -> dict[str, object]:
    """The google.rpc.Status JSON body of an error response."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = json.loads(response.text)
    assert isinstance(body, dict)
    return body


@dataclass
class ProbeEdge:
    """An Envoy whose every cluster is the one Probe server."""

    envoy: Envoy
    probe: Probe

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.envoy.edge_url, timeout=10)


@pytest.fixture(scope="session")
def probe_edge(envoy_factory: Callable[[], Envoy]) -> Iterator[ProbeEdge]:
    probe = Probe()  # type: ignore[abstract]  # serves only the methods the tests call
    probe.start()
    try:
        envoy = envoy_factory()
        envoy.start(envoy.render({name: f"127.0.0.1:{probe.port}" for name in SERVICES}))
        wait_for(envoy.healthy, "GET /healthz on the probe edge to answer 200")
        wait_for(
            lambda: envoy.counter("http.edge.jwt_authn.jwks_fetch_success"),
            "the probe edge to fetch the probe's JWKS",
        )
        yield ProbeEdge(envoy, probe)
    finally:
        probe.stop()
