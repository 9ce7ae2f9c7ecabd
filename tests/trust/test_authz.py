"""The mesh policy file: who may call what, decided from the caller's SPIFFE id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from envoy.service.ratelimit.v3 import rls_pb2
from google.api import annotations_pb2
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from airline.auth.v1 import auth_pb2
from airline.booking.v1 import booking_pb2
from airline.predict.v1 import predict_pb2
from airline.user.v1 import user_internal_pb2, user_pb2
from services.runtime.authz import (
    Policy,
    PolicyError,
    forwarded_identity,
    load_policy,
    parse_policy,
)

POLICY_FILE = Path(__file__).resolve().parents[2] / "mesh" / "policy.toml"
PUBLIC_FILES = (auth_pb2, booking_pb2, predict_pb2, user_pb2)
ALL_FILES = (*PUBLIC_FILES, user_internal_pb2, health_pb2, reflection_pb2, rls_pb2)
# Allowed so that a newer grpcurl falls back to v1alpha (see the policy file).
NOT_SERVED = {"grpc.reflection.v1.ServerReflection"}

USER_INTERNAL = "/airline.user.v1.UserInternalService"
VERIFY, LOOKUP = f"{USER_INTERNAL}/VerifyPassword", f"{USER_INTERNAL}/LookupUser"
LOOKUP_MANY = f"{USER_INTERNAL}/LookupUsers"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
# The edge's rate limit filter asks the rate limit service (ratelimit/): no HTTP rule.
SHOULD_RATE_LIMIT = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"


def svc(name: str) -> str:
    return f"spiffe://airline.local/svc/{name}"


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(POLICY_FILE)


@pytest.mark.parametrize(
    ("caller", "method", "allowed"),
    [
        (svc("auth-svc"), VERIFY, True),
        (svc("user-svc"), VERIFY, False),
        (svc("booking-svc"), VERIFY, False),
        (svc("predict-svc"), VERIFY, False),
        (svc("edge"), VERIFY, False),
        (svc("operator"), VERIFY, False),
        (svc("consul-health"), VERIFY, False),
        (svc("auth-svc"), LOOKUP, True),
        (svc("booking-svc"), LOOKUP, False),
        (svc("predict-svc"), LOOKUP, False),
        (svc("user-svc"), LOOKUP, False),
        (svc("edge"), LOOKUP, False),
        (svc("operator"), LOOKUP, False),
        # Every protected call's account check: batched, by the services that serve them.
        (svc("booking-svc"), LOOKUP_MANY, True),
        (svc("predict-svc"), LOOKUP_MANY, True),
        (svc("auth-svc"), LOOKUP_MANY, False),
        (svc("user-svc"), LOOKUP_MANY, False),
        (svc("edge"), LOOKUP_MANY, False),
        (svc("operator"), LOOKUP_MANY, False),
        (svc("booking-svc"), "/airline.predict.v1.PredictionService/Predict", True),
        (svc("user-svc"), "/airline.predict.v1.PredictionService/Predict", False),
        (svc("user-svc"), "/airline.auth.v1.AuthService/GetJwks", True),
        (svc("user-svc"), "/airline.auth.v1.AuthService/CreateToken", False),
        (svc("edge"), "/airline.auth.v1.AuthService/CreateToken", True),
        (svc("edge"), "/airline.booking.v1.BookingService/CreateBooking", True),
        (svc("edge"), "/airline.user.v1.UserService/DeleteUser", True),
        (svc("edge"), HEALTH_CHECK, False),
        (svc("edge"), REFLECTION, False),
        (svc("edge"), SHOULD_RATE_LIMIT, True),
        (svc("user-svc"), SHOULD_RATE_LIMIT, False),
        (svc("auth-svc"), SHOULD_RATE_LIMIT, False),
        (svc("operator"), SHOULD_RATE_LIMIT, False),
        (svc("consul-health"), SHOULD_RATE_LIMIT, False),
        (svc("consul-health"), HEALTH_CHECK, True),
        (svc("consul-health"), "/grpc.health.v1.Health/Watch", True),
        (svc("consul-health"), REFLECTION, False),
        (svc("consul-health"), "/airline.user.v1.UserService/GetUser", False),
        (svc("operator"), HEALTH_CHECK, True),
        (svc("operator"), REFLECTION, True),
        (svc("operator"), "/airline.user.v1.UserService/ListUsers", True),
        (svc("operator"), "/airline.booking.v1.BookingService/GetFlight", True),
        (svc("operator"), "/airline.user.v1.UserService/CreateUser", False),
        (svc("operator"), "/airline.booking.v1.BookingService/CancelBooking", False),
        (svc("operator"), "/airline.auth.v1.AuthService/CreateToken", False),
        # Unknown workloads, other trust domains, no identity, malformed ids: denied.
        (svc("mallory"), HEALTH_CHECK, False),
        ("spiffe://evil.local/svc/auth-svc", VERIFY, False),
        ("spiffe://airline.local/svc/auth-svc/extra", VERIFY, False),
        ("auth-svc", VERIFY, False),
        (None, HEALTH_CHECK, False),
        ("", HEALTH_CHECK, False),
        # Paths that only look like an allowed one.
        (svc("auth-svc"), VERIFY + "Twice", False),
        (svc("auth-svc"), VERIFY + "?x=1", False),
        (svc("operator"), "/airline.user.v1.UserService/Get/../../x", False),
        (svc("operator"), "/airline.user.v1.UserServiceX/GetUser", False),
    ],
)
def test_policy_allows_exactly_what_the_file_says(
    policy: Policy, caller: str | None, method: str, allowed: bool
) -> None:
    assert policy.allowed(caller, method) is allowed


def _methods(files: tuple[Any, ...]) -> dict[str, set[str]]:
    """gRPC paths of every method, by full service name, in the given generated files."""
    services: dict[str, set[str]] = {}
    for module in files:
        for service in module.DESCRIPTOR.services_by_name.values():
            services[service.full_name] = {
                f"/{service.full_name}/{m.name}" for m in service.methods
            }
    return services


def test_every_method_in_the_policy_names_a_real_service_and_method(policy: Policy) -> None:
    services = _methods(ALL_FILES)
    for rule in policy.rules.values():
        for pattern in rule.methods:
            service = pattern.path.split("/")[1]
            if service in NOT_SERVED:
                continue
            assert service in services, f"{rule.caller}: {pattern.text}"
            assert any(pattern.matches(m) for m in services[service]), pattern.text


def test_the_edge_may_call_only_methods_with_an_http_rule(policy: Policy) -> None:
    every = set().union(*_methods(ALL_FILES).values())
    edge = {m for m in every if policy.allowed(svc("edge"), m)} - {SHOULD_RATE_LIMIT}
    assert edge  # The edge reaches the public API at all.
    for method in edge:
        _, service, name = method.split("/")
        descriptor = descriptor_pool.Default().FindServiceByName(service).methods_by_name[name]
        assert descriptor.GetOptions().HasExtension(annotations_pb2.http), method


def test_forwarded_identity_is_believed_only_from_a_proxy(policy: Policy) -> None:
    xfcc = f'By={svc("edge")};Hash=ab12;Subject="O=airline-mesh,CN=x";URI={svc("auth-svc")}'
    assert policy.caller(svc("edge"), xfcc) == svc("auth-svc")
    assert policy.caller(svc("user-svc"), xfcc) == svc("user-svc")
    assert policy.caller(svc("edge"), None) == svc("edge")
    assert policy.caller(None, xfcc) is None


def test_forwarded_identity_is_the_last_element_with_one_uri() -> None:
    earlier = f"URI={svc('operator')}"
    assert forwarded_identity(f"{earlier},URI={svc('booking-svc')}") == svc("booking-svc")
    assert forwarded_identity(f"URI={svc('a')};URI={svc('b')}") is None
    assert forwarded_identity("URI=spiffe://evil.local/svc/auth-svc") is None
    assert forwarded_identity("Hash=ab12") is None
    assert forwarded_identity("") is None


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ({}, "at least one caller"),
        ({"callers": {"edge": {"why": "x", "methods": ["/a.B/C"]}}, "extra": 1}, "unknown keys"),
        ({"callers": {"Edge": {"why": "x", "methods": ["/a.B/C"]}}}, "workload name"),
        ({"callers": {"edge": {"methods": ["/a.B/C"]}}}, "why"),
        ({"callers": {"edge": {"why": "x", "methods": []}}}, "at least one method"),
        ({"callers": {"edge": {"why": "x", "methods": "/a.B/C"}}}, "list of strings"),
        ({"callers": {"edge": {"why": "x", "methods": ["/a.B/*/C"]}}}, "is not"),
        ({"callers": {"edge": {"why": "x", "methods": ["/*"]}}}, "is not"),
        ({"callers": {"edge": {"why": "x", "methods": ["a.B/C"]}}}, "is not"),
        ({"callers": {"edge": {"why": "x", "methods": ["/a.B/C"], "deny": []}}}, "unknown keys"),
        ({"proxies": ["mesh"], "callers": {"edge": {"why": "x", "methods": ["/a.B/C"]}}}, "not"),
    ],
)
def test_an_invalid_policy_is_refused_saying_why(raw: dict[str, Any], complaint: str) -> None:
    with pytest.raises(PolicyError, match=complaint):
        parse_policy(raw)


def test_an_unreadable_policy_file_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "policy.toml"
    broken.write_text("[callers.edge\n")
    with pytest.raises(PolicyError, match=r"policy\.toml"):
        load_policy(broken)
    with pytest.raises(PolicyError):
        load_policy(tmp_path / "missing.toml")
