"""The state of the request being served: its id, caller and gRPC context.

Set by the server interceptor for the duration of one call, read by logs,
outbound clients (deadline and request id propagation) and handlers.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field

import grpc

from services.runtime.errors import PermissionDenied, Unauthenticated


@dataclass(frozen=True)
class Principal:
    """A caller proven by a verified access token."""

    user_id: str
    email: str
    roles: tuple[str, ...]
    token_id: str

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


@dataclass
class RequestContext:
    """One call being served."""

    request_id: str
    method: str
    grpc_context: grpc.ServicerContext
    principal: Principal | None = None
    # The caller's own `authorization` value, forwarded only to calls made on
    # the caller's behalf; never logged.
    authorization: str | None = field(default=None, repr=False)
    response_headers: list[tuple[str, str]] = field(default_factory=list)

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


def activate(ctx: RequestContext) -> contextvars.Token[RequestContext | None]:
    return _current.set(ctx)


def deactivate(token: contextvars.Token[RequestContext | None]) -> None:
    _current.reset(token)
