"""Typed clients for the calls services make to each other.

Each wraps a stub on a channel from `clients.dial`, so every call carries a
deadline derived from the request being served, and declares which of its
methods are idempotent (and so retried on UNAVAILABLE).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from airline.auth.v1 import auth_pb2, auth_pb2_grpc
from airline.predict.v1 import predict_pb2, predict_pb2_grpc
from airline.user.v1 import user_internal_pb2, user_internal_pb2_grpc, user_pb2
from services.runtime import context
from services.runtime.batching import BatchLookup
from services.runtime.clients import ANSWER_MARGIN_SECONDS, dial
from services.runtime.errors import DeadlineExceeded, DomainError, ResourceExhausted, Unavailable
from services.runtime.identity import CredentialSource
from services.runtime.limits import ID_CHARS, LOOKUP_MAX_IDS
from services.runtime.metrics import ClientMetrics

_AUTH = "airline.auth.v1.AuthService"
_USER_INTERNAL = "airline.user.v1.UserInternalService"
_PREDICT = "airline.predict.v1.PredictionService"
_LOOKUP_USERS = f"/{_USER_INTERNAL}/LookupUsers"


class AuthClient:
    """auth-svc: the public keys that verify access tokens."""

    def __init__(
        self,
        target: str,
        metrics: ClientMetrics | None,
        timeout: float = 2.0,
        identity: CredentialSource | None = None,
    ):
        self.channel = dial(
            target,
            default_timeout=timeout,
            idempotent=[(_AUTH, "GetJwks")],
            metrics=metrics,
            identity=identity,
        )
        self._stub = auth_pb2_grpc.AuthServiceStub(self.channel)

    def jwks(self) -> Sequence[dict[str, Any]]:
        response = self._stub.GetJwks(auth_pb2.GetJwksRequest())
        return [
            json_format.MessageToDict(k, preserving_proto_field_name=True) for k in response.keys
        ]


class UserClient:
    """user-svc's internal methods: password checks and lookups."""

    def __init__(
        self,
        target: str,
        metrics: ClientMetrics | None,
        timeout: float = 5.0,
        identity: CredentialSource | None = None,
    ):
        self.channel = dial(
            target,
            default_timeout=timeout,
            idempotent=[
                (_USER_INTERNAL, "LookupUser"),
                (_USER_INTERNAL, "LookupUsers"),
                (_USER_INTERNAL, "VerifyPassword"),
            ],
            metrics=metrics,
            identity=identity,
        )
        self._stub = user_internal_pb2_grpc.UserInternalServiceStub(self.channel)
        observe = metrics.batch_keys(_LOOKUP_USERS).observe if metrics is not None else None
        self._actives: BatchLookup[str, bool] = BatchLookup(
            self._lookup_actives,
            name="user-svc",
            default_timeout=timeout,
            max_batch=LOOKUP_MAX_IDS,
            margin=ANSWER_MARGIN_SECONDS,
            observe=observe,
        )

    def verify_password(self, email: str, password: str) -> user_pb2.User:
        request = user_internal_pb2.VerifyPasswordRequest(email=email, password=password)
        return self._stub.VerifyPassword(request).user

    def lookup(self, user_id: str) -> user_pb2.User:
        request = user_internal_pb2.LookupUserRequest(user_id=user_id)
        return self._stub.LookupUser(request).user

    def active(self, user_id: str) -> bool | None:
        """The user's `active` flag, None if there is no such user (a `context.AccountLookup`).

        Asked on every protected call, within the served call's remaining deadline,
        together with the other calls asking at the same moment (one LookupUsers for
        all: `batching.BatchLookup`); a user-svc that cannot answer fails the call
        rather than letting it through.
        """
        if not user_id or len(user_id) > ID_CHARS:
            return None  # no user has such an id; asking would fail the whole batch
        try:
            return self._actives(user_id)
        except grpc.RpcError as err:
            raise dependency_failed(err, "user-svc") from None

    @property
    def checks_waiting(self) -> int:
        """How many account checks wait for the next LookupUsers."""
        return self._actives.waiting

    def _lookup_actives(
        self, user_ids: Sequence[str], timeout: float, request_ids: Sequence[str]
    ) -> dict[str, bool]:
        # The call goes under its first member's id; user-svc logs every member's.
        request = user_internal_pb2.LookupUsersRequest(user_ids=user_ids, request_ids=request_ids)
        metadata = (("x-request-id", request_ids[0]),) if request_ids else ()
        response = self._stub.LookupUsers(request, timeout=timeout, metadata=metadata)
        return {user.user_id: user.active for user in response.users}


class PredictClient:
    """predict-svc: delay risk for flights."""

    def __init__(
        self,
        target: str,
        metrics: ClientMetrics | None,
        timeout: float = 0.5,
        identity: CredentialSource | None = None,
    ):
        self.channel = dial(
            target,
            default_timeout=timeout,
            idempotent=[(_PREDICT, "Predict")],
            metrics=metrics,
            identity=identity,
        )
        self._stub = predict_pb2_grpc.PredictionServiceStub(self.channel)

    def predict(
        self,
        model_id: str,
        instances: Sequence[dict[str, Any]],
        metadata: Sequence[tuple[str, str]] = (),
    ) -> predict_pb2.PredictResponse:
        structs = []
        for instance in instances:
            s = struct_pb2.Struct()
            s.update(instance)
            structs.append(s)
        request = predict_pb2.PredictRequest(model_id=model_id, instances=structs)
        return self._stub.Predict(request, metadata=tuple(metadata))


# Codes a dependency returns that mean "the dependency could not answer", as
# opposed to an answer about the request.
_DEPENDENCY_FAULTS = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DATA_LOSS,
}


def dependency_failed(err: grpc.RpcError, dependency: str) -> DomainError:
    """The error to answer with when a call to `dependency` failed with `err`.

    Faults of the dependency become UNAVAILABLE (retryable by the client); a passed
    deadline stays DEADLINE_EXCEEDED; a dependency shedding load stays
    RESOURCE_EXHAUSTED with its `retry-after`, so the caller backs off instead of
    every proxy on the way retrying into the overload; any other answer is the
    caller's to act on and keeps its code and message.
    """
    code = err.code()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        seconds = _retry_after(err)
        context.advise_retry_after(seconds)
        return ResourceExhausted(
            f"{dependency} is busy; retry later",
            reason="DEPENDENCY_BUSY",
            metadata={"retry_after_seconds": str(seconds)},
        )
    if code in _DEPENDENCY_FAULTS:
        return Unavailable(f"{dependency} is unavailable; retry later")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"{dependency} did not answer in time")
    error = DomainError(err.details() or code.name)
    error.code = code
    error.reason = code.name
    return error


def _retry_after(err: grpc.RpcError) -> int:
    """The whole seconds a refusing dependency asked for (its `retry-after`), at least 1."""
    metadata = [*(err.initial_metadata() or ()), *(err.trailing_metadata() or ())]  # type: ignore[attr-defined]
    for key, value in metadata:
        if key == "retry-after" and isinstance(value, str) and value.isdigit():
            return max(1, int(value))
    return 1
