"""The mesh's root CA rotated while it serves: a whole mesh (real Consul with TLS checks,
real Envoy, real services) whose workload certificates live 20 s, under a steady stream
of calls through the edge that cross the mesh listener between services, taken through
`python -m mesh rotate-root add`, `activate` and `finish`: no call fails, Consul's checks
keep passing, and at the end every instance and the mesh listener present a chain that
verifies against the new root alone."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.integration.conftest import ROOT, Account, Mesh, running_mesh
from tests.integration.rest import PASSWORD

pytestmark = pytest.mark.slow

SERVICES = ("auth-svc", "user-svc", "booking-svc", "predict-svc")


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A mesh of its own whose certificates live 20 s (renewed every ~13 s)."""
    # Traffic signs in without pause for minutes: on a fast machine that is more than the
    # session meshes' 1000 sign-ins a minute, and this test is about certificates, not limits.
    with running_mesh(
        tmp_path_factory.mktemp("rotation"),
        CERT_LIFETIME_SECONDS="20",
        TOKEN_RATE_LIMIT="1000000",
    ) as found:
        found.admin = found.sign_up()
        yield found


def rotate(mesh: Mesh, step: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mesh", "rotate-root", step],
        cwd=ROOT, env=mesh.env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def endpoints(mesh: Mesh) -> dict[str, int]:
    """Every instance Consul knows (passing or not), and the mesh listener."""
    found = {
        entry["Service"]["ID"]: int(entry["Service"]["Port"])
        for name in SERVICES
        for entry in mesh.instances(name, passing=False)
    }
    return {**found, "mesh-listener": mesh.ports.mesh}


def handshake(mesh: Mesh, port: int, trust: Path) -> int | None:
    """The serial of the leaf served at 127.0.0.1:`port` to the operator, if its chain
    verifies against `trust` alone; None when it does not."""
    context = ssl.create_default_context(cafile=trust)
    context.load_cert_chain(mesh.pki / "operator.pem", mesh.pki / "operator-key.pem")
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLError:
        return None
    return x509.load_der_x509_certificate(der).serial_number if der else None


class Traffic:
    """Sign-ins (auth-svc -> mesh listener -> user-svc), profile reads (user-svc, which
    fetches auth-svc's keys through the mesh) and catalogue reads, without pause."""

    def __init__(self, mesh: Mesh, me: Account) -> None:
        self.statuses: Counter[int | str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(mesh, me), daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self, mesh: Mesh, me: Account) -> None:
        sign_in = {"email": me.user["email"], "password": PASSWORD}
        with mesh.client(headers=me.headers) as http:
            while not self._stop.is_set():
                for method, path, body in (
                    ("POST", "/v1/auth/token", sign_in),
                    ("GET", "/v1/users/me", None),
                    ("GET", "/v1/flights?page_size=1", None),
                ):
                    try:
                        code: int | str = http.request(method, path, json=body).status_code
                    except httpx.HTTPError as exc:
                        code = type(exc).__name__
                    self.statuses[code] += 1


class Checks:
    """Every Consul check seen failing while it runs (its id and output), polled steadily."""

    def __init__(self, mesh: Mesh) -> None:
        self.failing: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(mesh,), daemon=True)

    def __enter__(self) -> Checks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self, mesh: Mesh) -> None:
        headers = {"X-Consul-Token": mesh.token()}
        while not self._stop.wait(0.25):
            answer = httpx.get(f"{mesh.consul}/v1/health/state/any", headers=headers, timeout=5)
            for check in answer.json():
                if check.get("ServiceID") and check["Status"] != "passing":
                    self.failing[check["CheckID"]] = check["Output"][-300:]


def _replaced(path: Path, before: os.stat_result) -> bool:
    now = path.stat()
    return (now.st_ino, now.st_mtime_ns) != (before.st_ino, before.st_mtime_ns)


def not_passing(mesh: Mesh) -> list[str]:
    return [
        f"{entry['Service']['ID']}: {check['Status']}"
        for name in SERVICES
        for entry in mesh.instances(name, passing=False)
        for check in entry["Checks"]
        if check["Status"] != "passing"
    ]


def until_none_left(left: Callable[[], Collection[str]], what: str, timeout: float) -> None:
    """Polls `left()` until it is empty; fails naming what was still left at the deadline."""
    deadline = time.monotonic() + timeout
    while remaining := left():
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout}s still waiting for {what}: {sorted(remaining)}")
        time.sleep(0.5)


def test_the_root_rotates_under_steady_calls_with_no_failure(
    short_lived: Mesh, tmp_path: Path
) -> None:
    mesh = short_lived
    me = mesh.sign_up()
    old_root = tmp_path / "old-root.pem"
    old_root.write_bytes((mesh.pki / "ca.pem").read_bytes())
    ports = endpoints(mesh)
    operator = (mesh.pki / "operator.pem").stat()

    with Checks(mesh) as checks, Traffic(mesh, me) as traffic:
        rotate(mesh, "add")
        # The control plane took the new bundle once it rewrote the operator's files:
        # a certificate it issues after that comes with both roots.
        until_none_left(
            lambda: [] if _replaced(mesh.pki / "operator.pem", operator) else ["operator.pem"],
            "the control plane to take the new bundle",
            60,
        )
        first = {name: handshake(mesh, port, old_root) for name, port in ports.items()}
        assert all(first.values())
        bundle = x509.load_pem_x509_certificates((mesh.pki / "ca.pem").read_bytes())
        assert len(bundle) == 2
        new_root = tmp_path / "new-root.pem"
        new_root.write_bytes(bundle[1].public_bytes(serialization.Encoding.PEM))

        # Every workload renews once, and takes the two-root bundle with it.
        waiting = set(ports)

        def not_renewed() -> set[str]:
            for name in list(waiting):
                served = handshake(mesh, ports[name], old_root)
                if served is not None and served != first[name]:
                    waiting.discard(name)
            return waiting

        until_none_left(not_renewed, "renewals after the new root was added", 90)

        rotate(mesh, "activate")
        until_none_left(
            lambda: [n for n, p in ports.items() if handshake(mesh, p, new_root) is None],
            "chains to the new root",
            90,
        )
        rotate(mesh, "finish")
        assert (mesh.pki / "ca.pem").read_bytes() == new_root.read_bytes()
        # One more round of renewals under the new root alone, calls still flowing.
        last = {name: handshake(mesh, port, new_root) for name, port in ports.items()}
        until_none_left(
            lambda: [
                name
                for name, port in ports.items()
                if handshake(mesh, port, new_root) in (None, last[name])
            ],
            "renewals under the new root alone",
            90,
        )
        until_none_left(lambda: not_passing(mesh), "Consul's checks to pass", 60)

    assert set(traffic.statuses) == {200}, traffic.statuses
    assert checks.failing == {}
    assert sum(traffic.statuses.values()) > 60
    for port in ports.values():
        # No workload presents a chain to the old root any more.
        assert handshake(mesh, port, old_root) is None
    assert not_passing(mesh) == []
