"""The one server interceptor every service runs: authorization, metrics, request id,
caller, errors, one log line.

For each call it checks the mesh policy (when the instance has mesh trust) and
counts the call in py-grpc-prometheus's metrics. For each unary call it also takes
or makes the request id, verifies a bearer token if one is sent (a bad token is
always UNAUTHENTICATED, even on public methods), runs the handler with a
`RequestContext`, maps domain errors to statuses with google.rpc details, turns
anything unexpected into INTERNAL (logged with the traceback, never sent), returns
`x-request-id` and logs one JSON line.
"""

from __future__ import annotations

import functools
import logging
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
from services.runtime.metrics import MethodMetrics, ServerMetrics, grpc_type

log = logging.getLogger("rpc")

Behavior = Callable[[Any, grpc.ServicerContext], Any]


def request_id_from(metadata: dict[str, str]) -> str:
    """The caller's x-request-id when it is sane, else a new one."""
    given = metadata.get("x-request-id", "")
    return given if limits.is_request_id(given) else uuid.uuid4().hex


class ServerInterceptor(grpc.ServerInterceptor):
    """The runtime's one interceptor: authorization, metrics, request context, errors, log.

    One layer instead of a chain of three (py-grpc-prometheus's, authorization's and
    this one): every layer costs a handler object and a Python frame per call.
    """

    def __init__(
        self,
        verifier: TokenVerifier | None,
        *,
        authorizer: Authorizer | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._tokens = VerifiedTokens(verifier) if verifier is not None else None
        self._authorizer = authorizer
        self._metrics = metrics
        # Per method: the handler gRPC gave and the wrapped one made of it.
        self._wrapped: dict[
            str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]
        ] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        # This runs on gRPC's one polling thread, for every call: it only looks up the
        # method's wrapped handler (made on its first call); the per-call work (metadata,
        # authorization, the request context) runs in the worker thread that serves it.
        handler = continuation(details)
        if handler is None:
            return None
        known = self._wrapped.get(details.method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap_handler(details.method, handler)
        # Dict assignment is atomic: two threads making the same entry is harmless.
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped

    def _wrap_handler(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        counted = self._metrics.method(method, grpc_type(handler)) if self._metrics else None
        check = None
        if self._authorizer is not None:
            check = functools.partial(self._authorizer.check, method)
        # Streaming methods (health Watch, reflection) are the library's own.
        if handler.unary_unary is None:
            return _streaming(handler, check, counted)
        # A request that cannot be parsed or breaks a length limit reaches `_wrap` as
        # `limits.Rejected`, so it is refused as INVALID_ARGUMENT, not grpcio's INTERNAL.
        return grpc.unary_unary_rpc_method_handler(
            self._wrap(limits.refuse_rejected(handler.unary_unary), method, check, counted),
            request_deserializer=limits.checked_parser(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _wrap(
        self,
        behavior: Behavior,
        method: str,
        check: Check | None,
        counted: MethodMetrics | None,
    ) -> Behavior:
        def serve(request: Any, grpc_context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            if counted is not None:
                counted.started.inc()
            code = grpc.StatusCode.OK
            try:
                items = grpc_context.invocation_metadata()
                metadata = {k: v for k, v in items if isinstance(v, str)}
                caller = check(_forwarded(items), grpc_context) if check is not None else None
                code, response = self._serve(
                    request, grpc_context, behavior, method, metadata, caller
                )
                return response
            except Exception:
                code = grpc_context.code() or grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]
                raise
            finally:
                if counted is not None:
                    counted.handled(code, time.perf_counter() - started)

        return serve

    def _serve(
        self,
        request: Any,
        grpc_context: grpc.ServicerContext,
        behavior: Behavior,
        method: str,
        metadata: dict[str, str],
        caller: str | None,
    ) -> tuple[grpc.StatusCode, Any]:
        ctx = context.RequestContext(
            request_id=request_id_from(metadata),
            method=method,
            grpc_context=grpc_context,
            caller=caller,
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
            return code, response
        except DomainError as err:
            code = err.code
            grpc_context.abort_with_status(_with_trailers(ctx, err.to_status()))
            raise AssertionError("abort_with_status returned") from None  # it raises
        except Exception:
            if grpc_context.code() is not None:  # type: ignore[attr-defined]
                code = grpc_context.code()  # type: ignore[attr-defined]
                raise  # the handler aborted on purpose
            if not grpc_context.is_active():
                # The client went away (a cancel, wrk stopping; a deadline passing reaches
                # the server as a cancel too) and answering it failed, e.g.
                # send_initial_metadata raising: not a fault of the service. The call's
                # one log line says CANCELLED, with no traceback.
                code = grpc.StatusCode.CANCELLED
                grpc_context.abort(code, "the client has gone")
                raise AssertionError("abort returned") from None  # it raises
            code = grpc.StatusCode.INTERNAL
            log.exception("unhandled error")
            grpc_context.abort_with_status(_with_trailers(ctx, internal_status(ctx.request_id)))
            raise AssertionError("abort_with_status returned") from None  # it raises
        finally:
            _log_call(ctx, code, started)
            context.deactivate(token)

    def _authenticate(self, metadata: dict[str, str]) -> context.Principal | None:
        header = metadata.get("authorization")
        if header is None or self._tokens is None:
            return None
        return self._tokens.verify(header)


class VerifiedTokens:
    """Verifications of access tokens, each reused until the token expires; bounded.

    A client sends the same token with every call for its whole life (15 minutes):
    the RS256 check and the claims' parsing are done once per token, not per call.
    Only verified tokens are kept, so forged ones cannot fill the cache; when full
    it is emptied and refills with the tokens in use. Whether the account is still
    live is not cached here: services ask user-svc on every protected call.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._verifier = verifier
        self._max = max_entries
        self._clock = clock
        self._known: dict[str, context.Principal] = {}

    def verify(self, authorization: str) -> context.Principal:
        known = self._known.get(authorization)
        if known is not None and self._clock() < known.expires_at:
            return known
        principal = self._verifier.verify(authorization)
        if len(self._known) >= self._max:
            self._known.clear()
        self._known[authorization] = principal
        return principal

    def __len__(self) -> int:
        return len(self._known)


# Authorization of one call: the forwarded client certificate header (or None) and the call.
Check = Callable[["str | None", grpc.ServicerContext], "str | None"]


def _forwarded(metadata: Any) -> str | None:
    """The first x-forwarded-client-cert value of the call's metadata, if any."""
    return next((v for k, v in metadata if k == XFCC_HEADER and isinstance(v, str)), None)


def _streaming(
    handler: grpc.RpcMethodHandler[Any, Any], check: Check | None, counted: MethodMetrics | None
) -> grpc.RpcMethodHandler[Any, Any]:
    """A streaming handler, authorized (when the mesh has trust) and counted."""
    kinds = (
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    )
    for attribute, make in kinds:
        behavior = getattr(handler, attribute)
        if behavior is not None:
            return make(
                _guarded(behavior, check, counted, handler),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


def _send_headers(ctx: context.RequestContext) -> None:
    """x-request-id, and the handler's headers (201/204, Retry-After) when it set any.

    Headers sent on their own are a batch of their own: one more completion for
    gRPC's polling thread and one more wake-up of the worker, ~8 of ~30 context
    switches per call. Without the handler's headers, x-request-id rides in the
    trailers, which leave with the response and the status; Envoy's listeners put
    the request's id in every response's headers themselves.
    """
    if ctx.response_headers:
        ctx.grpc_context.send_initial_metadata(
            (("x-request-id", ctx.request_id), *ctx.response_headers)
        )
    else:
        ctx.grpc_context.set_trailing_metadata((("x-request-id", ctx.request_id),))


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
            **ctx.log_fields,
        },
    )


_HEALTH_PREFIX = "/grpc.health.v1.Health/"
_MAX_DECISIONS = 4096
_SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}


class Authorizer:
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
        self._decisions: dict[tuple[str | None, str | None, str], tuple[str | None, bool]] = {}

    def _decide(
        self, peer: str | None, forwarded: str | None, method: str
    ) -> tuple[str | None, bool]:
        """Who the caller is and whether it may call `method`: remembered, bounded.

        The policy is read once at start, so a decision depends on these three values
        only; parsing x-forwarded-client-cert and matching the rules each call was ~5%
        of a GetFlight's Python time. When full, the memory is emptied and refills.
        """
        key = (peer, forwarded, method)
        known = self._decisions.get(key)
        if known is None:
            caller = self._policy.caller(peer, forwarded)
            known = (caller, self._policy.allowed(caller, method))
            if len(self._decisions) >= _MAX_DECISIONS:
                self._decisions.clear()
            self._decisions[key] = known
        return known

    def check(
        self, method: str, forwarded: str | None, grpc_context: grpc.ServicerContext
    ) -> str | None:
        """The caller's identity when it may call `method`; aborts the call otherwise."""
        peer = peer_identity(grpc_context)
        caller, allowed = self._decide(peer, forwarded, method)
        if allowed:
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
        raise AssertionError("abort returned")  # grpc_context.abort raises


def _guarded(
    behavior: Callable[[Any, grpc.ServicerContext], Any],
    check: Check | None,
    counted: MethodMetrics | None,
    handler: grpc.RpcMethodHandler[Any, Any],
) -> Callable[[Any, grpc.ServicerContext], Any]:
    def guarded(request: Any, grpc_context: grpc.ServicerContext) -> Any:
        if check is not None:
            check(_forwarded(grpc_context.invocation_metadata()), grpc_context)
        if counted is None:
            return behavior(request, grpc_context)
        if handler.request_streaming:
            request = counted.counting_received(request)
        else:
            counted.started.inc()
        answer = behavior(request, grpc_context)
        return counted.counting_sent(answer) if handler.response_streaming else answer

    return guarded
