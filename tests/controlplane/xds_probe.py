"""What a local process can get from an address by speaking ADS to it, whether it
answers at all, and which TCP ports a process listens on: the tools of the tests that
look for Envoy's key."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controlplane.resources import IDENTITY_SECRET, SECRET_TYPE

_LISTEN = "0A"


def private_keys_served(
    target: str, timeout: float = 3.0, ca_pem: bytes | None = None
) -> list[bytes]:
    """The private keys an ADS stream at `target` hands out for `mesh-identity`.

    Asked the way Envoy asks (one SDS request over ADS); over TLS trusting `ca_pem`
    when given, else plaintext. Empty when nothing answers ADS there.
    """
    request = discovery_pb2.DiscoveryRequest(
        node=base_pb2.Node(id="a-local-process", cluster="not-envoy"),
        type_url=SECRET_TYPE,
        resource_names=[IDENTITY_SECRET],
    )
    keys: list[bytes] = []
    with _channel(target, ca_pem) as channel:
        stream = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
            iter([request]), timeout=timeout
        )
        # The stream stays open (it would wait for our ACK): its deadline ends it.
        with contextlib.suppress(grpc.RpcError):
            for response in stream:
                keys += _keys(response)
                if keys:
                    stream.cancel()
    return keys


def health_of(target: str) -> int | None:
    """The overall health the gRPC server at `target` reports, or None if it does not answer."""
    with grpc.insecure_channel(target) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        except grpc.RpcError:
            return None
        return answer.status  # type: ignore[no-any-return]


def _channel(target: str, ca_pem: bytes | None) -> grpc.Channel:
    if ca_pem is None:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=ca_pem))


def _keys(response: discovery_pb2.DiscoveryResponse) -> Iterator[bytes]:
    for packed in response.resources:
        secret = secret_pb2.Secret()
        packed.Unpack(secret)
        key = secret.tls_certificate.private_key.inline_bytes
        if key:
            yield key


def tcp_ports_listened_on_by(pid: int) -> set[int]:
    """Every TCP port (IPv4 or IPv6, any address) a socket of `pid` listens on."""
    held = _sockets_held_by(pid)
    return {port for inode, port in _listening(pid).items() if f"socket:[{inode}]" in held}


def pid_listening_on(port: int) -> int | None:
    """The process listening on TCP `port`, if one of ours is."""
    inodes = {
        f"socket:[{inode}]" for inode, bound in _listening(os.getpid()).items() if bound == port
    }
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if inodes & _sockets_held_by(int(pid)):
            return int(pid)
    return None


def _listening(pid: int) -> dict[str, int]:
    """Socket inode -> port of every listening TCP socket in `pid`'s network namespace."""
    listening: dict[str, int] = {}
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for fields in (line.split() for line in lines):
            if fields[3] == _LISTEN:
                listening[fields[9]] = int(fields[1].rsplit(":", 1)[1], 16)
    return listening


def _sockets_held_by(pid: int) -> set[str]:
    """What `pid`'s file descriptors point at; a process or fd may vanish meanwhile."""
    held: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                held.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return held
