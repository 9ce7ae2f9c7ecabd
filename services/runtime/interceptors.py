"""The server interceptor every service runs: request id, caller, errors, one log line.

For each unary call it takes or makes the request id, verifies a bearer token if
one is sent (a bad token is always UNAUTHENTICATED, even on public methods), runs
the handler with a `RequestContext`, maps domain errors to statuses with
google.rpc details, turns anything unexpected into INTERNAL (logged with the
traceback, never sent), returns `x-request-id` and logs one JSON line.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter

from services.runtime import context, limits
from services.runtime.authn import TokenVerifier
from services.runtime.authz import XFCC_HEADER, Policy
from services.runtime.errors import DomainError, internal_status
from services.runtime.identity import peer_identity

log = logging.getLogger("rpc")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

Behavior = Callable[[Any, grpc.ServicerContext], Any]


def request_id_from(metadata: dict[str, str]) -> str:
    """The caller's x-request-id when it is sane, else a new one."""
    given = metadata.get("x-request-id", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


class ServerInterceptor(grpc.ServerInterceptor):
    def __init__(self, verifier: TokenVerifier | None) -> None:
        self._verifier = verifier

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(details)
        # Streaming methods (health Watch, reflection) are the library's own.
        if handler is None or handler.unary_unary is None:
            return handler
        # A request that cannot be parsed or breaks a length limit reaches `_wrap` as
        # `limits.Rejected`, so it is refused as INVALID_ARGUMENT, not grpcio's INTERNAL.
        return grpc.unary_unary_rpc_method_handler(
            self._wrap(limits.refuse_rejected(handler.unary_unary), details),
            request_deserializer=limits.checked_parser(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _wrap(self, behavior: Behavior, details: grpc.HandlerCallDetails) -> Behavior:
        def serve(request: Any, grpc_context: grpc.ServicerContext) -> Any:
            metadata = {k: v for k, v in details.invocation_metadata if isinstance(v, str)}
            ctx = context.RequestContext(
                request_id=request_id_from(metadata),
                method=details.method,
                grpc_context=grpc_context,
            )
            token = context.activate(ctx)
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                ctx.principal = self._authenticate(metadata)
                ctx.authorization = metadata.get("authorization")
                response = behavior(request, grpc_context)
                code = grpc_context.code() or grpc.StatusCode.OK  # type: ignore[attr-defined]
                _send_headers(ctx)
                return response
            except DomainError as err:
                code = err.code
                grpc_context.abort_with_status(_with_trailers(ctx, err.to_status()))
            except Exception:
                if grpc_context.code() is not None:  # type: ignore[attr-defined]
                    code = grpc_context.code()  # type: ignore[attr-defined]
                    raise  # the handler aborted on purpose
                code = grpc.StatusCode.INTERNAL
                log.exception("unhandled error")
                grpc_context.abort_with_status(_with_trailers(ctx, internal_status(ctx.request_id)))
            finally:
                _log_call(ctx, code, started)
                context.deactivate(token)

        return serve

    def _authenticate(self, metadata: dict[str, str]) -> context.Principal | None:
        header = metadata.get("authorization")
        if header is None or self._verifier is None:
            return None
        return self._verifier.verify(header)


def _send_headers(ctx: context.RequestContext) -> None:
    ctx.grpc_context.send_initial_metadata(
        (("x-request-id", ctx.request_id), *ctx.response_headers)
    )


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _with_trailers(ctx: context.RequestContext, status: grpc.Status) -> grpc.Status:
    """`status` carrying x-request-id (and the handler's headers) as trailing metadata.

    An error must be trailers-only (no initial metadata sent first): Envoy reads
    grpc-status from the response headers to decide a retry (`retry_on:
    unavailable`), and a trailers-only response is the only one where it is there.
    """
    extra = (("x-request-id", ctx.request_id), *ctx.response_headers)
    return _Status(status.code, status.details, (*status.trailing_metadata, *extra))


def _log_call(ctx: context.RequestContext, code: grpc.StatusCode, started: float) -> None:
    if code in _SERVER_FAULTS:
        level = logging.ERROR
    elif ctx.method.startswith(_HEALTH_PREFIX):
        level = logging.DEBUG  # Consul asks every few seconds; not an event worth a line
    else:
        level = logging.INFO
    log.log(
        level,
        "rpc",
        extra={
            "code": code.name,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            "user_id": ctx.principal.user_id if ctx.principal else None,
            "peer": ctx.grpc_context.peer(),
        },
    )


_HEALTH_PREFIX = "/grpc.health.v1.Health/"
_SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}


class AuthorizationInterceptor(grpc.ServerInterceptor):
    """Per-method authorization from the mesh policy, for every method, streaming ones too.

    The caller is the TLS peer's SPIFFE id, or, when the peer is a proxy the policy
    names (Envoy), the identity Envoy forwards in x-forwarded-client-cert. A refusal
    is PERMISSION_DENIED, logged with both identities and counted.
    """

    def __init__(self, policy: Policy, service_identity: str, registry: CollectorRegistry) -> None:
        self._policy = policy
        self._self = service_identity
        self._denied = Counter(
            "mesh_authz_denied",
            "Calls refused by the mesh policy, by caller and method",
            ["caller", "method"],
            registry=registry,
        )

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(details)
        if handler is None:
            return None
        forwarded = next(
            (v for k, v in details.invocation_metadata if k == XFCC_HEADER and isinstance(v, str)),
            None,
        )
        check = functools.partial(self._check, details.method, forwarded)
        kinds = (
            ("unary_unary", grpc.unary_unary_rpc_method_handler),
            ("unary_stream", grpc.unary_stream_rpc_method_handler),
            ("stream_unary", grpc.stream_unary_rpc_method_handler),
            ("stream_stream", grpc.stream_stream_rpc_method_handler),
        )
        for attribute, make in kinds:
            behavior = getattr(handler, attribute)
            if behavior is not None:
                return make(
                    _guarded(behavior, check),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler

    def _check(
        self, method: str, forwarded: str | None, grpc_context: grpc.ServicerContext
    ) -> str | None:
        peer = peer_identity(grpc_context)
        caller = self._policy.caller(peer, forwarded)
        if self._policy.allowed(caller, method):
            return caller
        self._denied.labels(caller=caller or "unknown", method=method).inc()
        log.warning(
            "permission denied",
            extra={
                "caller": caller,
                "peer": peer,
                "service_identity": self._self,
                "method": method,
            },
        )
        grpc_context.abort(
            grpc.StatusCode.PERMISSION_DENIED, "this caller may not call this method"
        )


def _guarded(
    behavior: Callable[[Any, grpc.ServicerContext], Any],
    check: Callable[[grpc.ServicerContext], str | None],
) -> Callable[[Any, grpc.ServicerContext], Any]:
    def guarded(request: Any, grpc_context: grpc.ServicerContext) -> Any:
        # Handlers that limit per caller (VerifyPassword) read who was judged here.
        token = context.judged_as(check(grpc_context))
        try:
            return behavior(request, grpc_context)
        finally:
            context.unjudge(token)

    return guarded
