"""Delay risks computed per flight ahead of its bookings, so a booking only copies one.

A background pass asks predict-svc for the risk of every upcoming flight that has
none from the current model version, in batches, and stores them with the flights.
Each pass starts by asking for one flight's risk: the answer names the model
version, so a retrained model makes every stored risk stale and the pass refreshes
them. A booking whose flight has no stored risk yet asks predict-svc itself, bounded
by its deadline (`BookingServicer._delay_risk`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import grpc

from airline.predict.v1 import predict_pb2
from services.booking_svc.store import BookingStore, FlightRecord

log = logging.getLogger(__name__)

DELAY_MODEL = "flight-delay"
# predict-svc takes up to 1,000 instances a call; half keeps one call well under a second.
BATCH = 500


class Predictor(Protocol):
    """predict-svc's Predict (`upstreams.PredictClient.predict`)."""

    def predict(
        self,
        model_id: str,
        instances: Sequence[dict[str, Any]],
        metadata: Sequence[tuple[str, str]] = (),
    ) -> predict_pb2.PredictResponse: ...


def features(flight: FlightRecord) -> dict[str, Any]:
    """The model's input for a flight."""
    return {
        "carrier": flight.number[:2],
        "origin": flight.origin,
        "destination": flight.destination,
        "scheduled_departure": flight.departure_time.isoformat(),
    }


class RiskPrecomputer:
    """Keeps every upcoming flight's delay risk stored and current; one pass at a time."""

    def __init__(
        self,
        store: BookingStore,
        predictions: Predictor,
        *,
        interval_seconds: float = 60.0,
        retry_seconds: float = 5.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._predictions = predictions
        self._interval = interval_seconds
        self._retry = retry_seconds
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delay-risks", daemon=True)

    def refresh(self) -> int:
        """One pass: stores a current risk for every upcoming flight; returns how many."""
        now = self._clock()
        # Any upcoming flight will do to learn the model's version: one without a risk,
        # else one with a risk of any version (none is stored with an empty version).
        probe = self._store.flights_needing_risk(None, now, 1) or (
            self._store.flights_needing_risk("", now, 1)
        )
        if not probe:
            return 0
        version = self._predictions.predict(DELAY_MODEL, [features(probe[0])]).model_version
        done = 0
        while not self._stop.is_set():
            flights = self._store.flights_needing_risk(version, now, BATCH)
            if not flights:
                break
            response = self._predictions.predict(DELAY_MODEL, [features(f) for f in flights])
            if response.model_version != version:
                version = response.model_version  # retrained meanwhile: start over with it
                continue
            risks = {
                f.flight_id: float(p.delay_probability)
                for f, p in zip(flights, response.predictions, strict=True)
            }
            self._store.record_risks(version, risks)
            done += len(risks)
        return done

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self._interval
            try:
                done = self.refresh()
            except grpc.RpcError as err:
                # predict-svc not up yet, or busy: bookings ask it themselves meanwhile.
                log.warning("delay risks not refreshed", extra={"code": err.code().name})
                wait = self._retry
            else:
                if done:
                    log.info("delay risks stored", extra={"flights": done})
            self._stop.wait(wait)
