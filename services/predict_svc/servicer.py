"""PredictionService: the RPC methods, thin over the model domain."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from google.protobuf import json_format

from airline.predict.v1 import predict_pb2, predict_pb2_grpc
from services.predict_svc.model import FEATURES, TrainedModel, validate_instances
from services.runtime import context
from services.runtime.errors import InvalidArgument, NotFound
from services.runtime.identity import spiffe_id
from services.runtime.messages import timestamp
from services.runtime.pagination import PageTokens, page_size

# Workloads that may predict on no user's behalf: booking-svc computes every flight's
# delay risk ahead of its bookings (services/booking_svc/risks.py). The caller is the
# mesh identity the authorization checked, never a claim of the request; a call from
# the edge (a client's) always needs a live user.
UNATTENDED_CALLERS = frozenset({spiffe_id("booking-svc")})


class PredictionServicer(predict_pb2_grpc.PredictionServiceServicer):
    def __init__(
        self,
        models: Mapping[str, TrainedModel],
        tokens: PageTokens,
        accounts: context.AccountLookup,
    ) -> None:
        self._models = dict(models)
        self._tokens = tokens
        self._accounts = accounts

    def ListModels(
        self, request: predict_pb2.ListModelsRequest, _: grpc.ServicerContext
    ) -> predict_pb2.ListModelsResponse:
        size = page_size(request.page_size)
        cursor = self._tokens.decode(request.page_token, {})
        after = str(cursor["after"]) if cursor else ""
        ids = [m for m in sorted(self._models) if m > after]
        page, rest = ids[:size], ids[size:]
        token = self._tokens.encode({"after": page[-1]}, {}) if rest else ""
        return predict_pb2.ListModelsResponse(
            models=[_model_message(self._models[m]) for m in page], next_page_token=token
        )

    def GetModel(
        self, request: predict_pb2.GetModelRequest, _: grpc.ServicerContext
    ) -> predict_pb2.Model:
        return _model_message(self._model(request.model_id))

    def Predict(
        self, request: predict_pb2.PredictRequest, _: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        call = context.require()
        if call.principal is not None or call.caller not in UNATTENDED_CALLERS:
            call.require_live_principal(self._accounts)
        model = self._model(request.model_id)
        raw = [json_format.MessageToDict(instance) for instance in request.instances]
        rows, violations = validate_instances(raw)
        if violations:
            raise InvalidArgument([(v.field, v.description) for v in violations])
        # Rows are abandoned once the caller stops waiting (booking-svc waits 0.3 s).
        probabilities = model.predict_proba(rows, time_left=call.time_remaining)
        return predict_pb2.PredictResponse(
            predictions=[
                predict_pb2.Prediction(delay_probability=float(p), delayed=bool(p >= 0.5))
                for p in probabilities
            ],
            model_version=model.version,
        )

    def _model(self, model_id: str) -> TrainedModel:
        if not model_id:
            raise InvalidArgument([("model_id", "required")])
        model = self._models.get(model_id)
        if model is None:
            raise NotFound("model not found", metadata={"model_id": model_id})
        return model


def _model_message(model: TrainedModel) -> predict_pb2.Model:
    return predict_pb2.Model(
        model_id=model.model_id,
        version=model.version,
        description=model.description,
        features=[
            predict_pb2.Feature(
                name=f.name,
                type=predict_pb2.Feature.Type.Value(f.type),
                description=f.description,
            )
            for f in FEATURES
        ],
        metrics=model.metrics,
        create_time=timestamp(model.create_time),
    )
