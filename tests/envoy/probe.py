"""A small real gRPC server that stands in for every service behind a test Envoy.

It answers on demand what the real services only do in rare states: a booking
without `delay_risk`, a flight with no seat left, a deactivated user, UNAVAILABLE
on the first try, RESOURCE_EXHAUSTED (with or without its own Retry-After),
UNAUTHENTICATED, a trailer, the deadline and metadata it received. Its own RS256 key signs
tokens and is served as auth-svc's JWKS, so jwt_authn at the edge accepts them.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections import Counter
from concurrent import futures
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from grpc_health.v1 import health, health_pb2_grpc

from airline.auth.v1 import auth_pb2, auth_pb2_grpc
from airline.booking.v1 import booking_pb2, booking_pb2_grpc
from airline.predict.v1 import predict_pb2, predict_pb2_grpc
from airline.user.v1 import user_pb2, user_pb2_grpc

KID = "probe-key"


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Probe(
    auth_pb2_grpc.AuthServiceServicer,
    booking_pb2_grpc.BookingServiceServicer,
    predict_pb2_grpc.PredictionServiceServicer,
    user_pb2_grpc.UserServiceServicer,
):
    """Every public service at once; model ids steer what GetModel does."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.attempts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        for add in (
            auth_pb2_grpc.add_AuthServiceServicer_to_server,
            booking_pb2_grpc.add_BookingServiceServicer_to_server,
            predict_pb2_grpc.add_PredictionServiceServicer_to_server,
            user_pb2_grpc.add_UserServiceServicer_to_server,
        ):
            add(self, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop(0).wait(5)

    def token(self, subject: str = "probe-user", **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "sub": subject, "email": "probe@example.com", "roles": ["user"],
            "iat": now, "exp": now + 900, "iss": "airline-auth", "aud": "airline-api",
            "jti": uuid.uuid4().hex, **claims,
        }  # fmt: skip
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": KID})

    def count(self, key: str) -> int:
        with self._lock:
            self.attempts[key] += 1
            return self.attempts[key]

    # AuthService: only the keys.
    def GetJwks(self, request: Any, context: grpc.ServicerContext) -> auth_pb2.GetJwksResponse:
        numbers = self.key.public_key().public_numbers()
        key = auth_pb2.Jwk(
            kty="RSA", use="sig", kid=KID, alg="RS256", n=_b64(numbers.n), e=_b64(numbers.e)
        )
        return auth_pb2.GetJwksResponse(keys=[key])

    # PredictionService.GetModel: the model id says what to do.
    def GetModel(self, request: Any, context: grpc.ServicerContext) -> predict_pb2.Model:
        attempt = self.count(request.model_id)
        if request.model_id.startswith("down-"):
            context.abort(grpc.StatusCode.UNAVAILABLE, "probe is down")
        if request.model_id.startswith("flaky-") and attempt == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "probe failed the first try")
        if request.model_id.startswith("busy-"):
            context.set_trailing_metadata((("retry-after", "7"),))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "probe is busy")
        if request.model_id.startswith("exhausted-"):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "probe is exhausted")
        if request.model_id.startswith("unauthenticated-"):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "probe refuses the token")
        context.set_trailing_metadata((("x-probe-trailer", "kept"),))
        if request.model_id.startswith("created-"):
            context.send_initial_metadata(
                (("x-http-status", "201"), ("location", f"/v1/models/{request.model_id}"))
            )
        seen = {
            "time_remaining": context.time_remaining(),
            "metadata": {k: v for k, v in context.invocation_metadata() if isinstance(v, str)},
            "attempt": attempt,
        }
        return predict_pb2.Model(model_id=request.model_id, description=json.dumps(seen))

    # BookingService: a flight with no seat left, a booking with no delay_risk.
    def GetFlight(self, request: Any, context: grpc.ServicerContext) -> booking_pb2.Flight:
        return booking_pb2.Flight(
            flight_id=request.flight_id, number="UA1", seats_total=1, seats_available=0
        )

    def GetBooking(self, request: Any, context: grpc.ServicerContext) -> booking_pb2.Booking:
        return booking_pb2.Booking(
            booking_id=request.booking_id, state=booking_pb2.Booking.CONFIRMED, price_cents=0
        )

    # UserService: a deactivated user with no roles.
    def GetUser(self, request: Any, context: grpc.ServicerContext) -> user_pb2.User:
        return user_pb2.User(user_id=request.user_id, active=False)
