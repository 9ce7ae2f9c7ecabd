"""UserService and UserInternalService over gRPC, against real servers and SQLite."""

from __future__ import annotations

import logging
import uuid
from functools import partial

import grpc
import pytest
from google.protobuf import field_mask_pb2

from airline.user.v1 import user_internal_pb2, user_pb2, user_pb2_grpc
from services.runtime.errors import field_violations
from services.user_svc import server as user_server
from tests.conftest import Stack, channel_to, make_config, serving

PASSWORD = "correct horse battery"


def _code(call: object, *args: object, **kwargs: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call(*args, timeout=10, **kwargs)  # type: ignore[operator]
    return err.value.code()


def _email() -> str:
    return f"{uuid.uuid4().hex[:10]}@Example.COM"


def test_create_user_returns_the_user_with_a_created_location(stack: Stack) -> None:
    email = _email()
    user, call = stack.users.CreateUser.with_call(
        user_pb2.CreateUserRequest(email=email, password=PASSWORD, display_name="Ada"), timeout=10
    )
    assert (user.email, user.display_name, list(user.roles), user.active) == (
        email.lower(),
        "Ada",
        ["user"],
        True,
    )
    assert user.create_time.seconds > 0
    headers = dict(call.initial_metadata())
    assert headers["x-http-status"] == "201"
    assert headers["location"] == f"/v1/users/{user.user_id}"


def test_duplicate_email_differing_in_case_is_already_exists(stack: Stack) -> None:
    email = _email()
    request = user_pb2.CreateUserRequest(email=email, password=PASSWORD, display_name="A")
    stack.users.CreateUser(request, timeout=10)
    request.email = email.upper()
    assert _code(stack.users.CreateUser, request) == grpc.StatusCode.ALREADY_EXISTS


def test_invalid_fields_are_each_named_in_bad_request(stack: Stack) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stack.users.CreateUser(
            user_pb2.CreateUserRequest(email="not-an-email", password="short", display_name=""),
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in field_violations(err.value)} == {"email", "password", "display_name"}


def test_password_over_128_characters_is_invalid(stack: Stack) -> None:
    request = user_pb2.CreateUserRequest(email=_email(), password="x" * 129, display_name="A")
    assert _code(stack.users.CreateUser, request) == grpc.StatusCode.INVALID_ARGUMENT


def test_first_user_on_an_empty_database_is_admin_and_the_next_is_not(tmp_path: object) -> None:
    settings = user_server.UserConfig(f"sqlite:///{tmp_path}/users.db", "127.0.0.1:1", 4)
    build = partial(user_server.build, settings=settings)
    with serving(make_config("user-svc"), build) as server, channel_to(server) as channel:
        stub = user_pb2_grpc.UserServiceStub(channel)
        first, second = (
            stub.CreateUser(
                user_pb2.CreateUserRequest(email=_email(), password=PASSWORD, display_name="A"),
                timeout=10,
            )
            for _ in range(2)
        )
    assert list(first.roles) == ["user", "admin"]
    assert list(second.roles) == ["user"]


def test_get_me_returns_the_caller(stack: Stack) -> None:
    me = stack.sign_up()
    got = stack.users.GetUser(user_pb2.GetUserRequest(user_id="me"), metadata=me.auth, timeout=10)
    assert got == me.user


def test_get_without_a_token_is_unauthenticated(stack: Stack) -> None:
    assert _code(stack.users.GetUser, user_pb2.GetUserRequest(user_id="me")) == (
        grpc.StatusCode.UNAUTHENTICATED
    )


def test_another_users_record_is_not_found_for_a_non_admin(stack: Stack) -> None:
    me, other = stack.sign_up(), stack.sign_up()
    request = user_pb2.GetUserRequest(user_id=other.user.user_id)
    assert _code(stack.users.GetUser, request, metadata=me.auth) == grpc.StatusCode.NOT_FOUND


def test_admin_sees_any_user_and_unknown_ids_are_not_found(stack: Stack) -> None:
    assert stack.admin is not None
    other = stack.sign_up()
    got = stack.users.GetUser(
        user_pb2.GetUserRequest(user_id=other.user.user_id), metadata=stack.admin.auth, timeout=10
    )
    assert got.email == other.user.email
    unknown = user_pb2.GetUserRequest(user_id=str(uuid.uuid4()))
    assert _code(stack.users.GetUser, unknown, metadata=stack.admin.auth) == (
        grpc.StatusCode.NOT_FOUND
    )


def test_list_users_is_for_admins_only(stack: Stack) -> None:
    me = stack.sign_up()
    assert _code(stack.users.ListUsers, user_pb2.ListUsersRequest(), metadata=me.auth) == (
        grpc.StatusCode.PERMISSION_DENIED
    )


def test_list_users_pages_through_everyone_once(stack: Stack) -> None:
    assert stack.admin is not None
    for _ in range(3):
        stack.sign_up()
    seen: list[str] = []
    token = ""
    while True:
        page = stack.users.ListUsers(
            user_pb2.ListUsersRequest(page_size=2, page_token=token),
            metadata=stack.admin.auth,
            timeout=10,
        )
        assert len(page.users) <= 2
        seen += [u.user_id for u in page.users]
        if len(seen) == 2:
            stack.sign_up()  # a row added mid-way is neither skipped nor repeated
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen))
    everyone: list[str] = []
    token = ""
    for _ in range(100):  # bounded: the module's stack holds a few hundred users at most
        page = stack.users.ListUsers(
            user_pb2.ListUsersRequest(page_size=100, page_token=token),
            metadata=stack.admin.auth,
            timeout=10,
        )
        everyone += [u.user_id for u in page.users]
        token = page.next_page_token
        if not token:
            break
    assert seen == everyone


def test_tampered_page_token_is_invalid_argument(stack: Stack) -> None:
    assert stack.admin is not None
    stack.sign_up()
    page = stack.users.ListUsers(
        user_pb2.ListUsersRequest(page_size=1), metadata=stack.admin.auth, timeout=10
    )
    tampered = user_pb2.ListUsersRequest(page_token=page.next_page_token[:-3] + "AAA")
    assert _code(stack.users.ListUsers, tampered, metadata=stack.admin.auth) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def _update(user_id: str, paths: list[str], **fields: object) -> user_pb2.UpdateUserRequest:
    return user_pb2.UpdateUserRequest(
        user=user_pb2.User(user_id=user_id, **fields),  # type: ignore[arg-type]
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )


def test_user_updates_own_display_name_and_nothing_else_changes(stack: Stack) -> None:
    me = stack.sign_up()
    updated = stack.users.UpdateUser(
        _update("me", ["display_name"], display_name="New Name", active=False),
        metadata=me.auth,
        timeout=10,
    )
    assert (updated.display_name, updated.active) == ("New Name", True)
    assert updated.update_time.ToDatetime() >= me.user.update_time.ToDatetime()


def test_non_admin_changing_roles_is_permission_denied(stack: Stack) -> None:
    me = stack.sign_up()
    request = _update(me.user.user_id, ["roles"], roles=["user", "admin"])
    assert _code(stack.users.UpdateUser, request, metadata=me.auth) == (
        grpc.StatusCode.PERMISSION_DENIED
    )


def test_admin_may_deactivate_a_user(stack: Stack) -> None:
    assert stack.admin is not None
    other = stack.sign_up()
    updated = stack.users.UpdateUser(
        _update(other.user.user_id, ["active"], active=False),
        metadata=stack.admin.auth,
        timeout=10,
    )
    assert updated.active is False


@pytest.mark.parametrize("paths", [[], ["email"], ["password"]])
def test_empty_or_unknown_update_mask_is_invalid_argument(stack: Stack, paths: list[str]) -> None:
    me = stack.sign_up()
    request = _update("me", paths, display_name="X")
    assert _code(stack.users.UpdateUser, request, metadata=me.auth) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def test_updating_another_users_record_is_not_found(stack: Stack) -> None:
    me, other = stack.sign_up(), stack.sign_up()
    request = _update(other.user.user_id, ["display_name"], display_name="Hacked")
    assert _code(stack.users.UpdateUser, request, metadata=me.auth) == grpc.StatusCode.NOT_FOUND


def test_delete_removes_the_user_and_says_no_content(stack: Stack) -> None:
    me = stack.sign_up()
    _, call = stack.users.DeleteUser.with_call(
        user_pb2.DeleteUserRequest(user_id="me"), metadata=me.auth, timeout=10
    )
    assert dict(call.initial_metadata())["x-http-status"] == "204"
    # The deleted user's token names nobody now: refused, not answered NOT_FOUND.
    assert _code(stack.users.GetUser, user_pb2.GetUserRequest(user_id="me"), metadata=me.auth) == (
        grpc.StatusCode.UNAUTHENTICATED
    )


def test_deleting_another_users_record_is_not_found(stack: Stack) -> None:
    me, other = stack.sign_up(), stack.sign_up()
    request = user_pb2.DeleteUserRequest(user_id=other.user.user_id)
    assert _code(stack.users.DeleteUser, request, metadata=me.auth) == grpc.StatusCode.NOT_FOUND


def test_verify_password_says_the_same_for_unknown_email_and_wrong_password(stack: Stack) -> None:
    me = stack.sign_up()
    errors = []
    for email, password in [(me.user.email, "wrong password!"), ("nobody@example.com", PASSWORD)]:
        with pytest.raises(grpc.RpcError) as err:
            stack.users_internal.VerifyPassword(
                user_internal_pb2.VerifyPasswordRequest(email=email, password=password), timeout=10
            )
        errors.append((err.value.code(), err.value.details()))
    assert errors[0] == errors[1]
    assert errors[0][0] == grpc.StatusCode.UNAUTHENTICATED


def test_verify_password_returns_the_user_for_the_right_password(stack: Stack) -> None:
    me = stack.sign_up()
    found = stack.users_internal.VerifyPassword(
        user_internal_pb2.VerifyPasswordRequest(email=me.user.email.upper(), password=PASSWORD),
        timeout=10,
    )
    assert found.user.user_id == me.user.user_id


def test_lookup_users_returns_each_known_user_once_and_leaves_unknown_ids_out(
    stack: Stack,
) -> None:
    ada, bob = stack.sign_up(), stack.sign_up()
    ids = [ada.user.user_id, "no-such-user", bob.user.user_id, ada.user.user_id]
    found = stack.users_internal.LookupUsers(
        user_internal_pb2.LookupUsersRequest(user_ids=ids), timeout=10
    )
    by_id = {user.user_id: user for user in found.users}
    assert sorted(by_id) == sorted([ada.user.user_id, bob.user.user_id])
    assert len(found.users) == 2
    assert by_id[ada.user.user_id] == ada.user
    assert "$2b$" not in str(found)


@pytest.mark.parametrize(
    ("ids", "field"),
    [
        ([], "user_ids"),
        ([f"u{i}" for i in range(101)], "user_ids"),
        (["u1", ""], "user_ids[1]"),
        (["u1", "x" * 65], "user_ids[1]"),
    ],
)
def test_lookup_users_refuses_no_ids_too_many_an_empty_or_an_overlong_one(
    stack: Stack, ids: list[str], field: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stack.users_internal.LookupUsers(
            user_internal_pb2.LookupUsersRequest(user_ids=ids), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in field_violations(err.value)] == [field]


def test_lookup_users_logs_every_request_id_it_answers_in_its_line(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A batched lookup answers several requests: each id is in user-svc's log."""
    caplog.set_level(logging.INFO, logger="rpc")
    ada = stack.sign_up()
    stack.users_internal.LookupUsers(
        user_internal_pb2.LookupUsersRequest(
            user_ids=[ada.user.user_id], request_ids=["req-a", "req-b", "req-a"]
        ),
        metadata=(("x-request-id", "req-a"),),
        timeout=10,
    )
    lines = [r for r in caplog.records if r.getMessage() == "rpc" and hasattr(r, "request_ids")]
    logged = [(getattr(line, "code", None), getattr(line, "request_ids", None)) for line in lines]
    assert logged == [("OK", ["req-a", "req-b"])]


@pytest.mark.parametrize(
    ("request_ids", "field"),
    [
        ([f"r{i}" for i in range(101)], "request_ids"),
        (["req-a", "req b"], "request_ids[1]"),
        (["req-a", ""], "request_ids[1]"),
        (["x" * 129], "request_ids[0]"),
    ],
)
def test_lookup_users_refuses_too_many_request_ids_or_one_that_is_not_one(
    stack: Stack, request_ids: list[str], field: str
) -> None:
    request = user_internal_pb2.LookupUsersRequest(user_ids=["u1"], request_ids=request_ids)
    with pytest.raises(grpc.RpcError) as err:
        stack.users_internal.LookupUsers(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in field_violations(err.value)] == [field]


def test_no_response_carries_a_password_or_hash(stack: Stack) -> None:
    me = stack.sign_up()
    got = stack.users.GetUser(user_pb2.GetUserRequest(user_id="me"), metadata=me.auth, timeout=10)
    text = str(got)
    assert PASSWORD not in text
    assert "$2b$" not in text


def test_update_by_path_id_changes_that_user(stack: Stack) -> None:
    me = stack.sign_up()
    request = user_pb2.UpdateUserRequest(
        user_id=me.user.user_id,
        user=user_pb2.User(display_name="By Path"),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
    )
    assert stack.users.UpdateUser(request, metadata=me.auth, timeout=10).display_name == "By Path"


def test_update_whose_body_names_another_user_than_the_path_is_invalid(stack: Stack) -> None:
    assert stack.admin is not None
    target, other = stack.sign_up(), stack.sign_up()
    request = user_pb2.UpdateUserRequest(
        user_id=target.user.user_id,
        user=user_pb2.User(user_id=other.user.user_id, display_name="Changed"),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
    )
    assert _code(stack.users.UpdateUser, request, metadata=stack.admin.auth) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    unchanged = stack.users.GetUser(
        user_pb2.GetUserRequest(user_id=other.user.user_id), metadata=stack.admin.auth, timeout=10
    )
    assert unchanged.display_name != "Changed"
