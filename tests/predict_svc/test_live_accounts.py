"""predict-svc refuses the still-valid tokens of deleted and deactivated accounts at once."""

from __future__ import annotations

from google.protobuf import struct_pb2
from grpc import StatusCode

from airline.predict.v1 import predict_pb2
from tests.conftest import Account, Stack
from tests.live_accounts import deactivate, delete, refusal


def _predict(stack: Stack, account: Account) -> object:
    instance = struct_pb2.Struct()
    instance.update(
        {
            "carrier": "UA",
            "origin": "EWR",
            "destination": "ORD",
            "scheduled_departure": "2026-12-01T17:30:00-05:00",
        }
    )
    request = predict_pb2.PredictRequest(model_id="flight-delay", instances=[instance])
    return stack.predictions.Predict(request, metadata=account.auth, timeout=10)


def test_a_live_users_token_predicts(stack: Stack) -> None:
    assert _predict(stack, stack.sign_up())


def test_a_deleted_users_token_is_unauthenticated_on_the_next_call(stack: Stack) -> None:
    me = stack.sign_up()
    delete(stack, me)

    assert refusal(lambda: _predict(stack, me)) == StatusCode.UNAUTHENTICATED


def test_a_deactivated_users_token_is_permission_denied_on_the_next_call(stack: Stack) -> None:
    me = stack.sign_up()
    deactivate(stack, me)

    assert refusal(lambda: _predict(stack, me)) == StatusCode.PERMISSION_DENIED
