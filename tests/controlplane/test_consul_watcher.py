"""The watcher against a real Consul agent: what it sees, and how it rides out an outage."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from controlplane.consul import ConsulWatcher, Instances
from controlplane.resources import CRITICAL, PASSING
from tests.consul import ConsulAgent, control_plane_config
from tests.controlplane.conftest import GrpcInstance, unique_name
from tests.support import wait_for

pytestmark = pytest.mark.slow


def start_watcher(consul_addr: str, **overrides: object) -> ConsulWatcher:
    def ignore(_view: object) -> None:
        """Tests read the watcher's last published view instead."""

    watcher = ConsulWatcher(control_plane_config(consul_addr, **overrides), ignore)
    watcher.start()
    return watcher


@pytest.fixture
def watch(consul: ConsulAgent) -> Iterator[Callable[..., ConsulWatcher]]:
    started: list[ConsulWatcher] = []

    def start(**overrides: object) -> ConsulWatcher:
        started.append(start_watcher(consul.http_addr, **overrides))
        return started[-1]

    try:
        yield start
    finally:
        for watcher in started:
            watcher.stop(timeout=5.0)


def instances_of(watcher: ConsulWatcher, name: str) -> Instances | None:
    view = watcher.view()
    return None if view is None else view.get(name)


def statuses(watcher: ConsulWatcher, name: str) -> list[tuple[int, str]]:
    return [(i.port, i.status) for i in instances_of(watcher, name) or ()]


def test_view_has_each_instance_with_its_check_status(
    consul: ConsulAgent,
    watch: Callable[..., ConsulWatcher],
    instances: Callable[[], GrpcInstance],
) -> None:
    watcher = watch()
    name, up, down = unique_name("status"), instances(), instances()
    down.serving(False)
    consul.register(name, f"{name}-up", up.port)
    consul.register(name, f"{name}-down", down.port)
    expected = sorted([(up.port, PASSING), (down.port, CRITICAL)])
    wait_for(lambda: sorted(statuses(watcher, name)) == expected, "both statuses in the view")


def test_consul_itself_is_not_a_service_to_route_to(
    watch: Callable[..., ConsulWatcher],
) -> None:
    watcher = watch()
    view = wait_for(watcher.view, "the first view")
    assert "consul" not in view


def test_required_service_is_in_the_view_before_any_instance_registers(
    watch: Callable[..., ConsulWatcher],
) -> None:
    name = unique_name("required")
    watcher = watch(required=frozenset({name}))
    assert wait_for(watcher.view, "the first view")[name] == ()


def test_consul_outage_keeps_the_last_view_and_catches_up_when_it_returns(
    consul_binary: str,
    tmp_path: Path,
    instances: Callable[[], GrpcInstance],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="controlplane")
    agent = ConsulAgent(consul_binary, tmp_path / "consul")
    agent.start()
    watcher = start_watcher(agent.http_addr)
    try:
        before, after = instances(), instances()
        agent.register("outage-svc", "outage-1", before.port)
        wait_for(lambda: statuses(watcher, "outage-svc") == [(before.port, PASSING)], "first view")

        agent.stop()
        wait_for(lambda: any(r.getMessage() == "consul unreachable, keeping the last view"
                             for r in caplog.records), "the watcher to notice")  # fmt: skip
        assert statuses(watcher, "outage-svc") == [(before.port, PASSING)]

        # The agent restores its own registrations from its data dir; the new one is news.
        agent.start()
        agent.register("outage-svc", "outage-2", after.port)
        both = sorted([(before.port, PASSING), (after.port, PASSING)])
        wait_for(lambda: sorted(statuses(watcher, "outage-svc")) == both, "the catch-up")
        assert any(r.getMessage() == "consul reachable again" for r in caplog.records)
    finally:
        watcher.stop(timeout=5.0)
        agent.stop()


class _Stamps(logging.Handler):
    """When (monotonic) each message was logged: emitted in the logging thread itself."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.at: dict[str, float] = {}
        self.every: dict[str, list[float]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        now = time.monotonic()
        self.at.setdefault(record.getMessage(), now)
        self.every.setdefault(record.getMessage(), []).append(now)

    def first_after(self, message: str, since: float) -> float | None:
        """When `message` was first logged after `since`, or None if it was not yet."""
        return next((at for at in self.every.get(message, []) if at > since), None)


UNREACHABLE = "consul unreachable, keeping the last view"
RECOVERED = "consul reachable again"
SETTLE_SECONDS = 15.0


@contextmanager
def settling(
    consul_binary: str, tmp_path: Path, settle_seconds: float
) -> Iterator[tuple[ConsulAgent, ConsulWatcher, _Stamps]]:
    """An agent of the test's own (to restart), a watcher with this settle period, and
    the times the watcher logged each message."""
    stamps = _Stamps()
    logger = logging.getLogger("controlplane.consul")
    logger.addHandler(stamps)
    level, logger.level = logger.level, logging.DEBUG
    agent = ConsulAgent(consul_binary, tmp_path / "consul")
    agent.start()
    watcher = start_watcher(agent.http_addr, recovery_settle_seconds=settle_seconds)
    try:
        yield agent, watcher, stamps
    finally:
        watcher.stop(timeout=5.0)
        agent.stop()
        logger.removeHandler(stamps)
        logger.setLevel(level)


def serving_one(
    agent: ConsulAgent, watcher: ConsulWatcher, instance: GrpcInstance, service: str, id_: str
) -> None:
    """Registers `instance` as `service` and waits until the watcher's view has it passing."""
    agent.register(service, id_, instance.port)
    wait_for(lambda: statuses(watcher, service) == [(instance.port, PASSING)], "the first view")


def removed_no_sooner_than(
    watcher: ConsulWatcher, service: str, recovered: float, settle_seconds: float
) -> None:
    """Waits until `service` leaves the view; fails if it left before the settle period
    that began at `recovered` ended (without settling it leaves in milliseconds)."""
    wait_for(
        lambda: not statuses(watcher, service),
        "the removal after settling",
        settle_seconds + 30,
    )
    assert time.monotonic() >= recovered + settle_seconds, "the view changed too soon"


def test_after_an_outage_the_last_view_stands_for_the_settle_period(
    consul_binary: str, tmp_path: Path, instances: Callable[[], GrpcInstance]
) -> None:
    """A restarted agent may answer before its services are back in the catalog."""
    with settling(consul_binary, tmp_path, SETTLE_SECONDS) as (agent, watcher, stamps):
        serving_one(agent, watcher, instances(), "settle-svc", "settle-1")
        agent.stop()
        # Only an outage the watcher saw starts a settle period.
        wait_for(lambda: UNREACHABLE in stamps.at, "the watcher to notice the outage", 30)
        agent.start()
        # What a not-yet-resynced catalog looks like: the instance is gone.
        agent.deregister("settle-1")
        deregistered = time.monotonic()
        back = wait_for(lambda: stamps.at.get(RECOVERED), "the recovery", 30)
        # The settle period is long against the agent's restart; if this machine took
        # longer than it to deregister, the test below would prove nothing.
        assert deregistered < back + SETTLE_SECONDS, "deregistered only after the settle period"
        # Not before the period that started when the watcher reached Consul again.
        removed_no_sooner_than(watcher, "settle-svc", back, SETTLE_SECONDS)


# Two agent restarts take about a second here; the second must fit in the first period.
LONG_SETTLE_SECONDS = 20.0


def test_a_second_recovery_inside_the_settle_period_holds_the_view_for_its_own_period(
    consul_binary: str, tmp_path: Path, instances: Callable[[], GrpcInstance]
) -> None:
    """An agent that flaps twice: the first period's end must not cut the second short."""
    with settling(consul_binary, tmp_path, LONG_SETTLE_SECONDS) as (agent, watcher, stamps):

        def restart(since: float) -> float:
            """Stops and starts the agent once the watcher saw it go; when it saw it back."""
            agent.stop()
            gone = wait_for(lambda: stamps.first_after(UNREACHABLE, since), "the outage", 30)
            agent.start()
            return wait_for(lambda: stamps.first_after(RECOVERED, gone), "the recovery", 30)

        serving_one(agent, watcher, instances(), "flap-svc", "flap-1")
        first = restart(time.monotonic())
        # News held by the first period; the agent does not restore it on the next start.
        agent.deregister("flap-1")
        second = restart(first)
        assert second < first + LONG_SETTLE_SECONDS, "second recovery after the first period"
        # The first period's end must not publish: the second's own period holds.
        removed_no_sooner_than(watcher, "flap-svc", second, LONG_SETTLE_SECONDS)
