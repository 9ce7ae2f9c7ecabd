"""Small helpers every kind of test uses: free ports, polling with a deadline, stopping a
process by its PID, running code as if it served a call."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509

from services.runtime import context
from services.runtime.identity import CredentialFiles

T = TypeVar("T")

# How long booking-svc waits for predict-svc's delay risk in tests that expect one: the
# production 0.3 s is a latency budget a busy CI machine misses, and the booking then
# (rightly) has no risk. Tests of that fallback set their own short timeout.
PREDICT_TIMEOUT_SECONDS = 10.0


@dataclass
class _TimeLeft:
    """The one part of a gRPC servicer context the runtime reads outside the interceptor."""

    seconds: float

    def time_remaining(self) -> float:
        return self.seconds


@contextmanager
def serving_call(
    request_id: str = "req-1", seconds_left: float = 30.0, method: str = "/pkg.Svc/Method"
) -> Iterator[context.RequestContext]:
    """Runs the block as if serving a call (what the server interceptor sets up): outbound
    calls, limiters and log lines see its request id and its time left."""
    served = context.RequestContext(
        request_id=request_id,
        method=method,
        grpc_context=_TimeLeft(seconds_left),  # type: ignore[arg-type]
    )
    token = context.activate(served)
    try:
        yield served
    finally:
        context.deactivate(token)


def free_ports(count: int) -> list[int]:
    """Distinct ports free for both TCP and UDP right now (Consul's DNS and Serf use both)."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(tcp)
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            held.append(udp)
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


def wait_for(
    probe: Callable[[], T | None], what: str, timeout: float = 60.0, interval: float = 0.05
) -> T:
    """Polls `probe` until it returns something truthy; fails naming `what` at the deadline.

    The deadline guards against "never", not against slowness: it is long, since a passing
    test returns as soon as the probe does, and CI machines are several times slower and
    busier than a laptop.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def at_most_as_sent(seconds: float) -> float:
    """The most time a server may read as left of a deadline of `seconds` it was sent.

    A deadline travels as a grpc-timeout header, which gRPC encodes rounded up (to three
    significant figures of a coarser unit: up to 1% more); a service may read a few
    milliseconds more than its caller had left, never a default's worth.
    """
    return seconds * 1.01 + 0.001


def wait_for_window_room(window_seconds: int, room_seconds: float = 10.0) -> None:
    """Returns once the current fixed window of `window_seconds` (aligned to the epoch, as
    the rate limit scripts align them on Redis's clock, the same host clock here) has
    `room_seconds` left, so that no window ends between the calls of one test."""
    wait_for(
        lambda: time.time() % window_seconds <= window_seconds - room_seconds,
        f"a {window_seconds} s window with {room_seconds} s left",
        room_seconds + 10,
        interval=0.1,
    )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM to this PID, SIGKILL to this PID if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def served_serial(port: int, client: CredentialFiles) -> int:
    """The serial of the certificate the TLS server at 127.0.0.1:`port` presents to a new
    connection from `client` (mutual TLS, h2 as gRPC asks)."""
    context = ssl.create_default_context(cafile=client.ca)
    context.load_cert_chain(client.cert, client.key)
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def operator_files(pki: Path) -> CredentialFiles:
    """The operator's certificate, key and CA bundle `make up` writes into var/pki."""
    return CredentialFiles(
        cert=pki / "operator.pem", key=pki / "operator-key.pem", ca=pki / "ca.pem"
    )
