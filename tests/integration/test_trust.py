"""Trust in the running mesh: mutual TLS on every hop, per-method authorization,
Consul ACLs, HTTPS at the edge, private files, and certificates that rotate under
load (the test mesh's certificates live CERT_LIFETIME_SECONDS=20)."""

from __future__ import annotations

import ssl
import stat
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
import httpx
import pytest

from airline.user.v1 import user_internal_pb2, user_internal_pb2_grpc, user_pb2
from controlplane.ca import MeshCA
from services.runtime.certificates import CaEndpoint, WorkloadIdentity
from services.runtime.identity import Credentials
from tests.controlplane.xds_probe import (
    pid_listening_on,
    private_keys_served,
    tcp_ports_listened_on_by,
)
from tests.integration.conftest import Mesh, running_mesh
from tests.integration.rest import PASSWORD
from tests.support import operator_files, served_serial, wait_for

HEALTH = "/grpc.health.v1.Health/Check"
VERIFY = "/airline.user.v1.UserInternalService/VerifyPassword"


def _targets(mesh: Mesh) -> list[str]:
    """Every instance Consul knows, and the mesh listener."""
    found = [
        f"{e['Service']['Address']}:{e['Service']['Port']}"
        for name in ("auth-svc", "user-svc", "booking-svc", "predict-svc")
        for e in mesh.instances(name)
    ]
    return [*found, f"127.0.0.1:{mesh.ports.mesh}"]


def _call(target: str, creds: grpc.ChannelCredentials | None, method: str, body: bytes) -> Any:
    """One unary call with raw bytes; the RpcError's code, or 'OK'."""
    channel = grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)
    with channel:
        try:
            # Long against a TLS handshake on a busy machine: a deadline here would read
            # as a refusal's code in the tests below.
            call: Any = channel.unary_unary(method)  # raw bytes: no serializer
            call(body, timeout=20)
        except grpc.RpcError as err:
            return err.code()
    return "OK"


def _credentials(creds: Credentials) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(creds.ca, creds.key, creds.cert)


def _operator(mesh: Mesh) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        (mesh.pki / "ca.pem").read_bytes(),
        (mesh.pki / "operator-key.pem").read_bytes(),
        (mesh.pki / "operator.pem").read_bytes(),
    )


@pytest.fixture(scope="module")
def other_ca_client(mesh: Mesh) -> grpc.ChannelCredentials:
    """A client certificate named like the operator, from a CA the mesh does not know."""
    issued = MeshCA.create().issue("operator")
    return grpc.ssl_channel_credentials(
        (mesh.pki / "ca.pem").read_bytes(), issued.key_pem, issued.cert_pem
    )


@contextmanager
def workload(mesh: Mesh, name: str) -> Iterator[Credentials]:
    """A real certificate for `name` from the mesh CA, got with `name`'s Consul token."""
    endpoint = CaEndpoint(
        f"127.0.0.1:{mesh.ports.ca}", (mesh.pki / "ca.pem").read_bytes(), mesh.token(name)
    )
    identity = WorkloadIdentity(endpoint, start_timeout=60)
    identity.start()
    try:
        yield identity.credentials()
    finally:
        identity.stop()


def test_var_is_private_and_every_database_key_token_and_log_is_0600(mesh: Mesh) -> None:
    assert stat.S_IMODE(mesh.var_dir.stat().st_mode) == 0o700
    private = [
        *(mesh.var_dir / "db").iterdir(),
        *(mesh.var_dir / "log").iterdir(),
        *(mesh.var_dir / "tokens").iterdir(),
        *mesh.pki.rglob("*key*.pem"),
    ]
    assert len(private) > 10
    modes = {str(path): oct(stat.S_IMODE(path.stat().st_mode)) for path in private}
    assert {path: mode for path, mode in modes.items() if mode != "0o600"} == {}


def test_plaintext_clients_are_refused_by_every_instance_and_the_mesh_listener(
    mesh: Mesh,
) -> None:
    codes = {target: _call(target, None, HEALTH, b"") for target in _targets(mesh)}
    assert set(codes.values()) == {grpc.StatusCode.UNAVAILABLE}, codes


def test_clients_of_another_ca_are_refused_by_every_instance_and_the_mesh_listener(
    mesh: Mesh, other_ca_client: grpc.ChannelCredentials
) -> None:
    codes = {target: _call(target, other_ca_client, HEALTH, b"") for target in _targets(mesh)}
    assert set(codes.values()) == {grpc.StatusCode.UNAVAILABLE}, codes


def test_the_operator_checks_health_on_every_instance(mesh: Mesh) -> None:
    targets = _targets(mesh)[:-1]  # the mesh listener routes no Health
    codes = {target: _call(target, _operator(mesh), HEALTH, b"") for target in targets}
    assert set(codes.values()) == {"OK"}, codes


def _denied(mesh: Mesh, entry: dict[str, Any]) -> float:
    port = entry["Service"]["Meta"]["metrics_port"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mesh_authz_denied_total{") and "svc/user-svc" in line
    )


def test_user_svcs_certificate_cannot_call_verify_password(mesh: Mesh) -> None:
    """Not on an instance, not through the mesh listener; the refusal is counted."""
    request = user_internal_pb2.VerifyPasswordRequest(email="a@example.com", password="x")
    entry = mesh.instances("user-svc")[0]
    instance = f"{entry['Service']['Address']}:{entry['Service']['Port']}"
    before = _denied(mesh, entry)
    with workload(mesh, "user-svc") as creds:
        direct = _call(instance, _credentials(creds), VERIFY, request.SerializeToString())
        meshed = _call(
            f"127.0.0.1:{mesh.ports.mesh}", _credentials(creds), VERIFY, request.SerializeToString()
        )
    assert (direct, meshed) == (grpc.StatusCode.PERMISSION_DENIED,) * 2
    assert _denied(mesh, entry) == before + 1


def test_a_registration_without_a_token_is_refused(mesh: Mesh) -> None:
    body = {"ID": "fake-user-svc", "Name": "user-svc", "Address": "127.0.0.1", "Port": 1}
    answer = httpx.put(f"{mesh.consul}/v1/agent/service/register", json=body, timeout=5)
    assert answer.status_code == 403
    assert all(
        e["Service"]["ID"] != "fake-user-svc" for e in mesh.instances("user-svc", passing=False)
    )


class FakeUserSvc(user_internal_pb2_grpc.UserInternalServiceServicer):
    """What a hostile process would serve: every password is right, every user an admin."""

    def __init__(self) -> None:
        self.passwords: list[str] = []
        self.lock = threading.Lock()

    def VerifyPassword(
        self, request: user_internal_pb2.VerifyPasswordRequest, context: grpc.ServicerContext
    ) -> user_internal_pb2.VerifyPasswordResponse:
        with self.lock:
            self.passwords.append(request.password)
        user = user_pb2.User(user_id="evil", email=request.email, roles=["user", "admin"])
        return user_internal_pb2.VerifyPasswordResponse(user=user)

    def LookupUser(
        self, request: user_internal_pb2.LookupUserRequest, context: grpc.ServicerContext
    ) -> user_internal_pb2.LookupUserResponse:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not what this fake is after")

    def LookupUsers(
        self, request: user_internal_pb2.LookupUsersRequest, context: grpc.ServicerContext
    ) -> user_internal_pb2.LookupUsersResponse:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not what this fake is after")


@contextmanager
def fake_user_svc(key_and_cert: tuple[bytes, bytes]) -> Iterator[tuple[FakeUserSvc, int]]:
    fake = FakeUserSvc()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    user_internal_pb2_grpc.add_UserInternalServiceServicer_to_server(fake, server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([key_and_cert]))
    server.start()
    try:
        yield fake, port
    finally:
        server.stop(0)


def _envoy_hosts(mesh: Mesh, cluster: str) -> str:
    text = httpx.get(f"{mesh.envoy_admin}/clusters", timeout=5).text
    return "\n".join(line for line in text.splitlines() if line.startswith(f"{cluster}::"))


def test_a_stolen_token_without_the_certificate_gets_no_traffic_and_sees_no_password(
    mesh: Mesh,
) -> None:
    """A process with user-svc's Consul token registers as user-svc, with a certificate
    that names user-svc but comes from another CA: Envoy sends it nothing."""
    issued = MeshCA.create().issue("user-svc", ip_addresses=["127.0.0.1"])
    victim = mesh.sign_up()
    headers = {"X-Consul-Token": mesh.token("user-svc")}
    with fake_user_svc((issued.key_pem, issued.cert_pem)) as (fake, port):
        body = {"ID": "stolen-user-svc", "Name": "user-svc", "Address": "127.0.0.1", "Port": port}
        registered = httpx.put(
            f"{mesh.consul}/v1/agent/service/register", json=body, headers=headers, timeout=5
        )
        assert registered.status_code == 200, registered.text
        try:
            wait_for(
                lambda: f"127.0.0.1:{port}::" in _envoy_hosts(mesh, "user-svc"),
                "Envoy to know the fake instance",
                60,
            )
            with mesh.client() as http:
                answers = [
                    http.post(
                        "/v1/auth/token",
                        json={"email": victim.user["email"], "password": f"wrong-{i}"},
                    ).status_code
                    for i in range(9)
                ]
                right = http.post(
                    "/v1/auth/token", json={"email": victim.user["email"], "password": PASSWORD}
                )
        finally:
            httpx.put(
                f"{mesh.consul}/v1/agent/service/deregister/stolen-user-svc",
                headers=headers,
                timeout=5,
            )
            # The session's mesh goes on to other tests: not with a host Envoy still has.
            wait_for(
                lambda: f"127.0.0.1:{port}::" not in _envoy_hosts(mesh, "user-svc"),
                "Envoy to forget the fake instance",
                60,
            )
    assert answers == [401] * 9
    assert right.status_code == 200
    assert fake.passwords == []


def test_the_edge_answers_https_with_the_ca_file(mesh: Mesh) -> None:
    edge = f"https://127.0.0.1:{mesh.ports.edge_tls}"
    with httpx.Client(verify=ssl.create_default_context(cafile=mesh.pki / "ca.pem")) as client:
        answer = client.get(f"{edge}/v1/flights", params={"page_size": 1}, timeout=10)
    assert answer.status_code == 200
    assert len(answer.json()["flights"]) == 1


def test_no_tcp_port_of_the_control_plane_hands_out_envoys_key(mesh: Mesh) -> None:
    """`make up`'s control plane serves ADS (and Envoy's key) on its 0600 socket only:
    asked for `mesh-identity` on every TCP port it listens on, it hands out nothing."""
    pid = pid_listening_on(mesh.ports.ca)
    assert pid is not None
    ca_pem = (mesh.pki / "ca.pem").read_bytes()
    ports = tcp_ports_listened_on_by(pid)
    assert mesh.ports.ca in ports
    served = [
        port
        for port in ports
        for ca in (None, ca_pem)
        if private_keys_served(f"127.0.0.1:{port}", ca_pem=ca)
    ]
    assert served == []
    socket_path = mesh.var_dir / "xds" / "ads.sock"
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A mesh of its own whose certificates live 20 s (renewed every ~13 s)."""
    with running_mesh(tmp_path_factory.mktemp("short"), CERT_LIFETIME_SECONDS="20") as found:
        found.admin = found.sign_up()
        yield found


def test_certificates_rotate_under_steady_load_with_no_failed_request(short_lived: Mesh) -> None:
    """Instances, Envoy (SDS) and the services' channels all renew while calls flow."""
    mesh = short_lived
    me = mesh.sign_up()
    entry = mesh.instances("user-svc")[0]["Service"]
    ports = {"user-svc": int(entry["Port"]), "mesh": mesh.ports.mesh}
    operator = operator_files(mesh.pki)
    first = {name: served_serial(port, operator) for name, port in ports.items()}
    statuses: dict[int, int] = {}
    with mesh.client(headers=me.headers) as http:

        def rotated() -> bool:
            # Through the mesh on every call: auth-svc -> user-svc to sign in, and
            # user-svc's own channel to auth-svc for the keys.
            for path in ("/v1/users/me", "/v1/flights?page_size=1"):
                code = http.get(path).status_code
                statuses[code] = statuses.get(code, 0) + 1
            signed = http.post(
                "/v1/auth/token", json={"email": me.user["email"], "password": PASSWORD}
            )
            statuses[signed.status_code] = statuses.get(signed.status_code, 0) + 1
            now = {name: served_serial(port, operator) for name, port in ports.items()}
            return all(now[name] != first[name] for name in ports)

        wait_for(rotated, "both certificates to be renewed", 120, interval=0.2)
    assert set(statuses) == {200}, statuses
    assert sum(statuses.values()) > 30
