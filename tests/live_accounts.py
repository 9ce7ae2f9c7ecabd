"""Helpers for tests of deleted and deactivated accounts whose access tokens still live."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from google.protobuf import field_mask_pb2

from airline.user.v1 import user_pb2
from tests.conftest import Account, Stack


def deactivate(stack: Stack, account: Account) -> None:
    """The admin sets `account` inactive; its access token stays unexpired."""
    assert stack.admin is not None
    stack.users.UpdateUser(
        user_pb2.UpdateUserRequest(
            user=user_pb2.User(user_id=account.user.user_id, active=False),
            update_mask=field_mask_pb2.FieldMask(paths=["active"]),
        ),
        metadata=stack.admin.auth,
        timeout=10,
    )


def delete(stack: Stack, account: Account) -> None:
    """`account` deletes itself; its access token stays unexpired."""
    stack.users.DeleteUser(
        user_pb2.DeleteUserRequest(user_id="me"), metadata=account.auth, timeout=10
    )


def refusal(call: Callable[[], object]) -> grpc.StatusCode:
    """The code `call` fails with; the test fails if it succeeds."""
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()
