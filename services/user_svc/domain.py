"""The rules of user accounts: what a valid account is, who may see or change which
user, and how passwords are hashed. No storage and no gRPC here.

The errors are the shared `services.runtime.errors` kinds, so the one interceptor
that maps domain errors to gRPC status codes handles them as they are.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import bcrypt

from services.runtime.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from services.runtime.limits import LOOKUP_MAX_IDS, REQUEST_ID_CHARS, is_request_id

__all__ = [
    "ADMIN",
    "ALLOWED_ROLES",
    "DEFAULT_BCRYPT_COST",
    "LOOKUP_MAX_IDS",
    "MUTABLE_FIELDS",
    "USER",
    "Caller",
    "EmailTaken",
    "InvalidArgument",
    "InvalidCredentials",
    "NewUser",
    "PasswordHasher",
    "PermissionDenied",
    "UserNotFound",
    "authenticate",
    "can_view",
    "check_access",
    "check_update",
    "email_violation",
    "hash_password",
    "normalise_email",
    "normalise_roles",
    "resolve_user_id",
    "validate_lookup_ids",
    "validate_new_user",
    "validate_update",
    "verify_password",
]

USER = "user"
ADMIN = "admin"
ALLOWED_ROLES = (USER, ADMIN)
"""Every role there is, in the order they are stored and shown."""

MUTABLE_FIELDS = frozenset({"display_name", "roles", "active"})
ADMIN_ONLY_FIELDS = frozenset({"roles", "active"})

PASSWORD_MIN_CHARS = 8
PASSWORD_MAX_CHARS = 128
DISPLAY_NAME_MAX_CHARS = 100
EMAIL_MAX_CHARS = 254
EMAIL_LOCAL_MAX_CHARS = 64
DEFAULT_BCRYPT_COST = 12

# RFC 5322 dot-atom, ASCII only: no quoted local parts, no comments, no SMTPUTF8.
# Internationalised domains are accepted in their punycode (xn--) form.
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class UserNotFound(NotFound):
    """No such user, or one the caller may not see: the two are not told apart."""

    reason = "USER_NOT_FOUND"

    def __init__(self, message: str = "user not found") -> None:
        super().__init__(message)


class EmailTaken(AlreadyExists):
    reason = "EMAIL_TAKEN"

    def __init__(self, message: str = "a user with this email already exists") -> None:
        super().__init__(message)


class InvalidCredentials(Unauthenticated):
    """A wrong password or an unknown email: one message for both."""

    reason = "INVALID_CREDENTIALS"

    def __init__(self, message: str = "the email or password is wrong") -> None:
        super().__init__(message)


class Caller(Protocol):
    """Who is calling; `services.runtime.context.Principal` is one."""

    @property
    def user_id(self) -> str: ...

    @property
    def is_admin(self) -> bool: ...


@dataclass(frozen=True)
class NewUser:
    """The normalised fields of a user about to be created."""

    email: str
    password: str = field(repr=False)
    display_name: str


# --- validation ------------------------------------------------------------------


def normalise_email(email: str) -> str:
    """The form emails are stored and compared in: stripped and lower-cased."""
    return email.strip().lower()


def email_violation(email: str) -> str | None:
    """Why the normalised `email` is not a usable address, or None when it is."""
    if not email:
        return "is required"
    if len(email) > EMAIL_MAX_CHARS:
        return f"must be at most {EMAIL_MAX_CHARS} characters"
    local, at, domain = email.partition("@")
    if not at or "@" in domain:
        return "must contain exactly one '@'"
    if not local or len(local) > EMAIL_LOCAL_MAX_CHARS:
        return f"the part before '@' must be 1..{EMAIL_LOCAL_MAX_CHARS} characters"
    if not _LOCAL_PART.fullmatch(local):
        return "the part before '@' has characters an address cannot have"
    labels = domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        return "the domain must be names of letters, digits and hyphens joined by dots"
    if labels[-1].isdigit():
        return "the domain must end in a name, not a number"
    return None


def _password_violation(password: str) -> str | None:
    # Characters, not bytes: "8..128 characters" is what the contract promises users.
    if not PASSWORD_MIN_CHARS <= len(password) <= PASSWORD_MAX_CHARS:
        return f"must be {PASSWORD_MIN_CHARS}..{PASSWORD_MAX_CHARS} characters"
    return None


def _display_name_violation(display_name: str) -> str | None:
    if not 1 <= len(display_name) <= DISPLAY_NAME_MAX_CHARS:
        return f"must be 1..{DISPLAY_NAME_MAX_CHARS} characters after trimming spaces"
    if any(unicodedata.category(ch) == "Cc" for ch in display_name):
        return "must not contain control characters"
    return None


def validate_new_user(email: str, password: str, display_name: str) -> NewUser:
    """The normalised new user; InvalidArgument naming every bad field otherwise."""
    user = NewUser(normalise_email(email), password, display_name.strip())
    violations = [
        (name, problem)
        for name, problem in (
            ("email", email_violation(user.email)),
            ("password", _password_violation(user.password)),
            ("display_name", _display_name_violation(user.display_name)),
        )
        if problem is not None
    ]
    if violations:
        raise InvalidArgument(violations)
    return user


def normalise_roles(roles: Iterable[str]) -> tuple[str, ...]:
    """The roles in stored order, with "user" always present; unknown ones refused."""
    wanted = {role.strip().lower() for role in roles}
    unknown = sorted(wanted - set(ALLOWED_ROLES))
    if unknown:
        allowed = ", ".join(ALLOWED_ROLES)
        raise InvalidArgument([("roles", f"names an unknown role; allowed: {allowed}")])
    return tuple(role for role in ALLOWED_ROLES if role in wanted or role == USER)


# --- access ----------------------------------------------------------------------


def validate_lookup_ids(user_ids: Sequence[str]) -> list[str]:
    """LookupUsers' ids, each once in the order first given; InvalidArgument when there
    are none, more than LOOKUP_MAX_IDS, or an empty one."""
    if not user_ids:
        raise InvalidArgument([("user_ids", "at least one id is required")])
    return _unique_checked(user_ids, "user_ids", "ids", bool, "must not be empty")


def validate_request_ids(request_ids: Sequence[str]) -> list[str]:
    """LookupUsers' request ids (for its log line), each once; InvalidArgument when there
    are more than LOOKUP_MAX_IDS or one is not a request id."""
    rule = f"must be 1 to {REQUEST_ID_CHARS} of A-Z a-z 0-9 . _ : -"
    return _unique_checked(request_ids, "request_ids", "request ids", is_request_id, rule)


def _unique_checked(
    values: Sequence[str], field: str, noun: str, valid: Callable[[str], bool], rule: str
) -> list[str]:
    """`values`, each once in the order first given, when there are at most
    LOOKUP_MAX_IDS and each is `valid`; else InvalidArgument naming each bad one."""
    if len(values) > LOOKUP_MAX_IDS:
        raise InvalidArgument([(field, f"at most {LOOKUP_MAX_IDS} {noun} at once")])
    bad = [(f"{field}[{i}]", rule) for i, value in enumerate(values) if not valid(value)]
    if bad:
        raise InvalidArgument(bad[:10])  # bounded, like every error we send
    return list(dict.fromkeys(values))


def resolve_user_id(caller: Caller, user_id: str) -> str:
    """The id a request names: "me" is the caller."""
    return caller.user_id if user_id == "me" else user_id


def can_view(caller: Caller, target_id: str) -> bool:
    """Whether `caller` may see (and delete) user `target_id`: self or admin."""
    return caller.is_admin or caller.user_id == target_id


def check_access(caller: Caller, target_id: str) -> None:
    """UserNotFound unless `caller` may see user `target_id`; existence is not revealed."""
    if not can_view(caller, target_id):
        raise UserNotFound()


def check_update(caller: Caller, target_id: str, mask_paths: Sequence[str]) -> frozenset[str]:
    """The fields `caller` may change on `target_id`, checked in the order that reveals least.

    Bad masks first (they say nothing about the target), then another user's record
    (NotFound, as if it did not exist), then admin-only fields (PermissionDenied).
    """
    paths = frozenset(mask_paths)
    if not paths:
        raise InvalidArgument([("update_mask", "must name at least one field")])
    unknown = sorted(paths - MUTABLE_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(MUTABLE_FIELDS))
        raise InvalidArgument(
            [("update_mask", f"names a field that cannot be changed; allowed: {allowed}")]
        )
    check_access(caller, target_id)
    if not caller.is_admin and paths & ADMIN_ONLY_FIELDS:
        raise PermissionDenied("only an admin may change roles or active")
    return paths


def validate_update(
    paths: Iterable[str], *, display_name: str, roles: Iterable[str], active: bool
) -> dict[str, object]:
    """The store changes for the masked fields, normalised; InvalidArgument for bad values."""
    changes: dict[str, object] = {}
    violations: list[tuple[str, str]] = []
    for path in sorted(set(paths)):
        if path == "display_name":
            name = display_name.strip()
            problem = _display_name_violation(name)
            if problem is None:
                changes[path] = name
            else:
                violations.append((path, problem))
        elif path == "roles":
            try:
                changes[path] = list(normalise_roles(roles))
            except InvalidArgument as exc:
                violations += exc.violations
        elif path == "active":
            changes[path] = active
        else:
            violations.append(("update_mask", "names a field that cannot be changed"))
    if violations:
        raise InvalidArgument(violations)
    return changes


# --- passwords -------------------------------------------------------------------


def _prehash(password: str) -> bytes:
    """The bytes bcrypt sees: base64(SHA-256(NFKC(password))), always 44 ASCII bytes.

    bcrypt reads only the first 72 bytes of its input (bcrypt 5 refuses longer ones),
    and 128 characters can be 512 UTF-8 bytes, so passwords differing after byte 72
    would otherwise collide. SHA-256 first keeps every character significant; base64
    then keeps the digest free of NUL bytes, which bcrypt treats as the end of input.
    NFKC makes the same password typed on different keyboards hash the same.
    """
    digest = hashlib.sha256(unicodedata.normalize("NFKC", password).encode()).digest()
    return base64.b64encode(digest)


def hash_password(password: str, cost: int = DEFAULT_BCRYPT_COST) -> str:
    """A bcrypt hash of `password` (pre-hashed, see `_prehash`) with 2**cost rounds."""
    return bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds=cost)).decode("ascii")


def verify_password(password: str, password_hash: str) -> bool:
    """Whether `password` matches a hash made by `hash_password`."""
    return bcrypt.checkpw(_prehash(password), password_hash.encode("ascii"))


class PasswordHasher:
    """Hashes and checks passwords at one bcrypt cost, taking the same time whether or
    not the account exists: an unknown email is checked against a dummy hash."""

    def __init__(self, cost: int = DEFAULT_BCRYPT_COST) -> None:
        self.cost = cost
        self._dummy: str | None = None
        self._lock = threading.Lock()

    def hash(self, password: str) -> str:
        return hash_password(password, self.cost)

    def verify(self, password: str, password_hash: str | None) -> bool:
        """Whether `password` matches; None (no such user) costs one bcrypt run too."""
        if password_hash is None:
            verify_password(password, self.dummy_hash)
            return False
        return verify_password(password, password_hash)

    @property
    def dummy_hash(self) -> str:
        """A hash of a random password nobody knows, made once on first use at this cost."""
        with self._lock:
            if self._dummy is None:
                self._dummy = hash_password(secrets.token_urlsafe(32), self.cost)
            return self._dummy


_Found = TypeVar("_Found")


def authenticate(found: tuple[_Found, str] | None, password: str, hasher: PasswordHasher) -> _Found:
    """The user in `found` (user, password hash) if `password` matches it.

    InvalidCredentials for no user and for a wrong password alike, after the same work.
    """
    user, password_hash = found if found is not None else (None, None)
    if not hasher.verify(password, password_hash) or user is None:
        raise InvalidCredentials()
    return user
