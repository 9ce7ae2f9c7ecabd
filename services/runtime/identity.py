"""Workload identity for Python servers and clients: mutual TLS with the mesh CA's
certificates, reloaded from their files when they are renewed, and the SPIFFE id of
the peer a call came from.

Servers reload through gRPC's certificate-config fetch callback
(`grpc.dynamic_ssl_server_credentials`), which gRPC calls on each new connection:
a renewed certificate is served from the next handshake, with no restart.
Channels cannot do that: a channel keeps the client certificate it was built with
for its whole life (grpc/grpc#15735), so `ReloadingChannel` builds a new channel
when the files change and closes the old one once its calls had time to finish.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger(__name__)

TRUST_DOMAIN = "airline.local"
SPIFFE_PREFIX = f"spiffe://{TRUST_DOMAIN}/svc/"
_WORKLOAD_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
# gRPC's auth context: every SAN of the peer's certificate (DNS, URI, IP, email).
_SAN_PROPERTY = "x509_subject_alternative_name"


class IdentityError(ValueError):
    """A workload name, SPIFFE id or credential file that cannot be used."""


def validate_workload_name(name: str) -> str:
    """`name` if it can be a workload's name (`user-svc`, `edge`, `operator`)."""
    if not _WORKLOAD_NAME.fullmatch(name):
        raise IdentityError("a workload name is lowercase letters, digits and '-', 1-63 long")
    return name


def spiffe_id(name: str) -> str:
    """The identity of workload `name`: `spiffe://airline.local/svc/<name>`."""
    return SPIFFE_PREFIX + validate_workload_name(name)


def workload_name(identity: str) -> str | None:
    """The workload name in a SPIFFE id of this mesh, or None for anything else."""
    if not identity.startswith(SPIFFE_PREFIX):
        return None
    name = identity.removeprefix(SPIFFE_PREFIX)
    return name if _WORKLOAD_NAME.fullmatch(name) else None


def peer_identity(context: grpc.ServicerContext) -> str | None:
    """The SPIFFE id of the TLS peer that made this call, or None.

    None for a plaintext peer, and for a certificate with no SPIFFE id of this
    trust domain or more than one (an X509-SVID has exactly one URI SAN).
    """
    # Typed as str -> bytes in types-grpcio; gRPC gives str -> list of bytes.
    auth = cast("Mapping[str, Sequence[bytes]]", context.auth_context())
    sans = [raw.decode("utf-8", "replace") for raw in auth.get(_SAN_PROPERTY, ())]
    ids = [san for san in sans if workload_name(san) is not None]
    return ids[0] if len(ids) == 1 else None


@dataclass(frozen=True)
class CredentialFiles:
    """Where one workload's certificate chain, private key and CA bundle are (PEM)."""

    cert: Path
    key: Path
    ca: Path

    def fingerprint(self) -> tuple[tuple[int, int, int], ...]:
        """Changes whenever any of the three files is replaced or rewritten."""
        stats = (os.stat(path) for path in (self.cert, self.key, self.ca))
        return tuple((st.st_ino, st.st_mtime_ns, st.st_size) for st in stats)


@dataclass(frozen=True)
class Credentials:
    """The bytes of one consistent set of credential files."""

    cert: bytes
    key: bytes
    ca: bytes


def read_credentials(files: CredentialFiles) -> Credentials:
    """Reads the files and checks that the key belongs to the certificate.

    A renewal replaces key and certificate one after the other; a reader between
    the two sees a mismatch, raises, and is expected to keep what it had.
    """
    loaded = Credentials(files.cert.read_bytes(), files.key.read_bytes(), files.ca.read_bytes())
    try:
        cert = x509.load_pem_x509_certificate(loaded.cert)
        key = serialization.load_pem_private_key(loaded.key, password=None)
        x509.load_pem_x509_certificates(loaded.ca)
    except ValueError as exc:
        raise IdentityError(f"unreadable credentials in {files.cert.parent}") from exc
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if cert.public_key().public_bytes(der, public) != key.public_key().public_bytes(der, public):
        raise IdentityError(f"{files.key.name} does not belong to {files.cert.name}")
    return loaded


class CredentialSource(Protocol):
    """Where a workload's current credentials come from: files, or memory (certificates.py)."""

    def version(self) -> object:
        """A value that changes whenever the credentials do; cheap to ask."""
        ...

    def credentials(self) -> Credentials:
        """The current credentials; raises IdentityError or OSError when unusable."""
        ...


@dataclass(frozen=True)
class FileSource:
    """Credentials from files, as the control plane writes them for operators."""

    files: CredentialFiles

    def version(self) -> object:
        return self.files.fingerprint()

    def credentials(self) -> Credentials:
        return read_credentials(self.files)


def as_source(given: CredentialFiles | CredentialSource) -> CredentialSource:
    return FileSource(given) if isinstance(given, CredentialFiles) else given


def _server_config(creds: Credentials) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(creds.key, creds.cert)], creds.ca)


class ReloadingServerCredentials:
    """mTLS server credentials that follow their source: clients must present a
    certificate of the mesh CA; a renewed certificate is served from the next handshake."""

    def __init__(
        self, source: CredentialFiles | CredentialSource, *, require_client_auth: bool = True
    ) -> None:
        self._source = as_source(source)
        self._lock = threading.Lock()
        self._seen = self._source.version()
        self.credentials = grpc.dynamic_ssl_server_credentials(
            _server_config(self._source.credentials()),
            # gRPC documents None as "keep the current config"; types-grpcio omits it.
            cast("Callable[[], grpc.ServerCertificateConfiguration]", self._fetch),
            require_client_authentication=require_client_auth,
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's callback, once per new connection: a new config, or None to keep the old."""
        with self._lock:
            try:
                current = self._source.version()
                if current == self._seen:
                    return None
                config = _server_config(self._source.credentials())
            except (OSError, IdentityError) as exc:
                # Mid-renewal or a removed file: keep serving the last good certificate.
                log.warning("server credentials not reloaded", extra={"error": str(exc)})
                return None
            self._seen = current
        log.info("server credentials reloaded")
        return config


def channel_credentials(given: CredentialFiles | CredentialSource) -> grpc.ChannelCredentials:
    """Client mTLS credentials as they are now (fixed for a channel's life)."""
    creds = as_source(given).credentials()
    return grpc.ssl_channel_credentials(
        root_certificates=creds.ca, private_key=creds.key, certificate_chain=creds.cert
    )


ChannelFactory = Callable[[grpc.ChannelCredentials], grpc.Channel]


class ReloadingChannel(grpc.Channel):
    """The current channel for one target, rebuilt when the client's credentials change.

    `get()` is cheap (a version check) and is meant to be called per outbound call.
    As a `grpc.Channel` it does that itself: each multicallable it hands out is the
    current channel's, so under `grpc.intercept_channel` (which asks its channel for
    a multicallable on every call) each call goes on the newest channel. A replaced
    channel is closed `drain_seconds` later, on a later `get()` or `close()`, so calls
    already on it can finish (closing a gRPC channel cancels its calls). The unary
    multicallables it hands out are made once per method and channel: making one per
    call (what `grpc.intercept_channel` asks for) was ~2% of booking-svc's Python time.
    """

    def __init__(
        self,
        source: CredentialFiles | CredentialSource,
        factory: ChannelFactory,
        drain_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = as_source(source)
        self._factory = factory
        self._drain_seconds = drain_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._seen = self._source.version()
        self._channel = factory(channel_credentials(self._source))
        self._draining: list[tuple[float, grpc.Channel]] = []
        # unary_unary's arguments -> (the channel it was made on, the multicallable).
        self._unary: dict[tuple[Any, ...], tuple[grpc.Channel, Any]] = {}

    def get(self) -> grpc.Channel:
        with self._lock:
            self._close_drained(self._clock())
            try:
                current = self._source.version()
                if current != self._seen:
                    replacement = self._factory(channel_credentials(self._source))
                    self._draining.append((self._clock() + self._drain_seconds, self._channel))
                    self._channel, self._seen = replacement, current
                    log.info("client credentials reloaded")
            except (OSError, IdentityError) as exc:
                log.warning("client credentials not reloaded", extra={"error": str(exc)})
            return self._channel

    def close(self) -> None:
        with self._lock:
            self._close_drained(float("inf"))
            self._channel.close()

    # grpc.Channel, each method on the current channel.
    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self.get().subscribe(callback, try_to_connect=try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        self.get().unsubscribe(callback)

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        channel = self.get()
        key = (*args, *sorted(kwargs.items()))
        made = self._unary.get(key)
        if made is None or made[0] is not channel:
            made = (channel, channel.unary_unary(*args, **kwargs))
            # Dict assignment is atomic; a renewed channel replaces the entry.
            self._unary[key] = made
        return made[1]

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self.get().unary_stream(*args, **kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return self.get().stream_unary(*args, **kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self.get().stream_stream(*args, **kwargs)

    def __enter__(self) -> ReloadingChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _close_drained(self, now: float) -> None:
        keep = []
        for deadline, channel in self._draining:
            if deadline <= now:
                channel.close()
            else:
                keep.append((deadline, channel))
        self._draining = keep
