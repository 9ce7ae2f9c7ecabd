"""contract/routes.py: the public routes as the descriptor set and the services say."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import yaml
from google.protobuf import descriptor_pb2

from contract.routes import (
    CREATED_METHODS,
    NO_CONTENT_METHODS,
    OPEN_METHODS,
    Contract,
    from_descriptor_set,
)
from envoy_bootstrap.render import Settings, write
from tests.contract.conftest import DESCRIPTOR, ROOT

PUBLIC = {
    "airline.auth.v1.AuthService",
    "airline.user.v1.UserService",
    "airline.booking.v1.BookingService",
    "airline.predict.v1.PredictionService",
}


def test_public_services_are_those_with_http_rules_and_never_the_internal_one(
    contract: Contract,
) -> None:
    assert set(contract.services) == PUBLIC
    assert all(r.service in PUBLIC for r in contract.routes)


def test_routes_are_api_md_paths_and_verbs(contract: Contract) -> None:
    found = {(r.verb, r.path) for r in contract.routes}
    assert ("post", "/v1/auth/token:refresh") in found
    assert ("patch", "/v1/users/{user_id}") in found
    assert ("post", "/v1/bookings/{booking_id}:cancel") in found
    assert ("post", "/v1/models/{model_id}:predict") in found
    assert len(contract.routes) == 19


def test_routes_carry_their_proto_comments(contract: Contract) -> None:
    cancel = next(r for r in contract.routes if r.method == "CancelBooking")
    assert cancel.comment.startswith("Cancels a booking and frees its seat.")
    assert contract.comment("airline.booking.v1.Flight.number").startswith("Carrier code")


def _servicer_calls(name: str) -> set[str]:
    """RPC methods of every servicer.py that call `<something>.<name>(...)`."""
    found = set()
    for path in (ROOT / "services").glob("*_svc/servicer.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                calls = [
                    n
                    for n in ast.walk(node)
                    if isinstance(n, ast.Call)
                    and isinstance(n.func, ast.Attribute)
                    and n.func.attr == name
                ]
                if calls:
                    found.add(node.name)
    return found


def test_created_and_no_content_methods_are_those_the_services_mark(contract: Contract) -> None:
    assert {m.split("/")[1] for m in CREATED_METHODS} == _servicer_calls("created")
    assert {m.split("/")[1] for m in NO_CONTENT_METHODS} == _servicer_calls("no_content")
    statuses = {r.method: r.success_status for r in contract.routes}
    assert statuses["CreateBooking"] == 201
    assert statuses["DeleteUser"] == 204
    assert statuses["CancelBooking"] == 200


def test_open_methods_are_those_the_edge_lets_in_without_a_token(
    contract: Contract, tmp_path: Path
) -> None:
    """The jwt_authn rules of the rendered bootstrap: allow_missing exactly for OPEN_METHODS."""
    out = tmp_path / "envoy.yaml"
    env = {
        "ENVOY_CONFIG": str(out),
        "ENVOY_DESCRIPTOR": str(DESCRIPTOR),
        "ENVOY_STATIC_CLUSTERS": ";".join(f"{s}=127.0.0.1:1" for s in contract.workloads),
    }
    write(Settings.from_env(env))
    bootstrap = yaml.safe_load(out.read_text())
    edge = bootstrap["static_resources"]["listeners"][0]
    manager = edge["filter_chains"][0]["filters"][0]["typed_config"]
    jwt = next(f for f in manager["http_filters"] if f["name"].endswith("jwt_authn"))
    rules = jwt["typed_config"]["rules"]

    def optional(grpc_path: str) -> bool:
        for rule in rules:
            match = rule["match"]
            if match.get("path") == grpc_path or grpc_path.startswith(match.get("prefix", "\0")):
                return "requires_any" in rule["requires"]
        raise AssertionError(f"no jwt_authn rule for {grpc_path}")

    methods = {f"{r.service}/{r.method}" for r in contract.routes}
    assert {m for m in methods if optional("/" + m)} == OPEN_METHODS


def test_workloads_are_named_after_their_packages_and_each_has_a_service_package(
    contract: Contract,
) -> None:
    assert set(contract.workloads) == {"auth-svc", "user-svc", "booking-svc", "predict-svc"}
    assert "airline.user.v1.UserInternalService" in contract.served_by("user-svc")
    assert "airline.user.v1.UserInternalService" not in contract.services
    for name in contract.workloads:
        assert (ROOT / "services" / name.replace("-", "_") / "__main__.py").is_file(), name


def test_the_mesh_policy_lets_the_edge_call_the_public_services_only(contract: Contract) -> None:
    policy = tomllib.loads((ROOT / "mesh" / "policy.toml").read_text())
    # And, as the rate limit filter's client, the rate limit service's one method.
    asks = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
    public = {f"/{s}/*" for s in contract.services}
    assert set(policy["callers"]["edge"]["methods"]) == public | {asks}


def _nested_file() -> descriptor_pb2.FileDescriptorProto:
    """Outer { Inner { Deepest; enum Mood }; enum Kind }, each with a leading comment."""
    file = descriptor_pb2.FileDescriptorProto(name="nest.proto", package="nest.v1")
    outer = file.message_type.add(name="Outer")
    outer.field.add(name="inner")
    inner = outer.nested_type.add(name="Inner")
    inner.nested_type.add(name="Deepest").field.add(name="depth")
    inner.enum_type.add(name="Mood").value.add(name="MOOD_UNSPECIFIED")
    outer.enum_type.add(name="Kind").value.add(name="KIND_UNSPECIFIED")
    file.enum_type.add(name="Top").value.add(name="TOP_UNSPECIFIED")
    paths = {
        (4, 0): "outer",
        (4, 0, 2, 0): "outer.inner",
        (4, 0, 3, 0): "inner",
        (4, 0, 3, 0, 3, 0): "deepest",
        (4, 0, 3, 0, 3, 0, 2, 0): "deepest.depth",
        (4, 0, 3, 0, 4, 0): "mood",
        (4, 0, 3, 0, 4, 0, 2, 0): "mood.unspecified",
        (4, 0, 4, 0): "kind",
        (5, 0): "top",
        (5, 0, 2, 0): "top.unspecified",
    }
    for path, text in paths.items():
        file.source_code_info.location.add(path=path, leading_comments=f" {text}\n")
    return file


def test_messages_and_enums_are_indexed_at_every_depth_with_their_comments() -> None:
    contract = from_descriptor_set(descriptor_pb2.FileDescriptorSet(file=[_nested_file()]))
    assert set(contract.messages) == {
        "nest.v1.Outer",
        "nest.v1.Outer.Inner",
        "nest.v1.Outer.Inner.Deepest",
    }
    assert set(contract.enums) == {"nest.v1.Outer.Inner.Mood", "nest.v1.Outer.Kind", "nest.v1.Top"}
    assert contract.comment("nest.v1.Outer.inner") == "outer.inner"
    assert contract.comment("nest.v1.Outer.Inner.Deepest") == "deepest"
    assert contract.comment("nest.v1.Outer.Inner.Deepest.depth") == "deepest.depth"
    assert contract.comment("nest.v1.Outer.Inner.Mood.MOOD_UNSPECIFIED") == "mood.unspecified"
    assert contract.comment("nest.v1.Outer.Kind") == "kind"
    assert contract.comment("nest.v1.Top.TOP_UNSPECIFIED") == "top.unspecified"
