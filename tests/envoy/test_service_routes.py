"""envoy_bootstrap/service_routes.py: the listeners' per-service routes, from contract/routes.py.

The rendered bootstrap is read the way Envoy routes: the first route whose match fits
the gRPC path wins.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from contract import routes
from contract.routes import Contract, from_descriptor_set, workload
from envoy_bootstrap import service_routes
from envoy_bootstrap.render import RenderError, Settings, edge_routing, render

ROOT = Path(__file__).resolve().parents[2]
DESCRIPTOR = ROOT / "generated" / "airline.pb"
INTERNAL = "/airline.user.v1.UserInternalService/VerifyPassword"


@pytest.fixture(scope="module")
def contract() -> Contract:
    return routes.load(DESCRIPTOR)


@pytest.fixture(scope="module")
def listeners(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Each listener's routes in the bootstrap rendered with the default settings."""
    out = tmp_path_factory.mktemp("bootstrap") / "envoy.yaml"
    document = yaml.safe_load(render(Settings(out=out, descriptor=DESCRIPTOR)))
    found = {}
    for listener in document["static_resources"]["listeners"]:
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        [host] = manager["route_config"]["virtual_hosts"]
        found[listener["name"]] = host["routes"]
    return found


def first_route(entries: list[dict[str, Any]], grpc_path: str) -> dict[str, Any]:
    """The route Envoy picks for `grpc_path`: the first whose path, prefix or regex fits."""
    for entry in entries:
        match = entry["match"]
        if "path" in match and match["path"] == grpc_path:
            return entry
        if "prefix" in match and grpc_path.startswith(match["prefix"]):
            return entry
        if "safe_regex" in match and re.fullmatch(match["safe_regex"]["regex"], grpc_path):
            return entry
    raise AssertionError(f"no route for {grpc_path}")


def cluster(entry: dict[str, Any]) -> str | None:
    name: str | None = entry.get("route", {}).get("cluster")
    return name


def test_every_public_method_goes_to_its_workload_on_the_edge(
    contract: Contract, listeners: dict[str, list[dict[str, Any]]]
) -> None:
    for route in contract.routes:
        entry = first_route(listeners["edge"], route.grpc_path)
        assert cluster(entry) == workload(route.service), route.name
        assert entry["route"]["max_stream_duration"]["max_stream_duration"] == "15s"


def test_a_method_of_no_public_service_gets_no_edge_route(
    listeners: dict[str, list[dict[str, Any]]],
) -> None:
    """UserInternalService has no HTTP rules: the edge answers it with the catch-all 404."""
    entry = first_route(listeners["edge"], INTERNAL)
    assert "route" not in entry
    assert entry["direct_response"]["status"] == 404
    assert not any(
        "UserInternalService" in str(e["match"]) for e in listeners["edge"] if "route" in e
    )


def test_every_service_goes_to_its_workload_on_the_mesh(
    contract: Contract, listeners: dict[str, list[dict[str, Any]]]
) -> None:
    assert "airline.user.v1.UserInternalService" in contract.all_services
    for service in contract.all_services:
        entry = first_route(listeners["mesh"], f"/{service}/AnyMethod")
        assert cluster(entry) == workload(service), service
    assert "direct_response" in first_route(listeners["mesh"], "/grpc.health.v1.Health/Check")


def test_rate_limited_methods_get_their_own_limit_and_no_other_method_does(
    contract: Contract, listeners: dict[str, list[dict[str, Any]]]
) -> None:
    for route in contract.routes:
        config = first_route(listeners["edge"], route.grpc_path)["typed_per_filter_config"]
        limiter = config.get("envoy.filters.http.local_ratelimit")
        if route.rate_limit is None:
            assert limiter is None, route.name
        else:
            assert limiter["stat_prefix"] == route.rate_limit, route.name
    assert set(routes.RATE_LIMITED_METHODS.values()) == {"create_token", "create_user"}


def test_only_the_methods_safe_to_run_twice_are_retried_on_a_reset(
    contract: Contract, listeners: dict[str, list[dict[str, Any]]]
) -> None:
    retried = set()
    for route in contract.routes:
        entry = first_route(listeners["edge"], route.grpc_path)
        policy = entry["route"].get("retry_policy")
        if policy and "reset" in policy["retry_on"].split(","):
            retried.add(route.name)
    assert retried == routes.RETRIED_ON_RESET_METHODS
    assert "airline.booking.v1.BookingService/CreateFlight" not in retried


def _cargo_file() -> descriptor_pb2.FileDescriptorProto:
    """A service the project does not have: airline.cargo.v1.CargoService, one GET route."""
    file = descriptor_pb2.FileDescriptorProto(name="airline/cargo/v1/cargo.proto")
    file.package = "airline.cargo.v1"
    file.message_type.add(name="GetShipmentRequest")
    file.message_type.add(name="Shipment")
    method = file.service.add(name="CargoService").method.add(name="GetShipment")
    method.input_type = ".airline.cargo.v1.GetShipmentRequest"
    method.output_type = ".airline.cargo.v1.Shipment"
    method.options.Extensions[annotations_pb2.http].get = "/v1/shipments/{shipment_id}"
    return file


def test_a_new_service_in_the_descriptor_set_gets_its_routes_and_nothing_else_changes(
    contract: Contract, listeners: dict[str, list[dict[str, Any]]]
) -> None:
    """Adding a service touches the protos only: the edge and the mesh route it."""
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR.read_bytes())
    files.file.append(_cargo_file())
    grown = from_descriptor_set(files)
    routing = edge_routing(Settings(descriptor=DESCRIPTOR))
    deadline = {"max_stream_duration": "15s", "grpc_timeout_header_max": "60s"}

    edge = service_routes.edge_routes(grown, routing)
    mesh = service_routes.mesh_routes(grown, deadline)

    path = "/airline.cargo.v1.CargoService/GetShipment"
    assert cluster(first_route(edge, path)) == "cargo-svc"
    assert cluster(first_route(mesh, path)) == "cargo-svc"
    assert [e for e in edge if e not in service_routes.edge_routes(contract, routing)] == [
        first_route(edge, path)
    ]
    assert len(mesh) == len(contract.all_services) + 1


def test_a_rate_limit_the_settings_do_not_know_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limited = {**routes.RATE_LIMITED_METHODS, "airline.user.v1.UserService/GetUser": "lookups"}
    monkeypatch.setattr(routes, "RATE_LIMITED_METHODS", limited)
    with pytest.raises(RenderError, match="lookups"):
        edge_routing(Settings(descriptor=DESCRIPTOR))
