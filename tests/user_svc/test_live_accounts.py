"""user-svc refuses the still-valid tokens of deleted and deactivated accounts at once."""

from __future__ import annotations

from google.protobuf import field_mask_pb2
from grpc import StatusCode

from airline.user.v1 import user_pb2
from tests.conftest import Stack
from tests.live_accounts import deactivate, delete, refusal


def test_a_deleted_users_token_is_unauthenticated_on_the_next_call(stack: Stack) -> None:
    me = stack.sign_up()
    delete(stack, me)

    code = refusal(
        lambda: stack.users.GetUser(
            user_pb2.GetUserRequest(user_id="me"), metadata=me.auth, timeout=10
        )
    )

    assert code == StatusCode.UNAUTHENTICATED


def test_a_deactivated_user_cannot_read_itself(stack: Stack) -> None:
    me = stack.sign_up()
    deactivate(stack, me)

    code = refusal(
        lambda: stack.users.GetUser(
            user_pb2.GetUserRequest(user_id="me"), metadata=me.auth, timeout=10
        )
    )

    assert code == StatusCode.PERMISSION_DENIED


def test_a_deactivated_user_cannot_delete_itself_and_its_email_stays_taken(stack: Stack) -> None:
    me = stack.sign_up()
    deactivate(stack, me)

    code = refusal(
        lambda: stack.users.DeleteUser(
            user_pb2.DeleteUserRequest(user_id="me"), metadata=me.auth, timeout=10
        )
    )
    again = refusal(
        lambda: stack.users.CreateUser(
            user_pb2.CreateUserRequest(
                email=me.user.email, password=me.password, display_name="Back again"
            ),
            timeout=10,
        )
    )

    assert code == StatusCode.PERMISSION_DENIED
    assert again == StatusCode.ALREADY_EXISTS


def test_a_deactivated_user_cannot_reactivate_itself(stack: Stack) -> None:
    me = stack.sign_up()
    deactivate(stack, me)
    request = user_pb2.UpdateUserRequest(
        user=user_pb2.User(user_id=me.user.user_id, active=True),
        update_mask=field_mask_pb2.FieldMask(paths=["active"]),
    )

    code = refusal(lambda: stack.users.UpdateUser(request, metadata=me.auth, timeout=10))
    assert stack.admin is not None
    still = stack.users.GetUser(
        user_pb2.GetUserRequest(user_id=me.user.user_id), metadata=stack.admin.auth, timeout=10
    )

    assert code == StatusCode.PERMISSION_DENIED
    assert still.active is False
