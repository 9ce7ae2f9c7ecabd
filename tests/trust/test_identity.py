"""Mutual TLS between real gRPC servers and clients with the mesh CA's certificates."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import cast

import grpc
import pytest
from cryptography import x509

from controlplane.ca import IssuedCertificate, MeshCA, write_credentials
from services.runtime.identity import (
    CredentialFiles,
    ReloadingChannel,
    ReloadingServerCredentials,
    channel_credentials,
    peer_identity,
    workload_name,
)
from tests.support import served_serial, wait_for

WHOAMI = "/trust.test.Whoami/Get"


def _whoami(_request: bytes, context: grpc.ServicerContext) -> bytes:
    """Answers with the caller's SPIFFE id and the serial of the certificate it showed."""
    pem = cast("list[bytes]", context.auth_context()["x509_pem_cert"])[0]
    serial = x509.load_pem_x509_certificate(pem).serial_number
    return f"{peer_identity(context)} {serial}".encode()


class MtlsServer:
    """A real gRPC server on an ephemeral port serving `WHOAMI` with reloading mTLS."""

    def __init__(self, files: CredentialFiles) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(_whoami)
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("trust.test.Whoami", {"Get": handler}),)
        )
        self.credentials = ReloadingServerCredentials(files)
        self.port = self.server.add_secure_port("127.0.0.1:0", self.credentials.credentials)
        self.server.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(0).wait(5)


def call(channel: grpc.Channel) -> tuple[str, int]:
    """The caller's identity and certificate serial as the server saw them."""
    whoami: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(WHOAMI)
    identity, serial = whoami(b"", timeout=5).decode().split()
    return identity, int(serial)


def serial_of(issued: IssuedCertificate) -> int:
    return x509.load_pem_x509_certificate(issued.cert_pem).serial_number


@pytest.fixture(scope="module")
def ca() -> MeshCA:
    return MeshCA.create()


@pytest.fixture
def server_files(ca: MeshCA, tmp_path: Path) -> CredentialFiles:
    issued = ca.issue("user-svc", ip_addresses=["127.0.0.1"])
    return write_credentials(issued, tmp_path / "user-svc")


@pytest.fixture
def client_files(ca: MeshCA, tmp_path: Path) -> CredentialFiles:
    return write_credentials(ca.issue("auth-svc"), tmp_path / "auth-svc")


@pytest.fixture
def server(server_files: CredentialFiles) -> Iterator[MtlsServer]:
    running = MtlsServer(server_files)
    try:
        yield running
    finally:
        running.stop()


def refused(channel: grpc.Channel) -> grpc.StatusCode | None:
    with channel:
        try:
            call(channel)
        except grpc.RpcError as err:
            return err.code()
    return None


def test_mtls_call_works_and_the_server_sees_the_callers_spiffe_id(
    server: MtlsServer, client_files: CredentialFiles
) -> None:
    with grpc.secure_channel(server.target, channel_credentials(client_files)) as channel:
        identity, _serial = call(channel)
    assert identity == "spiffe://airline.local/svc/auth-svc"
    assert workload_name(identity) == "auth-svc"


def test_plaintext_client_is_refused(server: MtlsServer) -> None:
    assert refused(grpc.insecure_channel(server.target)) == grpc.StatusCode.UNAVAILABLE


def test_client_without_a_certificate_is_refused(
    server: MtlsServer, client_files: CredentialFiles
) -> None:
    root_only = grpc.ssl_channel_credentials(root_certificates=client_files.ca.read_bytes())
    assert refused(grpc.secure_channel(server.target, root_only)) == grpc.StatusCode.UNAVAILABLE


def test_client_with_a_certificate_of_another_ca_is_refused(
    server: MtlsServer, client_files: CredentialFiles, tmp_path: Path
) -> None:
    stranger = MeshCA.create().issue("auth-svc")
    forged = grpc.ssl_channel_credentials(
        root_certificates=client_files.ca.read_bytes(),  # It trusts the real server...
        private_key=stranger.key_pem,  # ...but shows a certificate the mesh never issued.
        certificate_chain=stranger.cert_pem,
    )
    assert refused(grpc.secure_channel(server.target, forged)) == grpc.StatusCode.UNAVAILABLE


class CallLoop:
    """Calls from another thread, each on a new connection, until stopped."""

    def __init__(self, target: str, client: CredentialFiles) -> None:
        self.ok = 0
        self.failures: list[str] = []
        self._target, self._client = target, client
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            credentials = channel_credentials(self._client)
            with grpc.secure_channel(self._target, credentials) as channel:
                try:
                    call(channel)
                    self.ok += 1
                except grpc.RpcError as err:
                    self.failures.append(f"{err.code()}: {err.details()}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def test_renewed_server_certificate_is_served_without_restart_or_failed_call(
    ca: MeshCA, server: MtlsServer, server_files: CredentialFiles, client_files: CredentialFiles
) -> None:
    before = served_serial(server.port, client_files)
    loop = CallLoop(server.target, client_files)
    try:
        wait_for(lambda: loop.ok > 0, "the first calls to succeed")
        renewed = ca.issue("user-svc", ip_addresses=["127.0.0.1"])
        write_credentials(renewed, server_files.cert.parent)
        wait_for(
            lambda: served_serial(server.port, client_files) == serial_of(renewed),
            "the renewed certificate to be served",
        )
    finally:
        loop.stop()
    calls_before = loop.ok
    assert before != serial_of(renewed)
    assert loop.failures == []
    assert calls_before > 1


def test_half_written_renewal_keeps_the_old_certificate(
    ca: MeshCA, server: MtlsServer, server_files: CredentialFiles, client_files: CredentialFiles
) -> None:
    """A new key whose certificate is not there yet is not loaded: calls keep working."""
    before = served_serial(server.port, client_files)
    half = ca.issue("user-svc", ip_addresses=["127.0.0.1"])
    server_files.key.write_bytes(half.key_pem)
    with grpc.secure_channel(server.target, channel_credentials(client_files)) as channel:
        assert call(channel)[0] == "spiffe://airline.local/svc/auth-svc"
    assert served_serial(server.port, client_files) == before


def test_reloading_channel_presents_the_renewed_client_certificate(
    ca: MeshCA, server: MtlsServer, client_files: CredentialFiles
) -> None:
    now = [0.0]
    channel = ReloadingChannel(
        client_files,
        lambda credentials: grpc.secure_channel(server.target, credentials),
        drain_seconds=10.0,
        clock=lambda: now[0],
    )
    try:
        first = channel.get()
        assert call(first)[1] == serial_of_file(client_files)
        renewed = ca.issue("auth-svc")
        write_credentials(renewed, client_files.cert.parent)
        second = channel.get()
        assert second is not first
        assert call(second) == ("spiffe://airline.local/svc/auth-svc", serial_of(renewed))
        # The old channel still finishes what it carries until its drain time is over.
        assert call(first)[0] == "spiffe://airline.local/svc/auth-svc"
        now[0] = 11.0
        assert channel.get() is second
        with pytest.raises(ValueError, match="closed"):
            call(first)
    finally:
        channel.close()


def test_reloading_channel_makes_one_multicallable_per_method_until_renewal(
    ca: MeshCA, server: MtlsServer, client_files: CredentialFiles
) -> None:
    """Reused while the credentials stand; after a renewal, made anew on the new channel."""
    channel = ReloadingChannel(
        client_files, lambda credentials: grpc.secure_channel(server.target, credentials)
    )
    try:
        first = channel.unary_unary(WHOAMI)
        assert channel.unary_unary(WHOAMI) is first
        assert channel.unary_unary("/other.Service/Method") is not first
        assert first(b"", timeout=5).decode().split()[1] == str(serial_of_file(client_files))
        renewed = ca.issue("auth-svc")
        write_credentials(renewed, client_files.cert.parent)
        second = channel.unary_unary(WHOAMI)
        assert second is not first
        assert second(b"", timeout=5).decode().split()[1] == str(serial_of(renewed))
    finally:
        channel.close()


def serial_of_file(files: CredentialFiles) -> int:
    return x509.load_pem_x509_certificate(files.cert.read_bytes()).serial_number
