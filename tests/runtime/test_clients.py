"""Outbound calls through `clients.dial`: deadlines, request ids and metrics, on a real server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import pytest
from prometheus_client import CollectorRegistry

from airline.user.v1 import user_internal_pb2, user_internal_pb2_grpc, user_pb2
from services.runtime.clients import ANSWER_MARGIN_SECONDS, client_metrics, dial
from services.runtime.errors import Unavailable
from services.runtime.upstreams import UserClient
from tests.support import at_most_as_sent, serving_call, wait_for

SERVICE = "airline.user.v1.UserInternalService"


@dataclass
class Seen:
    """What the server saw of each call: its metadata and the time it had left."""

    metadata: list[dict[str, str]] = field(default_factory=list)
    time_remaining: list[float] = field(default_factory=list)
    batches: list[list[str]] = field(default_factory=list)
    request_ids: list[list[str]] = field(default_factory=list)  # LookupUsers' own field
    # LookupUsers answers once this is set (it is, unless a test holds a call in flight).
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.release.set()


class Users(user_internal_pb2_grpc.UserInternalServiceServicer):
    def __init__(self, seen: Seen) -> None:
        self._seen = seen

    def LookupUser(
        self, request: user_internal_pb2.LookupUserRequest, grpc_context: grpc.ServicerContext
    ) -> user_internal_pb2.LookupUserResponse:
        self._seen.metadata.append(dict(cast(Any, grpc_context.invocation_metadata())))
        self._seen.time_remaining.append(grpc_context.time_remaining())
        if request.user_id == "nobody":
            grpc_context.abort(grpc.StatusCode.NOT_FOUND, "no such user")
        return user_internal_pb2.LookupUserResponse(user=user_pb2.User(user_id=request.user_id))

    def LookupUsers(
        self, request: user_internal_pb2.LookupUsersRequest, grpc_context: grpc.ServicerContext
    ) -> user_internal_pb2.LookupUsersResponse:
        self._seen.metadata.append(dict(cast(Any, grpc_context.invocation_metadata())))
        self._seen.time_remaining.append(grpc_context.time_remaining())
        self._seen.batches.append(list(request.user_ids))
        self._seen.request_ids.append(list(request.request_ids))
        if "down" in request.user_ids:
            grpc_context.abort(grpc.StatusCode.UNAVAILABLE, "no healthy upstream")
        self._seen.release.wait(10)
        users = [
            user_pb2.User(user_id=user_id, active=not user_id.startswith("off"))
            for user_id in request.user_ids
            if user_id != "nobody"
        ]
        return user_internal_pb2.LookupUsersResponse(users=users)

    def VerifyPassword(
        self, request: user_internal_pb2.VerifyPasswordRequest, grpc_context: grpc.ServicerContext
    ) -> user_internal_pb2.VerifyPasswordResponse:
        grpc_context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def target(seen: Seen) -> Iterator[str]:
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    user_internal_pb2_grpc.add_UserInternalServiceServicer_to_server(Users(seen), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def lookup(channel: grpc.Channel, user_id: str) -> Any:
    stub = user_internal_pb2_grpc.UserInternalServiceStub(channel)
    return stub.LookupUser(user_internal_pb2.LookupUserRequest(user_id=user_id))


def test_outbound_calls_are_counted_with_py_grpc_prometheus_names(target: str) -> None:
    registry = CollectorRegistry()
    with dial(target, default_timeout=5, metrics=client_metrics(registry)) as channel:
        lookup(channel, "ada")
        lookup(channel, "ada")
        with pytest.raises(grpc.RpcError):
            lookup(channel, "nobody")
    labels = {"grpc_type": "UNARY", "grpc_service": SERVICE, "grpc_method": "LookupUser"}
    assert registry.get_sample_value("grpc_client_started_total", labels) == 3
    handled = "grpc_client_handled_total"
    assert registry.get_sample_value(handled, {**labels, "grpc_code": "OK"}) == 2
    assert registry.get_sample_value(handled, {**labels, "grpc_code": "NOT_FOUND"}) == 1


def test_a_call_made_while_serving_carries_its_request_id_within_its_deadline(
    target: str, seen: Seen
) -> None:
    with serving_call("req-7", seconds_left=1.0), dial(target, default_timeout=5) as channel:
        lookup(channel, "ada")
    assert seen.metadata[0]["x-request-id"] == "req-7"
    assert 0 < seen.time_remaining[0] <= at_most_as_sent(1.0 - ANSWER_MARGIN_SECONDS)


def test_a_call_made_outside_a_served_call_has_the_channels_default_timeout(
    target: str, seen: Seen
) -> None:
    with dial(target, default_timeout=2) as channel:
        lookup(channel, "ada")
    assert 1 < seen.time_remaining[0] <= at_most_as_sent(2)
    assert "x-request-id" not in seen.metadata[0]


def test_account_checks_asked_together_go_in_one_lookup_users_call(target: str, seen: Seen) -> None:
    """While one LookupUsers is in flight, the checks that arrive wait and go in the
    next one; each gets its own user's answer, the unknown user None."""
    registry = CollectorRegistry()
    users = UserClient(target, metrics=client_metrics(registry), timeout=5)
    try:
        seen.release.clear()
        with ThreadPoolExecutor(max_workers=8) as pool:
            first = pool.submit(users.active, "ada")
            wait_for(lambda: seen.batches, "the first call in flight")
            rest = {key: pool.submit(users.active, key) for key in ("bob", "off-cy", "nobody")}
            wait_for(lambda: users.checks_waiting == 3, "the checks waiting")
            seen.release.set()
            answers = {key: future.result(timeout=10) for key, future in rest.items()}
        assert first.result(timeout=10) is True
        assert answers == {"bob": True, "off-cy": False, "nobody": None}
        assert seen.batches == [["ada"], ["bob", "off-cy", "nobody"]]
        # What batching saves, for operators: keys per call (one call of 1, one of 3).
        labels = {"grpc_type": "UNARY", "grpc_service": SERVICE, "grpc_method": "LookupUsers"}
        count = registry.get_sample_value("mesh_client_batch_keys_count", labels)
        assert (count, registry.get_sample_value("mesh_client_batch_keys_sum", labels)) == (2, 4)
        bucket = {**labels, "le": "2.0"}
        assert registry.get_sample_value("mesh_client_batch_keys_bucket", bucket) == 1
    finally:
        users.channel.close()


def test_a_batched_lookup_names_every_request_it_answers(target: str, seen: Seen) -> None:
    """It goes under its first member's x-request-id and carries every member's request
    id, so user-svc logs each request it answered, not only the first."""

    def check_for(request_id: str, user_id: str) -> bool | None:
        with serving_call(request_id, seconds_left=5.0):
            return users.active(user_id)

    users = UserClient(target, metrics=None, timeout=5)
    try:
        seen.release.clear()
        with ThreadPoolExecutor(max_workers=4) as pool:
            first = pool.submit(check_for, "req-ada", "ada")
            wait_for(lambda: seen.batches, "the first call in flight")
            rest = [pool.submit(check_for, f"req-{key}", key) for key in ("bob", "cy")]
            wait_for(lambda: users.checks_waiting == 2, "the checks waiting")
            seen.release.set()
            assert [f.result(timeout=10) for f in (first, *rest)] == [True, True, True]
    finally:
        users.channel.close()
    assert seen.request_ids == [["req-ada"], ["req-bob", "req-cy"]]
    assert [m["x-request-id"] for m in seen.metadata] == ["req-ada", "req-bob"]


def test_an_account_check_user_svc_cannot_answer_fails_as_unavailable(target: str) -> None:
    users = UserClient(target, metrics=None, timeout=5)
    try:
        with pytest.raises(Unavailable):
            users.active("down")
        assert users.active("ada") is True
    finally:
        users.channel.close()


@pytest.mark.parametrize("user_id", ["", "x" * 65])
def test_an_id_no_user_can_have_is_nobody_without_asking(
    target: str, seen: Seen, user_id: str
) -> None:
    users = UserClient(target, metrics=None, timeout=5)
    try:
        assert users.active(user_id) is None
        assert seen.batches == []
    finally:
        users.channel.close()
