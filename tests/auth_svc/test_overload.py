"""auth-svc passes user-svc's load shedding on: RESOURCE_EXHAUSTED with retry-after."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import grpc
import pytest

from airline.auth.v1 import auth_pb2, auth_pb2_grpc
from services.auth_svc import server as auth_server
from services.user_svc import server as user_server
from tests.conftest import address, channel_to, make_config, serving

COST = 13
FLOOD = 6


@pytest.fixture
def tokens(tmp_path: Path) -> Iterator[auth_pb2_grpc.AuthServiceStub]:
    """auth-svc in front of a user-svc with one CPU slot and no queue."""
    with ExitStack() as running:
        user = running.enter_context(
            serving(
                make_config("user-svc", cpu_slots=1, cpu_queue=0),
                partial(
                    user_server.build,
                    settings=user_server.UserConfig(
                        f"sqlite:///{tmp_path}/users.db", "127.0.0.1:1", COST
                    ),
                ),
            )
        )
        auth = running.enter_context(
            serving(
                make_config("auth-svc"),
                partial(
                    auth_server.build,
                    settings=auth_server.AuthConfig(f"sqlite:///{tmp_path}/auth.db", address(user)),
                ),
            )
        )
        yield auth_pb2_grpc.AuthServiceStub(running.enter_context(channel_to(auth)))


def _sign_in(tokens: auth_pb2_grpc.AuthServiceStub) -> tuple[grpc.StatusCode, dict[str, str]]:
    request = auth_pb2.CreateTokenRequest(
        email=f"{uuid.uuid4().hex[:10]}@example.com", password="not the password"
    )
    with pytest.raises(grpc.RpcError) as err:
        tokens.CreateToken(request, timeout=20)
    found = err.value
    metadata = [*(found.initial_metadata() or ()), *(found.trailing_metadata() or ())]  # type: ignore[attr-defined]
    return found.code(), {k: v for k, v in metadata if isinstance(v, str)}


def test_sign_ins_refused_by_a_busy_user_svc_are_resource_exhausted_with_retry_after(
    tokens: auth_pb2_grpc.AuthServiceStub,
) -> None:
    with ThreadPoolExecutor(FLOOD) as pool:
        answers = list(pool.map(lambda _: _sign_in(tokens), range(FLOOD)))

    codes = [code for code, _ in answers]
    assert set(codes) <= {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED}
    refused = [headers for code, headers in answers if code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert refused, codes
    assert all(int(h["retry-after"]) >= 1 for h in refused), refused
