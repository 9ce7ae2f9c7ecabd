"""Watches Consul's catalog and each service's health with blocking queries.

One thread long-polls `/v1/catalog/services`; one thread per service long-polls
`/v1/health/service/<name>`. Each query carries the last `X-Consul-Index`, so it
returns as soon as something changes. When Consul is unreachable the last view is
kept (Envoy keeps routing to what it knew) and every query retries with bounded,
jittered backoff from index 0, so the view catches up the moment Consul is back.
The local agent is read over plain HTTP on loopback; another host's over HTTPS only,
with the mesh CA and a client certificate (the token must not cross hosts in clear).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import random
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from controlplane.config import ConfigError, ControlPlaneConfig
from controlplane.resources import CRITICAL, PASSING, WARNING, Instance

log = logging.getLogger(__name__)

Instances = tuple[Instance, ...]
OnChange = Callable[[Mapping[str, Instances]], None]


class ConsulUnavailable(RuntimeError):
    """Consul did not answer, or answered with something other than 200."""


class ConsulClient:
    """The two blocking reads the watcher needs, each with connect and read timeouts.

    With more than one agent configured, a read that cannot reach an agent, or that the
    agent answers with a server error (no leader, no path to the servers), is asked of
    the next one at once; the client stays with whichever answered. Raft indexes are the
    cluster's, not an agent's, so a blocking query's index holds on any agent.
    """

    def __init__(self, config: ControlPlaneConfig) -> None:
        self._wait = f"{config.wait_seconds:g}s"
        self._lock = threading.Lock()
        self._current = 0
        self._agents = [(addr, self._client(config, addr)) for addr in config.consul_agents]

    @staticmethod
    def _client(config: ControlPlaneConfig, url: str) -> httpx.Client:
        return httpx.Client(
            base_url=url,
            verify=_verify(config) if url.startswith("https://") else True,
            timeout=httpx.Timeout(
                config.read_timeout_seconds, connect=config.connect_timeout_seconds
            ),
            # One long poll per watched service is open at any time.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            # With ACLs on, reads need a token with service and node read.
            headers={"X-Consul-Token": config.consul_token} if config.consul_token else None,
        )

    @property
    def agent(self) -> str:
        """The agent asked first now: the last one that answered."""
        with self._lock:
            return self._agents[self._current][0]

    def get(self, path: str, index: int) -> tuple[Any, int]:
        """The JSON body of a blocking GET and its X-Consul-Index, from the first agent
        (starting at the current one) that answers."""
        with self._lock:
            start = self._current
        failures: list[str] = []
        for step in range(len(self._agents)):
            position = (start + step) % len(self._agents)
            addr, http = self._agents[position]
            try:
                answer = self._get_from(http, path, index)
            except ConsulUnavailable as exc:
                failures.append(f"{addr}: {exc}")
                continue
            self._switch_to(position, failures)
            return answer
        raise ConsulUnavailable("; ".join(failures))

    def _switch_to(self, position: int, failures: list[str]) -> None:
        with self._lock:
            moved, self._current = self._current != position, position
        if moved:
            log.warning(
                "consul agent switched",
                extra={"consul": self._agents[position][0], "failed": failures},
            )

    def _get_from(self, http: httpx.Client, path: str, index: int) -> tuple[Any, int]:
        params = {"wait": self._wait, "index": str(index)} if index else {}
        try:
            response = http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise ConsulUnavailable(f"{path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code != httpx.codes.OK:
            raise ConsulUnavailable(f"{path}: HTTP {response.status_code} {response.text[:200]}")
        try:
            return response.json(), int(response.headers.get("X-Consul-Index", "0"))
        except ValueError as exc:
            raise ConsulUnavailable(f"{path}: unreadable answer: {exc}") from exc

    def close(self) -> None:
        for _addr, http in self._agents:
            http.close()


def _verify(config: ControlPlaneConfig) -> ssl.SSLContext:
    if not (config.consul_ca_file and config.consul_cert_file and config.consul_key_file):
        raise ConfigError("an https:// Consul agent needs the CA, a client certificate and key")
    return consul_tls_context(
        config.consul_ca_file, config.consul_cert_file, config.consul_key_file
    )


def consul_tls_context(ca_file: Path, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A client context for an agent's HTTPS API: its certificate checked against the
    mesh CA and the address dialled, ours shown (verify_incoming_https asks for it)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


def next_index(previous: int, returned: int) -> int:
    """The index for the next query, by Consul's rules for blocking queries.

    An index that went backwards means Consul's state was reset (a restarted dev
    agent, a snapshot restore): start over. It is never below 1, or the next query
    would not block at all.
    """
    if returned < previous:
        return 0
    return max(returned, 1)


def aggregate_status(checks: list[dict[str, Any]]) -> str:
    """The worst status among an instance's checks, node checks included."""
    statuses = {check.get("Status", CRITICAL) for check in checks}
    if CRITICAL in statuses:
        return CRITICAL
    if WARNING in statuses:
        return WARNING
    return PASSING


def parse_health(entries: list[dict[str, Any]]) -> tuple[Instances, list[str]]:
    """Instances from `/v1/health/service/<name>`, and the ids of those left out.

    Envoy's EDS takes IP addresses only and rejects an update with anything else,
    so an instance registered under a host name is left out rather than blocking
    the updates of every other instance.
    """
    instances: list[Instance] = []
    skipped: list[str] = []
    for entry in entries:
        service = entry.get("Service", {})
        address = service.get("Address") or entry.get("Node", {}).get("Address", "")
        instance_id = str(service.get("ID", ""))
        try:
            ipaddress.ip_address(address)
        except ValueError:
            skipped.append(instance_id)
            continue
        status = aggregate_status(entry.get("Checks", []))
        instances.append(Instance(instance_id, address, int(service.get("Port", 0)), status))
    return tuple(sorted(instances)), skipped


@dataclass
class Backoff:
    """Exponential, capped and jittered, so a Consul outage is neither hammered nor
    waited out longer than `maximum`."""

    initial: float
    maximum: float
    _next: float = field(default=0.0, init=False)

    def delay(self) -> float:
        self._next = min(self.maximum, self._next * 2 if self._next else self.initial)
        return self._next / 2 + random.uniform(0, self._next / 2)

    def reset(self) -> None:
        self._next = 0.0


@dataclass
class _ServiceWatch:
    name: str
    stopped: threading.Event = field(default_factory=threading.Event)
    instances: Instances | None = None  # None until Consul answered once.
    skipped: list[str] = field(default_factory=list)


class ConsulWatcher:
    """Keeps a view (service -> instances) in step with Consul; calls `on_change`
    with every new view, in order, from its own threads.

    The first view is published only once every service in the catalog has been
    read, so Envoy never sees a cluster before its endpoints exist.
    """

    def __init__(
        self, config: ControlPlaneConfig, on_change: OnChange, client: ConsulClient | None = None
    ) -> None:
        self._config = config
        self._on_change = on_change
        self._client = client or ConsulClient(config)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._watches: dict[str, _ServiceWatch] = {}
        self._catalog_seen = False
        self._published: dict[str, Instances] | None = None
        self._reachable = True
        self._settle_until = 0.0
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        with self._lock:
            self._spawn("catalog", self._watch_catalog)

    def stop(self, timeout: float = 1.0) -> None:
        """Stops watching, waiting up to `timeout` for threads in a blocking read.

        A thread still waiting on Consul after that is a daemon: its answer is
        dropped and it dies with the process, so the client stays open for it.
        """
        self._stopped.set()
        with self._lock:
            for watch in self._watches.values():
                watch.stopped.set()
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in threads):
            log.debug("watcher threads still in a blocking read at exit")
            return
        self._client.close()

    def view(self) -> dict[str, Instances] | None:
        """The last published view, or None before Consul answered."""
        with self._lock:
            return None if self._published is None else dict(self._published)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        """Starts a watch thread. Caller holds the lock."""
        thread = threading.Thread(target=target, name=f"consul-{name}", daemon=True)
        # Watches of services that left the catalog have ended; forget them.
        self._threads = [alive for alive in self._threads if alive.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _watch_catalog(self) -> None:
        index, backoff = 0, self._backoff()
        while not self._stopped.is_set():
            try:
                services, returned = self._client.get("/v1/catalog/services", index)
            except ConsulUnavailable as exc:
                index = 0
                self._retry_later(backoff, self._stopped, exc)
                continue
            self._answered(backoff)
            index = next_index(index, returned)
            self._set_services(set(services) - self._config.exclude)

    def _watch_service(self, watch: _ServiceWatch) -> None:
        path = f"/v1/health/service/{urllib.parse.quote(watch.name, safe='')}"
        index, backoff = 0, self._backoff()
        while not (self._stopped.is_set() or watch.stopped.is_set()):
            try:
                (instances, skipped), returned = self._read_health(path, index)
            except ConsulUnavailable as exc:
                index = 0
                self._retry_later(backoff, watch.stopped, exc)
                continue
            self._answered(backoff)
            index = next_index(index, returned)
            if skipped != watch.skipped:  # Once per change, not once per long poll.
                watch.skipped = skipped
                log.warning(
                    "instances without an IP address left out",
                    extra={"consul_service": watch.name, "instance_ids": skipped},
                )
            with self._lock:
                if self._watches.get(watch.name) is watch:
                    watch.instances = instances
                    self._publish()

    def _read_health(self, path: str, index: int) -> tuple[tuple[Instances, list[str]], int]:
        entries, returned = self._client.get(path, index)
        try:
            return parse_health(entries), returned
        except (AttributeError, TypeError, ValueError) as exc:
            # Treated like an outage: keep the last view, retry, log it.
            raise ConsulUnavailable(f"{path}: unexpected answer: {exc!r}") from exc

    def _set_services(self, names: set[str]) -> None:
        with self._lock:
            if self._stopped.is_set():
                return
            for name in set(self._watches) - names:
                self._watches.pop(name).stopped.set()
            for name in names - set(self._watches):
                watch = _ServiceWatch(name)
                self._watches[name] = watch
                self._spawn(name, functools.partial(self._watch_service, watch))
            self._catalog_seen = True
            self._publish()

    def _publish(self) -> None:
        """Calls on_change when the view changed. Caller holds the lock."""
        if not self._catalog_seen or time.monotonic() < self._settle_until:
            return
        pending = [name for name, watch in self._watches.items() if watch.instances is None]
        if self._published is None and pending:
            return
        view: dict[str, Instances] = dict.fromkeys(self._config.required, ())
        for name, watch in self._watches.items():
            if watch.instances is not None:
                view[name] = watch.instances
        if view == self._published:
            return
        self._published = view
        self._on_change(dict(view))

    def _backoff(self) -> Backoff:
        return Backoff(self._config.backoff_initial_seconds, self._config.backoff_max_seconds)

    def _retry_later(self, backoff: Backoff, stopped: threading.Event, exc: Exception) -> None:
        delay = backoff.delay()
        with self._lock:
            first, self._reachable = self._reachable, False
        # One line when Consul goes away, not one per thread per retry.
        level = logging.WARNING if first else logging.DEBUG
        log.log(
            level,
            "consul unreachable, keeping the last view",
            extra={"error": str(exc), "retry_in_seconds": round(delay, 2)},
        )
        stopped.wait(delay)

    def _answered(self, backoff: Backoff) -> None:
        backoff.reset()
        with self._lock:
            recovered, self._reachable = not self._reachable, True
        if recovered:
            settle = self._config.recovery_settle_seconds
            log.info("consul reachable again", extra={"settle_seconds": settle})
            self._settle(settle)

    def _settle(self, seconds: float) -> None:
        """Holds the last view for `seconds`, then publishes whatever Consul says then.

        A restarted agent answers before it has re-synced its services into the
        catalog; publishing that half-empty view would leave Envoy no endpoints.
        An agent that flaps again starts a later period while this one runs: this
        thread then only tries to publish at its own deadline, which `_publish` refuses
        while the later period holds, and never moves the deadline back; the later
        period's own thread publishes at its end.
        """
        with self._lock:
            deadline = time.monotonic() + seconds
            self._settle_until = deadline

        def publish_at_deadline() -> None:
            # Event.wait may return a hair before the monotonic deadline, when
            # `_publish` would still refuse and nothing else might publish.
            while (left := deadline - time.monotonic()) > 0:
                if self._stopped.wait(left):
                    return
            with self._lock:
                if not self._stopped.is_set():
                    self._publish()

        with self._lock:
            self._spawn("settle", publish_at_deadline)
