"""The state of the request being served: its id, caller and gRPC context.

Set by the server interceptor for the duration of one call, read by logs,
outbound clients (deadline and request id propagation) and handlers.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from services.runtime.errors import PermissionDenied, Unauthenticated


@dataclass(frozen=True)
class Principal:
    """A caller proven by a verified access token."""

    user_id: str
    email: str
    roles: tuple[str, ...]
    token_id: str
    # The token's `exp` (seconds since the epoch): how long its verification may be reused.
    expires_at: float = 0.0

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


AccountLookup = Callable[[str], bool | None]
"""A user id's `active` flag from the owner of accounts; None when there is no such user."""


@dataclass
class RequestContext:
    """One call being served."""

    request_id: str
    method: str
    grpc_context: grpc.ServicerContext
    principal: Principal | None = None
    # The mesh identity the call is judged as (SPIFFE id; the forwarded one through a
    # proxy); None on an instance serving without mesh trust.
    caller: str | None = None
    # The caller's own `authorization` value, forwarded only to calls made on
    # the caller's behalf; never logged.
    authorization: str | None = field(default=None, repr=False)
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    # Fields the handler adds to the call's one log line (e.g. the request ids a
    # batched call answers for); never secrets.
    log_fields: dict[str, Any] = field(default_factory=dict)

    def time_remaining(self) -> float:
        """Seconds left before the caller's deadline."""
        return float(self.grpc_context.time_remaining())

    def require_principal(self) -> Principal:
        if self.principal is None:
            raise Unauthenticated("a valid bearer token is required")
        return self.principal

    def require_admin(self) -> Principal:
        principal = self.require_principal()
        if not principal.is_admin:
            raise PermissionDenied("the admin role is required")
        return principal

    def on_behalf_of_caller(self) -> list[tuple[str, str]]:
        """Metadata that makes an outbound call act as the caller."""
        return [("authorization", self.authorization)] if self.authorization else []

    def created(self, location: str) -> None:
        """Tells the edge this call created `location`: HTTP 201 with a Location header."""
        self.response_headers += [("x-http-status", "201"), ("location", location)]

    def no_content(self) -> None:
        """Tells the edge this call succeeds with no body: HTTP 204."""
        self.response_headers.append(("x-http-status", "204"))

    def retry_after(self, seconds: int) -> None:
        """Tells the caller when to try again: `retry-after` (the edge's Retry-After)."""
        self.response_headers = [h for h in self.response_headers if h[0] != "retry-after"]
        self.response_headers.append(("retry-after", str(max(1, seconds))))

    def require_live_principal(self, accounts: AccountLookup) -> Principal:
        """The caller, if its account still exists and is active.

        A token outlives a delete or a deactivation by up to its lifetime, so the
        account's owner is asked on every protected call: a deleted user is
        UNAUTHENTICATED (the token names nobody), a deactivated one PERMISSION_DENIED
        (USER_INACTIVE), from the very next request on.
        """
        principal = self.require_principal()
        active = accounts(principal.user_id)
        if active is None:
            raise Unauthenticated("the account of this access token no longer exists")
        if not active:
            raise PermissionDenied("this account is deactivated", reason="USER_INACTIVE")
        return principal

    def require_live_admin(self, accounts: AccountLookup) -> Principal:
        principal = self.require_live_principal(accounts)
        if not principal.is_admin:
            raise PermissionDenied("the admin role is required")
        return principal


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "request_context", default=None
)


def current() -> RequestContext | None:
    return _current.get()


def require() -> RequestContext:
    """The call being served; handlers only run inside one."""
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("no request is being served on this thread")
    return ctx


def advise_retry_after(seconds: int) -> None:
    """Sets `retry-after` on the call being served, if any (a refusal's hint)."""
    ctx = _current.get()
    if ctx is not None:
        ctx.retry_after(seconds)


def mesh_caller() -> str | None:
    """The SPIFFE id the mesh policy judged the call being served as: the TLS peer's,
    or the one a proxy forwarded. None on a server without mutual TLS."""
    ctx = _current.get()
    return ctx.caller if ctx is not None else None


def activate(ctx: RequestContext) -> contextvars.Token[RequestContext | None]:
    return _current.set(ctx)


def deactivate(token: contextvars.Token[RequestContext | None]) -> None:
    _current.reset(token)
