"""Domain errors and their one mapping to gRPC status codes with google.rpc details.

Domain code raises these; the server interceptor turns them into a status with an
ErrorInfo (reason, domain) and, for bad input, a BadRequest naming each field.
Nothing else in the code base builds a gRPC error status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "airline.example.com"


class DomainError(Exception):
    """An expected failure a client can act on; its message is safe to send."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    reason: str = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        violations: Iterable[tuple[str, str]] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.violations = tuple(violations)
        self.metadata = dict(metadata or {})

    def to_status(self) -> grpc.Status:
        """The gRPC status, with ErrorInfo and (for field violations) BadRequest details."""
        details = [
            _pack(
                error_details_pb2.ErrorInfo(
                    reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata
                )
            )
        ]
        if self.violations:
            details.append(
                _pack(
                    error_details_pb2.BadRequest(
                        field_violations=[
                            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                            for f, d in self.violations
                        ]
                    )
                )
            )
        return status(self.code, self.message, details)


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: Iterable[tuple[str, str]], message: str = "") -> None:
        found = tuple(violations)
        text = message or "; ".join(f"{f}: {d}" for f, d in found) or "invalid argument"
        super().__init__(text, violations=found)


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class DeadlineExceeded(DomainError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


def status(code: grpc.StatusCode, message: str, details: Iterable[any_pb2.Any] = ()) -> grpc.Status:
    rpc_code = code.value[0]
    result: grpc.Status = rpc_status.to_status(
        status_pb2.Status(code=rpc_code, message=message, details=details)
    )
    return result


def internal_status(request_id: str) -> grpc.Status:
    """The status for an unexpected failure: names the request id, nothing else."""
    info = error_details_pb2.ErrorInfo(
        reason="INTERNAL", domain=ERROR_DOMAIN, metadata={"request_id": request_id}
    )
    return status(
        grpc.StatusCode.INTERNAL,
        f"internal error; quote request id {request_id}",
        [_pack(info)],
    )


def field_violations(err: grpc.RpcError) -> list[tuple[str, str]]:
    """The BadRequest field violations a failed call carries, for clients and tests."""
    found = rpc_status.from_call(err)
    result: list[tuple[str, str]] = []
    for detail in found.details if found else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            result += [(v.field, v.description) for v in bad.field_violations]
    return result


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def require_fields(**fields: str) -> None:
    """InvalidArgument naming every empty field, for fields marked REQUIRED in the proto."""
    missing = [(name, "required") for name, value in fields.items() if not value]
    if missing:
        raise InvalidArgument(missing)


def required(field: str, value: str) -> str:
    """`value`, or InvalidArgument naming `field` when it is empty."""
    require_fields(**{field: value})
    return value
