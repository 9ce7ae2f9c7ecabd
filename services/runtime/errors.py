"""Domain errors and their one mapping to gRPC status codes with google.rpc details.

Domain code raises these; the server interceptor turns them into a status with an
ErrorInfo (reason, domain) and, for bad input, a BadRequest naming each field.
Nothing else in the code base builds a gRPC error status, so the size bound lives
here too: a status travels in HTTP/2 trailers, and one that outgrows Envoy's header
limit resets the upstream connection (and every call sharing it) instead of
answering. Whatever the input, a status stays within a few KiB.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "airline.example.com"

# Sizes in UTF-8 bytes. With them a whole status (message, ErrorInfo, BadRequest)
# serialises to under 5 KiB, well inside Envoy's 60 KiB header limit even base64'd.
MAX_VIOLATIONS = 50
"""Field violations kept in a BadRequest at most; the message counts the rest."""
MAX_VIOLATION_BYTES = 3072
"""All kept violations together; fewer than MAX_VIOLATIONS are kept when they are long."""
MAX_MESSAGE_BYTES = 512
MAX_FIELD_BYTES = 128
MAX_DESCRIPTION_BYTES = 256
MAX_METADATA_ENTRIES = 8
MAX_METADATA_BYTES = 64
_VIOLATIONS_IN_MESSAGE = 3


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
        message = clip(message, MAX_MESSAGE_BYTES)
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.violations = _bounded(violations)
        self.metadata = {
            clip(k, MAX_METADATA_BYTES): clip(v, MAX_METADATA_BYTES)
            for k, v in list((metadata or {}).items())[:MAX_METADATA_ENTRIES]
        }

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
        super().__init__(message or _summary(found), violations=found)


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


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, ending in "..." when cut."""
    raw = text.encode(errors="replace")  # a lone surrogate must not fail the error path
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode(errors="ignore") + "..."


def _bounded(violations: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The first violations, each clipped, up to MAX_VIOLATIONS and MAX_VIOLATION_BYTES."""
    kept: list[tuple[str, str]] = []
    spent = 0
    for field, description in violations:
        pair = (clip(field, MAX_FIELD_BYTES), clip(description, MAX_DESCRIPTION_BYTES))
        spent += sum(len(part.encode(errors="replace")) for part in pair)
        if len(kept) == MAX_VIOLATIONS or spent > MAX_VIOLATION_BYTES:
            break
        kept.append(pair)
    return tuple(kept)


def _summary(violations: tuple[tuple[str, str], ...]) -> str:
    """A message naming the first few violations and counting the rest."""
    if not violations:
        return "invalid argument"
    named = [f"{f}: {d}" for f, d in _bounded(violations[:_VIOLATIONS_IN_MESSAGE])]
    rest = len(violations) - len(named)
    if rest:
        kept = len(_bounded(violations))
        named.append(f"and {rest} more ({len(violations)} in all, {kept} listed in the details)")
    return "; ".join(named)


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
