"""Helpers for the simulated-hosts tests: the hosts `make hosts-up` made, requests from
the client namespace, and a steady stream of bookings and reads with one retry."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from controlplane.consul import consul_tls_context
from mesh import netns
from mesh.hosts import PROVISIONER

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
REQUEST_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Cluster:
    """What hosts.json says, and the environment the `mesh.hosts` commands ran with."""

    env: dict[str, str]
    document: dict[str, Any]

    @property
    def apps(self) -> list[dict[str, Any]]:
        return [h for h in self.document["hosts"] if "edge" in h]

    @property
    def edges(self) -> list[str]:
        return [h["edge"] for h in self.apps]

    def host(self, name: str) -> dict[str, Any]:
        return next(h for h in self.document["hosts"] if h["name"] == name)

    def by_address(self, address: str) -> dict[str, Any]:
        return next(h for h in self.document["hosts"] if h["address"] == address)

    @property
    def client_ns(self) -> str:
        return str(self.document["client"]["netns"])

    @property
    def client_addresses(self) -> list[str]:
        return list(self.document["client"]["addresses"])

    def consul_tls(self, *, client_certificate: bool = True) -> ssl.SSLContext:
        """What another machine needs for an agent's HTTPS API: the mesh CA and the
        provisioner's client certificate (`client_certificate=False`: the CA only)."""
        folder = Path(self.document["provision_dir"], "consul-client")
        if not client_certificate:
            return ssl.create_default_context(cafile=str(folder / "ca.pem"))
        cert, key = folder / f"{PROVISIONER}.pem", folder / f"{PROVISIONER}-key.pem"
        return consul_tls_context(folder / "ca.pem", cert, key)

    def secret(self, *parts: str) -> str:
        """A file the provisioner kept (the bootstrap token, ...)."""
        return Path(self.document["provision_dir"], *parts).read_text().strip()

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run_hosts(self.env, *args, timeout=timeout)

    def supervisorctl(self, host: str, *args: str) -> str:
        conf = Path(self.host(host)["var_dir"], "supervisord.conf")
        command = [str(ROOT / ".venv" / "bin" / "supervisorctl"), "-c", str(conf), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        return done.stdout


def run_hosts(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesh.hosts", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def load(path: Path, env: dict[str, str]) -> Cluster:
    return Cluster(env, json.loads(path.read_text()))


class NetnsClient:
    """Runs calls on threads that entered the client namespace, each thread with its
    own httpx client bound to `source` (the client machine's address)."""

    def __init__(
        self,
        namespace: str,
        source: str,
        workers: int = 4,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self._local = threading.local()
        self._source = source
        # For HTTPS (an agent's API): the CA to check servers with, and the client's
        # certificate; None: the default trust store, which knows no mesh CA.
        self._verify = verify
        self._clients: list[httpx.Client] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(
            workers, thread_name_prefix="client", initializer=netns.enter, initargs=(namespace,)
        )

    def http(self) -> httpx.Client:
        """This thread's client (call from inside `run` only)."""
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            transport = httpx.HTTPTransport(
                local_address=self._source,
                verify=self._verify if self._verify is not None else True,
            )
            client = httpx.Client(transport=transport, timeout=REQUEST_TIMEOUT_SECONDS)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def run(self, fn: Callable[[], T], timeout: float = 60.0) -> T:
        return self._pool.submit(fn).result(timeout)

    def request(self, edge: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.run(lambda: self.http().request(method, edge + path, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for client in self._clients:
                client.close()


@dataclass
class Outcome:
    kind: str
    ok: bool
    status: int
    retried: bool
    request_id: str = ""
    booking_id: str = ""
    at: float = field(default_factory=time.monotonic)
    # Wall clock, to find the request in the hosts' access logs.
    wall: float = field(default_factory=time.time)


def with_retry(
    client: httpx.Client, edges: list[str], turn: int, method: str, path: str, **kw: Any
) -> tuple[httpx.Response | None, bool]:
    """One request on edge `turn`, retried once on the next edge after a connection
    error or a 5xx. Returns the last answer (None: no answer) and whether it retried."""
    first, second = edges[turn % len(edges)], edges[(turn + 1) % len(edges)]
    try:
        answer = client.request(method, first + path, **kw)
        if answer.status_code < 500:
            return answer, False
    except httpx.TransportError:
        pass
    try:
        return client.request(method, second + path, **kw), True
    except httpx.TransportError:
        return None, True


class Stream:
    """A steady stream through every edge: a booking (unique request_id) then a read,
    over and over, until stopped or `max_requests`; every outcome kept."""

    def __init__(
        self, client: NetnsClient, edges: list[str], token: str, flights: list[str]
    ) -> None:
        self.client = client
        self.edges = edges
        self.flights = flights
        self.headers = {"authorization": f"Bearer {token}"}
        self.outcomes: list[Outcome] = []
        self.stopped = threading.Event()
        self.max_requests = 20_000
        self.run_id = uuid.uuid4().hex[:8]
        self._future: Any = None

    def start(self) -> None:
        self._future = self.client._pool.submit(self._loop)

    def stop(self) -> list[Outcome]:
        self.stopped.set()
        self._future.result(120)
        return self.outcomes

    def count(self) -> int:
        return len(self.outcomes)

    def _loop(self) -> None:
        http = self.client.http()
        turn = 0
        while not self.stopped.is_set() and len(self.outcomes) < self.max_requests:
            request_id = f"{self.run_id}-{turn}"
            body = {
                "flight_id": self.flights[turn % len(self.flights)],
                "seat_class": "ECONOMY",
                "passenger_name": "Hosts Test",
                "request_id": request_id,
            }
            answer, retried = with_retry(
                http, self.edges, turn, "POST", "/v1/bookings", json=body, headers=self.headers
            )
            ok = answer is not None and answer.status_code in (200, 201)
            booking_id = answer.json().get("booking_id", "") if ok and answer else ""
            status = answer.status_code if answer is not None else 0
            self.outcomes.append(Outcome("book", ok, status, retried, request_id, booking_id))
            answer, retried = with_retry(http, self.edges, turn, "GET", "/v1/flights?page_size=5")
            ok = answer is not None and answer.status_code == 200
            status = answer.status_code if answer is not None else 0
            self.outcomes.append(Outcome("read", ok, status, retried))
            turn += 1


def wait_until(probe: Callable[[], T | None], what: str, timeout: float) -> tuple[T, float]:
    """Polls `probe` until truthy; returns it and the seconds it took. AssertionError
    naming `what` at the deadline."""
    start = time.monotonic()
    while True:
        value = probe()
        if value:
            return value, time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
