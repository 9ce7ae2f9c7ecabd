"""Consul registration of a service instance, with a native gRPC health check.

Registers on start (retrying, bounded, while the local agent comes up) and
deregisters on stop. Consul checks `grpc.health.v1.Health/Check` for the
service's own name every interval; an instance that stays critical is removed
by Consul itself after `DeregisterCriticalServiceAfter`.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 2.0


class RegistrationError(RuntimeError):
    """The Consul agent refused or never answered the registration."""


def instance_id(name: str, address: str, port: int) -> str:
    """`user-svc-198.18.0.11-41234`; an IPv6 address's colons become dashes (Consul ids
    appear in URL paths)."""
    return f"{name}-{address.strip('[]').replace(':', '-')}-{port}"


@dataclass
class ConsulRegistrar:
    """Registers one instance of `name` with the Consul agent at `consul_addr`.

    The instance id is `instance_id` when set, else name-address-port: the advertised
    address is unique in the cluster (two hosts never share one), so the id is too,
    where a host name (`localhost` on every container) would not be.
    """

    consul_addr: str
    name: str
    address: str
    health_service: str
    version: str
    instance_id: str = ""
    check_interval_seconds: float = 2.0
    deregister_after: str = "1m"
    attempts: int = 10
    # The service's Consul ACL token: with ACLs on, it may register its own name only.
    token: str = field(default="", repr=False)
    # The instance serves mutual TLS: Consul checks it over TLS with its own certificate.
    tls: bool = False

    def register(self, port: int, metrics_port: int) -> None:
        if not self.instance_id:
            self.instance_id = instance_id(self.name, self.address, port)
        body = self.registration(port, metrics_port)
        wait = threading.Event()
        for attempt in range(1, self.attempts + 1):
            try:
                self._put("/v1/agent/service/register", body)
            except urllib.error.HTTPError as exc:
                if exc.code == 403:  # the token may not register this name: final
                    raise RegistrationError("consul refused the registration: HTTP 403") from exc
                if attempt == self.attempts:
                    raise RegistrationError(f"cannot register with Consul: {exc}") from exc
                log.warning("consul not ready", extra={"attempt": attempt, "error": str(exc)})
                wait.wait(min(0.2 * 2**attempt, 3.0))
            except (urllib.error.URLError, OSError) as exc:
                if attempt == self.attempts:
                    raise RegistrationError(f"cannot register with Consul: {exc}") from exc
                log.warning("consul not ready", extra={"attempt": attempt, "error": str(exc)})
                wait.wait(min(0.2 * 2**attempt, 3.0))
            else:
                log.info("registered", extra={"instance_id": self.instance_id, "port": port})
                return

    def deregister(self) -> None:
        try:
            self._put(f"/v1/agent/service/deregister/{self.instance_id}", None)
        except (urllib.error.URLError, OSError) as exc:
            # The critical check will remove us after deregister_after anyway.
            log.warning("deregistration failed", extra={"error": str(exc)})
        else:
            log.info("deregistered", extra={"instance_id": self.instance_id})

    def registration(self, port: int, metrics_port: int) -> dict[str, Any]:
        """The agent/service/register body for this instance."""
        return {
            "ID": self.instance_id,
            "Name": self.name,
            "Address": self.address,
            "Port": port,
            "Tags": ["grpc"],
            "Meta": {"version": self.version, "metrics_port": str(metrics_port)},
            "Check": {
                "CheckID": f"{self.instance_id}:grpc",
                "Name": f"gRPC health of {self.health_service}",
                "GRPC": f"{self.address}:{port}/{self.health_service}",
                "GRPCUseTLS": self.tls,
                "Interval": f"{self.check_interval_seconds:g}s",
                "Timeout": "1s",
                "DeregisterCriticalServiceAfter": self.deregister_after,
                # We register only once serving and SERVING, so that is the truth;
                # Consul's default (critical until the first run) would mark every
                # instance unhealthy for an interval each time the agent restarts
                # and restores its registrations, and Envoy would route nowhere.
                "Status": "passing",
            },
        }

    def _put(self, path: str, body: dict[str, Any] | None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        request = urllib.request.Request(
            f"http://{self.consul_addr}{path}",
            data=data,
            method="PUT",
            headers={
                "Content-Type": "application/json",
                **({"X-Consul-Token": self.token} if self.token else {}),
            },
        )
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:  # noqa: S310
            response.read()
