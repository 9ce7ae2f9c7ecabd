"""Server start and graceful stop, the same for every service.

`serve()` is what a service's `__main__` calls: it builds the gRPC server with the
runtime's interceptors, health, reflection and a Prometheus endpoint, starts it,
and on SIGTERM or SIGINT stops it cleanly: health NOT_SERVING, wait for load
balancers to notice, finish in-flight calls, deregister, release resources, exit.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server
from sqlalchemy import Engine

from services.runtime import logs
from services.runtime.authn import TokenVerifier
from services.runtime.authz import Policy, load_policy
from services.runtime.certificates import CaEndpoint, WorkloadIdentity
from services.runtime.config import ConfigError, ServerConfig
from services.runtime.health import Check, HealthReporter
from services.runtime.identity import (
    CredentialFiles,
    CredentialSource,
    FileSource,
    IdentityError,
    ReloadingServerCredentials,
    spiffe_id,
)
from services.runtime.interceptors import Authorizer, ServerInterceptor
from services.runtime.metrics import ServerMetrics
from services.runtime.registration import ConsulRegistrar

log = logging.getLogger(__name__)


@dataclass
class ServiceDefinition:
    """What a service hands the runtime: its servicers, checks and resources."""

    service_names: Sequence[str]
    add_to_server: Callable[[grpc.Server], None]
    checks: Mapping[str, Check] = field(default_factory=dict)
    verifier: TokenVerifier | None = None
    close: Callable[[], None] = lambda: None


def releasing(engine: Engine, *channels: grpc.Channel) -> Callable[[], None]:
    """A `ServiceDefinition.close`: closes the channels, then the database pool."""

    def close() -> None:
        for channel in channels:
            channel.close()
        engine.dispose()

    return close


class Registrar(Protocol):
    """Announces an instance to service discovery (Consul) and withdraws it."""

    def register(self, port: int, metrics_port: int) -> None: ...

    def deregister(self) -> None: ...


class Builder(Protocol):
    """A service's `build`: its definition, with channels that present `identity` when given."""

    def __call__(
        self,
        config: ServerConfig,
        registry: CollectorRegistry,
        *,
        identity: CredentialSource | None = None,
    ) -> ServiceDefinition: ...


@dataclass(frozen=True)
class Trust:
    """How an instance serves in a mesh with a CA: its certificate and the policy."""

    identity: CredentialSource
    policy: Policy


class Server:
    """One running service instance."""

    def __init__(
        self,
        config: ServerConfig,
        definition: ServiceDefinition,
        registry: CollectorRegistry,
        registrar: Registrar | None = None,
        trust: Trust | None = None,
    ) -> None:
        self.config = config
        self._definition = definition
        self._registry = registry
        self._registrar = registrar
        self._trust = trust
        self._health = HealthReporter(
            definition.service_names, definition.checks, config.check_interval_seconds
        )
        self._grpc = self._build_grpc_server()
        self._metrics: Any = None
        self._stopped = threading.Event()
        self.port = 0
        self.metrics_port = 0

    def _build_grpc_server(self) -> grpc.Server:
        authorizer = None
        if self._trust is not None:
            own = spiffe_id(self.config.service_name)
            authorizer = Authorizer(self._trust.policy, own, self._registry)
        interceptor = ServerInterceptor(
            self._definition.verifier,
            authorizer=authorizer,
            metrics=ServerMetrics(self._registry),
        )
        server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=self.config.max_workers, thread_name_prefix="rpc"
            ),
            interceptors=[interceptor],
            maximum_concurrent_rpcs=self.config.max_concurrent_rpcs,
            options=[("grpc.so_reuseport", 0)],
        )
        self._definition.add_to_server(server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health.servicer, server)
        names = (
            *self._definition.service_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
        return server

    def start(self) -> None:
        cfg = self.config
        address = f"{cfg.host}:{cfg.port}"
        if self._trust is None:
            self.port = self._grpc.add_insecure_port(address)
        else:
            # Mutual TLS only: no plaintext port, clients need a mesh CA certificate.
            creds = ReloadingServerCredentials(self._trust.identity).credentials
            self.port = self._grpc.add_secure_port(address, creds)
        if self.port == 0:
            raise OSError(f"cannot bind {cfg.host}:{cfg.port}")
        self._metrics, _ = start_http_server(cfg.metrics_port, cfg.host, self._registry)
        self.metrics_port = self._metrics.server_port
        self._health.start()
        self._grpc.start()
        if self._registrar is not None:
            self._registrar.register(self.port, self.metrics_port)
        log.info(
            "serving",
            extra={"port": self.port, "metrics_port": self.metrics_port, "version": cfg.version},
        )

    def stop(self) -> None:
        """Graceful stop; safe to call twice."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("stopping", extra={"drain_seconds": self.config.drain_seconds})
        self._health.shutdown()
        # Envoy learns of NOT_SERVING through Consul's next check and the control
        # plane's next push; until then it may still send new calls here.
        threading.Event().wait(self.config.drain_seconds)
        self._grpc.stop(self.config.grace_seconds).wait()
        if self._registrar is not None:
            self._registrar.deregister()
        self._definition.close()
        if self._metrics is not None:
            self._metrics.shutdown()
            self._metrics.server_close()
        log.info("stopped")


def serve(config: ServerConfig, build: Builder) -> None:
    """Runs one instance until SIGTERM or SIGINT, then stops it gracefully.

    With CONSUL_HTTP_ADDR set the instance registers itself in Consul, checked
    through the gRPC health of its first service name.
    """
    logs.configure(
        config.service_name,
        config.log_level,
        file=config.log_file,
        max_bytes=config.log_max_bytes,
        backups=config.log_backups,
    )
    registry = CollectorRegistry()
    try:
        trust = _trust(config)
    except ConfigError as refused:
        log.error("not started", extra={"error": str(refused)})
        raise SystemExit(f"{config.service_name}: {refused}") from None
    # A builder without channels to other services (the rate limit service's) takes no identity.
    definition = (
        build(config, registry)
        if trust is None
        else build(config, registry, identity=trust.identity)
    )
    registrar = None
    if config.consul_addr:
        registrar = ConsulRegistrar(
            consul_addr=config.consul_addr,
            name=config.service_name,
            address=config.advertise_host,
            health_service=definition.service_names[0],
            version=config.version,
            instance_id=config.instance_id,
            check_interval_seconds=config.check_interval_seconds,
            token=config.consul_token,
            tls=trust is not None,
        )
    server = Server(config, definition, registry, registrar, trust)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop.set())
    server.start()
    stop.wait()
    server.stop()


NO_IDENTITY = (
    "no identity: set MESH_CA_ADDR and MESH_CA_FILE (a certificate from the mesh CA), or "
    "TLS_CERT_FILE, TLS_KEY_FILE and TLS_CA_FILE (files from `python -m controlplane.pki`), "
    "or INSECURE_PLAINTEXT=1 to serve plaintext with no authorization (development only)"
)


def _trust(config: ServerConfig) -> Trust | None:
    """This instance's certificate and the policy; None only when plaintext is asked for.

    From the mesh CA with MESH_CA_ADDR (`make up`), else from the TLS_*_FILE files (a
    service run alone), else plaintext if INSECURE_PLAINTEXT=1; with none of them the
    instance refuses to start (ConfigError), never silently serving without mutual TLS.
    """
    if config.mtls:
        policy = load_policy(Path(config.policy_file))
        endpoint = CaEndpoint(
            config.mesh_ca_addr, Path(config.mesh_ca_file).read_bytes(), config.consul_token
        )
        identity = WorkloadIdentity(endpoint, _ip_sans(config.advertise_host))
        identity.start()
        return Trust(identity, policy)
    if config.tls_files:
        return Trust(_file_identity(config), load_policy(Path(config.policy_file)))
    if config.insecure_plaintext:
        log.warning(
            "INSECURE_PLAINTEXT=1: serving PLAINTEXT with NO authorization; anyone who "
            "reaches this port may call every method. Development only, never in the mesh."
        )
        return None
    raise ConfigError(NO_IDENTITY)


def _file_identity(config: ServerConfig) -> FileSource:
    """The TLS_*_FILE credentials, checked now so a bad file stops the start, not a call."""
    files = CredentialFiles(
        Path(config.tls_cert_file), Path(config.tls_key_file), Path(config.tls_ca_file)
    )
    source = FileSource(files)
    try:
        source.credentials()
    except (OSError, IdentityError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise ConfigError(f"TLS_CERT_FILE, TLS_KEY_FILE, TLS_CA_FILE: {reason}") from None
    log.info("serving mutual TLS with the TLS_*_FILE certificate, reloaded when it changes")
    return source


def _ip_sans(host: str) -> list[str]:
    """The address Consul checks the instance at, when it is an IP (not a wildcard)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return []
    return [] if ip.is_unspecified else [str(ip)]
