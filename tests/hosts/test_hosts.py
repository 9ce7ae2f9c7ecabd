"""The mesh across simulated hosts, as an operator tries it: a steady stream of bookings
and reads through every edge, each request retried once on another edge, while a whole
host dies and comes back and while the Consul leader dies; and a sign-in limit that
holds across edges. Timings go to the test report (record_property) and stdout."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import httpx
import psycopg
import pytest

from controlplane.ca import BUNDLE_FILE
from mesh.config import Ports
from tests.hosts.cluster import Cluster, NetnsClient, Outcome, Stream, wait_until

Record = Callable[[str, object], None]
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def account(cluster: Cluster, client: NetnsClient) -> dict[str, str]:
    """A user made through the first edge, its access token and email."""
    email = f"hosts-{uuid.uuid4().hex[:8]}@example.com"
    edge = cluster.edges[0]
    body = {"email": email, "password": PASSWORD, "display_name": "Hosts"}
    made = client.request(edge, "POST", "/v1/users", json=body)
    assert made.status_code == 201, made.text
    signed = client.request(
        edge, "POST", "/v1/auth/token", json={"email": email, "password": PASSWORD}
    )
    assert signed.status_code == 200, signed.text
    return {"email": email, "token": signed.json()["access_token"]}


@pytest.fixture(scope="module")
def flights(cluster: Cluster, client: NetnsClient) -> list[str]:
    """Twenty flights far from departure, so bookings spread and none runs out."""
    answer = client.request(
        cluster.edges[0], "GET", "/v1/flights?page_size=20&order_by=departure_time%20desc"
    )
    assert answer.status_code == 200, answer.text
    return [f["flight_id"] for f in answer.json()["flights"]]


@pytest.fixture
def stream(
    cluster: Cluster, client: NetnsClient, account: dict[str, str], flights: list[str]
) -> Iterator[Stream]:
    running = Stream(client, cluster.edges, account["token"], flights)
    running.start()
    try:
        wait_until(lambda: running.count() >= 20, "the stream to flow", 60)
        yield running
    finally:
        running.stopped.set()


def test_hosts_json_names_every_host_its_edge_and_consul(cluster: Cluster) -> None:
    hosts = cluster.document["hosts"]
    assert len(cluster.apps) == 3
    for host in hosts:
        assert set(host) >= {"name", "netns", "address", "consul", "roles"}
        assert host["address"].startswith("198.18.")
    database = cluster.host("db")
    assert "edge" not in database
    assert {"postgres", "redis"} <= set(database["roles"])
    for app in cluster.apps:
        assert app["edge"] == f"http://{app['address']}:8080"
        assert {"consul-server", "envoy", "booking-svc"} <= set(app["roles"])


def test_every_service_has_passing_instances_on_every_app_host(
    cluster: Cluster, consul_client: NetnsClient
) -> None:
    """hosts-up returns once every edge is healthy (one instance of each service known);
    the other hosts' instances pass their first checks soon after: polled, bounded."""
    token = cluster.secret("tokens", "operator.token")
    consul = cluster.apps[0]["consul"]
    everywhere = {app["address"] for app in cluster.apps}

    def everywhere_passing(name: str) -> bool:
        answer = consul_client.request(
            consul, "GET", f"/v1/health/service/{name}?passing", headers={"X-Consul-Token": token}
        )
        return {entry["Service"]["Address"] for entry in answer.json()} == everywhere

    for name in ("auth-svc", "user-svc", "booking-svc", "predict-svc"):
        wait_until(partial(everywhere_passing, name), f"{name} passing on every app host", 120)


def test_host_local_listeners_are_not_on_the_hosts_network(
    cluster: Cluster, client: NetnsClient
) -> None:
    """Envoy's admin and the rate limit service bind loopback; the edge binds the host."""
    address = cluster.apps[0]["address"]
    for port in (Ports().admin, Ports().ratelimit):
        with pytest.raises(httpx.ConnectError):
            client.request(f"http://{address}:{port}", "GET", "/")
    assert client.request(cluster.apps[0]["edge"], "GET", "/healthz").status_code == 200


def test_consul_api_reaches_other_machines_over_https_with_a_mesh_certificate_only(
    cluster: Cluster, client: NetnsClient, consul_client: NetnsClient
) -> None:
    """From the client machine: an agent's plain HTTP port at its address refuses the
    connection; its HTTPS port refuses a client without a mesh certificate and answers
    one with it (and the agent's certificate checks out against the mesh CA)."""
    for host in cluster.document["hosts"]:
        assert host["consul"] == f"https://{host['address']}:{Ports().consul_https}"
        with pytest.raises(httpx.ConnectError, match="refused"):
            client.request(f"http://{host['address']}:{Ports().consul_http}", "GET", "/")
        answer = consul_client.request(host["consul"], "GET", "/v1/status/leader")
        assert answer.status_code == 200
        assert answer.json() != ""
    anonymous = NetnsClient(
        cluster.client_ns,
        cluster.client_addresses[1],
        workers=1,
        verify=cluster.consul_tls(client_certificate=False),
    )
    try:
        for host in cluster.document["hosts"]:
            with pytest.raises(httpx.TransportError):
                anonymous.request(host["consul"], "GET", "/v1/status/leader")
    finally:
        anonymous.close()


def test_control_plane_follows_the_cluster_over_https_while_its_agent_is_down(
    cluster: Cluster, record_property: Record
) -> None:
    """host-3's agent stopped: its control plane reads another host's agent over HTTPS,
    so its Envoy still learns that host-1's user-svc instance left."""
    watcher, source = cluster.apps[2], cluster.apps[0]
    admin = NetnsClient(watcher["netns"], "127.0.0.1", workers=1)
    endpoint = f"user-svc::{source['address']}:"
    cluster.supervisorctl(watcher["name"], "stop", "consul")
    try:
        wait_until(lambda: endpoint in _clusters(admin), "host-3's Envoy to know the instance", 60)
        cluster.supervisorctl(source["name"], "stop", "user-svc:*")
        _, took = wait_until(
            lambda: endpoint not in _clusters(admin),
            "host-3's Envoy to drop host-1's user-svc with its agent down",
            60,
        )
        _report(record_property, "update_through_https_fallback_seconds", took)
        log = Path(watcher["var_dir"], "log").glob("controlplane*.log")
        switched = [line for path in log for line in path.read_text().splitlines()]
        assert any("consul agent switched" in line and "https://" in line for line in switched)
    finally:
        cluster.supervisorctl(source["name"], "start", "user-svc:*")
        cluster.supervisorctl(watcher["name"], "start", "consul")
        admin.close()


def _clusters(admin: NetnsClient) -> str:
    """host-3's Envoy's view of its upstream endpoints (its admin is on its loopback)."""
    admin_url = f"http://127.0.0.1:{Ports().admin}"
    return admin.request(admin_url, "GET", "/clusters").text


def test_sign_in_limit_counts_across_edges(
    cluster: Cluster, account: dict[str, str], record_property: Record
) -> None:
    """11 sign-ins from one address, alternating two edges: the 11th is 429."""
    other = NetnsClient(cluster.client_ns, cluster.client_addresses[1], workers=1)
    body = {"email": account["email"], "password": PASSWORD}
    try:
        statuses = [
            other.request(cluster.edges[n % 2], "POST", "/v1/auth/token", json=body).status_code
            for n in range(11)
        ]
    finally:
        other.close()
    record_property("sign_in_statuses", statuses)
    assert statuses == [200] * 10 + [429]


def test_killed_host_loses_no_request_and_rejoins_within_30_s(
    cluster: Cluster,
    client: NetnsClient,
    account: dict[str, str],
    stream: Stream,
    record_property: Record,
) -> None:
    victim = cluster.apps[1]
    before = stream.count()
    killed = cluster.cli("kill", victim["name"])
    assert killed.returncode == 0, killed.stdout + killed.stderr
    wait_until(lambda: stream.count() >= before + 60, "traffic with the host dead", 180)
    started = time.monotonic()
    back = cluster.cli("start", victim["name"])
    assert back.returncode == 0, back.stdout + back.stderr
    _, took = wait_until(
        lambda: _takes_traffic(client, victim["edge"], account["token"]),
        "the restarted host to take traffic",
        60,
    )
    rejoined = time.monotonic() - started
    after = stream.count()
    wait_until(lambda: stream.count() >= after + 20, "traffic with the host back", 120)
    outcomes = stream.stop()
    _report(record_property, "host_rejoined_seconds", rejoined)
    _report(record_property, "requests", len(outcomes))
    _report(record_property, "retried", sum(o.retried for o in outcomes))
    assert [o for o in outcomes if not o.ok] == []
    _assert_bookings_kept(client, cluster, outcomes)
    assert rejoined <= 30, f"rejoined after {rejoined:.1f} s (probe {took:.1f} s)"


def test_consul_leader_killed_writes_resume_within_5_s(
    cluster: Cluster,
    client: NetnsClient,
    consul_client: NetnsClient,
    stream: Stream,
    record_property: Record,
) -> None:
    master = cluster.secret("tokens", "bootstrap.token")
    leader = consul_client.request(cluster.apps[0]["consul"], "GET", "/v1/status/leader").json()
    host = cluster.by_address(leader.rpartition(":")[0])
    pid = int(cluster.supervisorctl(host["name"], "pid", "consul").strip())
    others = [app["consul"] for app in cluster.apps if app["name"] != host["name"]]
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    _, took = wait_until(
        lambda: _consul_write(consul_client, others, master),
        "a Consul write after the leader died",
        30,
    )
    _report(record_property, "consul_write_resumed_seconds", took)
    before = stream.count()
    wait_until(lambda: stream.count() >= before + 20, "traffic after the election", 120)
    outcomes = stream.stop()
    _report(record_property, "leader_kill_to_stream_end_seconds", time.monotonic() - killed_at)
    assert [o for o in outcomes if not o.ok] == []
    _assert_bookings_kept(client, cluster, outcomes)
    assert took <= 5, f"writes resumed after {took:.1f} s"


def _report(record_property: Record, name: str, value: float) -> None:
    record_property(name, round(value, 2))
    print(f"{name}: {value:.2f}")


def _takes_traffic(client: NetnsClient, edge: str, token: str) -> bool:
    """Its edge is healthy and a booking through it is acknowledged."""

    def probe() -> bool:
        http = client.http()
        try:
            if http.get(f"{edge}/healthz", timeout=2).status_code != 200:
                return False
            flights = http.get(f"{edge}/v1/flights?page_size=1", timeout=5)
            if flights.status_code != 200:
                return False
            body = {
                "flight_id": flights.json()["flights"][0]["flight_id"],
                "seat_class": "ECONOMY",
                "passenger_name": "Rejoin Probe",
                "request_id": f"rejoin-{uuid.uuid4().hex}",
            }
            headers = {"authorization": f"Bearer {token}"}
            booked = http.post(f"{edge}/v1/bookings", json=body, headers=headers, timeout=5)
        except httpx.HTTPError:
            return False
        return booked.status_code == 201

    return client.run(probe)


def _consul_write(client: NetnsClient, agents: list[str], master: str) -> bool:
    def probe() -> bool:
        for agent in agents:
            try:
                answer = client.http().put(
                    f"{agent}/v1/kv/hosts-test/{uuid.uuid4().hex}",
                    content=b"1",
                    headers={"X-Consul-Token": master},
                    timeout=1,
                )
            except httpx.HTTPError:
                continue
            if answer.status_code == 200 and answer.json() is True:
                return True
        return False

    return client.run(probe)


def _assert_bookings_kept(client: NetnsClient, cluster: Cluster, outcomes: list[Outcome]) -> None:
    """Every acknowledged booking is in PostgreSQL exactly once, under its request_id."""
    acknowledged = {o.request_id: o.booking_id for o in outcomes if o.kind == "book" and o.ok}
    assert acknowledged
    prefix = next(iter(acknowledged)).rpartition("-")[0]
    rows = _booking_rows(client, cluster, prefix)
    doubled = {rid: ids for rid, ids in rows.items() if len(ids) != 1}
    assert doubled == {}
    lost = {rid: bid for rid, bid in acknowledged.items() if rows.get(rid) != [bid]}
    assert lost == {}


def _booking_rows(client: NetnsClient, cluster: Cluster, prefix: str) -> dict[str, list[str]]:
    database = cluster.host("db")
    passfile = Path(database["var_dir"], "pg-secrets", "booking-svc.pgpass")

    def query() -> dict[str, list[str]]:
        with psycopg.connect(
            host=database["address"],
            port=Ports().postgres,
            dbname="booking_svc",
            user="booking_svc",
            passfile=str(passfile),
            connect_timeout=5,
            # As the services do: TLS, the server's certificate checked against the root.
            sslmode="verify-full",
            sslrootcert=str(Path(cluster.document["provision_dir"], "ca", BUNDLE_FILE)),
        ) as conn:
            found = conn.execute(
                "SELECT request_id, booking_id FROM bookings WHERE request_id LIKE %s",
                (f"{prefix}-%",),
            ).fetchall()
        rows: dict[str, list[str]] = {}
        for request_id, booking_id in found:
            rows.setdefault(request_id, []).append(booking_id)
        return rows

    # Opened from the client machine: the database host's address exists only there.
    return client.run(query)
