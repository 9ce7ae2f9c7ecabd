"""The user rules without storage or gRPC: validation, access and password hashing."""

from __future__ import annotations

import pytest

from services.runtime.context import Principal
from services.user_svc.domain import (
    InvalidArgument,
    InvalidCredentials,
    PasswordHasher,
    PermissionDenied,
    UserNotFound,
    authenticate,
    can_view,
    check_access,
    check_update,
    email_violation,
    hash_password,
    normalise_roles,
    resolve_user_id,
    validate_new_user,
    validate_update,
    verify_password,
)

TEST_COST = 4
ALICE = Principal(user_id="alice-id", email="alice@example.com", roles=("user",), token_id="t1")
ADMIN = Principal(
    user_id="admin-id", email="admin@example.com", roles=("user", "admin"), token_id="t2"
)


def fields(exc: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [name for name, _ in exc.value.violations]


# --- new users --------------------------------------------------------------------


def test_new_user_is_normalised() -> None:
    user = validate_new_user("  Alice@Example.COM ", "correct horse", "  Alice  ")
    assert (user.email, user.password, user.display_name) == (
        "alice@example.com",
        "correct horse",
        "Alice",
    )


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(InvalidArgument) as exc:
        validate_new_user("not-an-email", "short", "   ")
    assert fields(exc) == ["email", "password", "display_name"]


def test_password_repr_is_hidden() -> None:
    assert "correct horse" not in repr(validate_new_user("a@b.co", "correct horse", "A"))


@pytest.mark.parametrize(
    "email",
    [
        "a@b.co",
        "first.last+tag@mail.example.com",
        "o'brien@example.ie",
        "x@xn--bcher-kva.example",
        f"{'l' * 64}@example.com",
    ],
)
def test_valid_emails_are_accepted(email: str) -> None:
    assert email_violation(email) is None


@pytest.mark.parametrize(
    "email",
    [
        "",
        "plain",
        "two@@example.com",
        "a@b@example.com",
        "@example.com",
        "alice@",
        "alice@localhost",
        "alice@example..com",
        "alice@-example.com",
        "alice@example-.com",
        "alice@exa_mple.com",
        "alice@127.0.0.1",
        ".alice@example.com",
        "al..ice@example.com",
        "al ice@example.com",
        "alice@exämple.com",
        f"{'l' * 65}@example.com",
        f"a@{'d' * 63}.{'d' * 63}.{'d' * 63}.{'d' * 63}.com",
        f"alice@{'d' * 64}.com",
    ],
)
def test_invalid_emails_are_refused(email: str) -> None:
    assert email_violation(email) is not None


@pytest.mark.parametrize("password", ["x" * 8, "é" * 128])
def test_password_length_counts_characters_not_bytes(password: str) -> None:
    """128 two-byte characters are 256 bytes and still allowed."""
    assert validate_new_user("a@b.co", password, "A").password == password


@pytest.mark.parametrize("password", ["", "x" * 7, "x" * 129])
def test_password_outside_8_to_128_characters_is_refused(password: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        validate_new_user("a@b.co", password, "A")
    assert fields(exc) == ["password"]


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "tab\tinside"])
def test_bad_display_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        validate_new_user("a@b.co", "correct horse", name)
    assert fields(exc) == ["display_name"]


# --- roles --------------------------------------------------------------------------


def test_user_role_is_always_present_and_roles_are_ordered() -> None:
    assert normalise_roles(["admin"]) == ("user", "admin")
    assert normalise_roles([]) == ("user",)
    assert normalise_roles(["ADMIN", "user", "admin"]) == ("user", "admin")


def test_unknown_role_is_refused_without_quoting_it() -> None:
    with pytest.raises(InvalidArgument) as exc:
        normalise_roles(["user", "pilot"])
    assert fields(exc) == ["roles"]
    assert "pilot" not in exc.value.message


# --- access -------------------------------------------------------------------------


def test_me_names_the_caller() -> None:
    assert resolve_user_id(ALICE, "me") == "alice-id"
    assert resolve_user_id(ALICE, "other-id") == "other-id"


def test_users_see_themselves_and_admins_see_everyone() -> None:
    assert can_view(ALICE, "alice-id")
    assert not can_view(ALICE, "bob-id")
    assert can_view(ADMIN, "bob-id")


def test_another_users_record_is_not_found_for_a_non_admin() -> None:
    with pytest.raises(UserNotFound):
        check_access(ALICE, "bob-id")


def test_user_may_change_own_display_name() -> None:
    assert check_update(ALICE, "alice-id", ["display_name"]) == {"display_name"}


@pytest.mark.parametrize("paths", [[], ["email"], ["display_name", "password_hash"], ["*"]])
def test_empty_or_unknown_mask_is_invalid(paths: list[str]) -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_update(ADMIN, "alice-id", paths)
    assert fields(exc) == ["update_mask"]
    assert "password_hash" not in exc.value.message  # no error quotes a submitted value


@pytest.mark.parametrize("path", ["roles", "active"])
def test_non_admin_may_not_change_roles_or_active(path: str) -> None:
    with pytest.raises(PermissionDenied):
        check_update(ALICE, "alice-id", ["display_name", path])


def test_non_admin_updating_another_user_gets_not_found_before_permission_denied() -> None:
    with pytest.raises(UserNotFound):
        check_update(ALICE, "bob-id", ["roles"])


def test_admin_may_change_anything_on_anyone() -> None:
    assert check_update(ADMIN, "bob-id", ["roles", "active", "display_name"]) == {
        "roles",
        "active",
        "display_name",
    }


def test_update_values_are_normalised_for_masked_fields_only() -> None:
    changes = validate_update(
        ["display_name", "roles"], display_name=" Bob ", roles=["admin"], active=False
    )
    assert changes == {"display_name": "Bob", "roles": ["user", "admin"]}


def test_bad_update_values_name_each_field() -> None:
    with pytest.raises(InvalidArgument) as exc:
        validate_update(["display_name", "roles"], display_name="", roles=["x"], active=True)
    assert fields(exc) == ["display_name", "roles"]


# --- passwords ----------------------------------------------------------------------


def test_password_verifies_against_its_hash_only() -> None:
    hashed = hash_password("correct horse", TEST_COST)
    assert hashed.startswith("$2b$04$")
    assert verify_password("correct horse", hashed)
    assert not verify_password("correct horsf", hashed)


def test_passwords_differing_after_byte_72_do_not_match() -> None:
    """bcrypt alone reads 72 bytes; the SHA-256 pre-hash keeps all 100 characters."""
    first, second = "p" * 99 + "1", "p" * 99 + "2"
    hashed = hash_password(first, TEST_COST)
    assert verify_password(first, hashed)
    assert not verify_password(second, hashed)


def test_multibyte_password_of_128_characters_hashes() -> None:
    password = "密" * 128
    assert verify_password(password, hash_password(password, TEST_COST))


def test_unknown_user_costs_a_bcrypt_run_and_fails() -> None:
    hasher = PasswordHasher(TEST_COST)
    assert not hasher.verify("anything", None)
    assert hasher.dummy_hash.startswith("$2b$04$")
    assert hasher.dummy_hash == hasher.dummy_hash


def test_authenticate_gives_one_error_for_unknown_email_and_wrong_password() -> None:
    hasher = PasswordHasher(TEST_COST)
    found = ("the-user", hasher.hash("correct horse"))
    assert authenticate(found, "correct horse", hasher) == "the-user"
    with pytest.raises(InvalidCredentials) as wrong:
        authenticate(found, "wrong horse", hasher)
    with pytest.raises(InvalidCredentials) as unknown:
        authenticate(None, "correct horse", hasher)
    assert wrong.value.message == unknown.value.message
