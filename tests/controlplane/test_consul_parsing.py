"""Reading Consul's answers: health aggregation, blocking-query indexes, backoff."""

import pytest

from controlplane.consul import Backoff, aggregate_status, next_index, parse_health
from controlplane.resources import CRITICAL, PASSING, WARNING, Instance


def entry(service_id: str, address: str, port: int, *statuses: str) -> dict[str, object]:
    """One element of /v1/health/service/<name>, as Consul 1.8 shapes it."""
    return {
        "Node": {"Node": "vm", "Address": "10.0.0.1"},
        "Service": {"ID": service_id, "Service": "user-svc", "Address": address, "Port": port},
        "Checks": [{"CheckID": f"c{i}", "Status": s} for i, s in enumerate(statuses)],
    }


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ((), PASSING),
        ((PASSING, PASSING), PASSING),
        ((PASSING, WARNING), WARNING),
        ((WARNING, CRITICAL, PASSING), CRITICAL),
    ],
)
def test_instance_status_is_its_worst_check(statuses: tuple[str, ...], expected: str) -> None:
    assert aggregate_status([{"Status": s} for s in statuses]) == expected


def test_health_entries_become_sorted_instances() -> None:
    instances, skipped = parse_health(
        [
            entry("u-2", "127.0.0.1", 2, PASSING, CRITICAL),
            entry("u-1", "127.0.0.1", 1, PASSING),
        ]
    )
    assert instances == (
        Instance("u-1", "127.0.0.1", 1, PASSING),
        Instance("u-2", "127.0.0.1", 2, CRITICAL),
    )
    assert skipped == []


def test_instance_without_service_address_uses_its_node_address() -> None:
    instances, _ = parse_health([entry("u-1", "", 1, PASSING)])
    assert instances[0].address == "10.0.0.1"


def test_instance_registered_by_host_name_is_left_out() -> None:
    """Envoy would reject the whole EDS update over one non-IP address."""
    instances, skipped = parse_health(
        [entry("named", "user.example", 1), entry("ok", "::1", 2, PASSING)]
    )
    assert [i.id for i in instances] == ["ok"]
    assert skipped == ["named"]


def test_index_moves_forward() -> None:
    assert next_index(10, 12) == 12
    assert next_index(12, 12) == 12


def test_index_that_goes_backwards_starts_over() -> None:
    assert next_index(500, 3) == 0


def test_index_is_never_below_one() -> None:
    assert next_index(0, 0) == 1


def test_backoff_grows_to_its_cap_and_resets() -> None:
    backoff = Backoff(initial=0.2, maximum=1.0)
    delays = [backoff.delay() for _ in range(6)]
    assert 0.1 <= delays[0] <= 0.2
    assert all(0.5 <= d <= 1.0 for d in delays[3:])
    backoff.reset()
    assert backoff.delay() <= 0.2
