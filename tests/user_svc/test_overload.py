"""A flood of bcrypt work is refused at once with RESOURCE_EXHAUSTED, never timed out."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import grpc
import pytest

from airline.user.v1 import user_pb2, user_pb2_grpc
from services.user_svc import server as user_server
from tests.conftest import channel_to, make_config, serving

# Expensive enough that one hash takes a good part of a second, so a flood queues.
COST = 13
FLOOD = 8
DEADLINE_SECONDS = 4.0


@pytest.fixture
def users(tmp_path: Path) -> Iterator[user_pb2_grpc.UserServiceStub]:
    """A user-svc with one CPU slot and room for many waiters in its queue."""
    settings = user_server.UserConfig(f"sqlite:///{tmp_path}/users.db", "127.0.0.1:1", COST)
    config = make_config("user-svc", cpu_slots=1, cpu_queue=16, max_workers=FLOOD + 2)
    build = partial(user_server.build, settings=settings)
    with serving(config, build) as server, channel_to(server) as channel:
        yield user_pb2_grpc.UserServiceStub(channel)


def _sign_up(users: user_pb2_grpc.UserServiceStub) -> tuple[grpc.StatusCode, dict[str, str]]:
    request = user_pb2.CreateUserRequest(
        email=f"{uuid.uuid4().hex[:10]}@example.com",
        password="correct horse battery",
        display_name="Flooder",
    )
    try:
        _, call = users.CreateUser.with_call(request, timeout=DEADLINE_SECONDS)
    except grpc.RpcError as err:
        metadata = [*(err.initial_metadata() or ()), *(err.trailing_metadata() or ())]  # type: ignore[attr-defined]
        return err.code(), {k: v for k, v in metadata if isinstance(v, str)}
    return grpc.StatusCode.OK, dict(call.initial_metadata())  # type: ignore[arg-type]


def test_concurrent_sign_ups_beyond_capacity_are_refused_with_retry_after_not_timed_out(
    users: user_pb2_grpc.UserServiceStub,
) -> None:
    with ThreadPoolExecutor(FLOOD) as pool:
        answers = list(pool.map(lambda _: _sign_up(users), range(FLOOD)))

    codes = [code for code, _ in answers]
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    refused = [headers for code, headers in answers if code != grpc.StatusCode.OK]
    assert all(int(h["retry-after"]) >= 1 for h in refused), refused
