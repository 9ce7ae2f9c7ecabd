"""Delay risks stored with flights: a booking copies its flight's, predict-svc is not asked.

booking-svc counts where each booking's risk came from (`booking_delay_risk_total`
by `source`); these tests read it from every instance's metrics port, as an
operator would.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.integration.conftest import Account, Mesh
from tests.integration.rest import Catalogue, book, timestamp
from tests.support import wait_for

pytestmark = pytest.mark.integration


def _risks(mesh: Mesh, source: str) -> float:
    """Bookings whose delay risk came from `source`, summed over booking-svc's instances."""
    pattern = re.compile(rf'^booking_delay_risk_total\{{source="{source}"\}} (\S+)$', re.M)
    total = 0.0
    for instance in mesh.instances("booking-svc"):
        port = instance["Service"]["Meta"]["metrics_port"]
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        total += sum(float(found) for found in pattern.findall(text))
    return total


def _seeded_flights(http: httpx.Client) -> Iterator[str]:
    """Seeded flights, soonest first (booking-svc stores the soonest flights' risks first),
    over and over: on a slow machine the batch may take longer than one booking each."""
    page = http.get("/v1/flights", params={"page_size": 100}).raise_for_status().json()
    soon = datetime.now(UTC) + timedelta(hours=1)
    found = [f["flight_id"] for f in page["flights"] if timestamp(f["departure_time"]) > soon]
    assert found, "no seeded flight departs later than an hour from now"
    return itertools.cycle(found)


def test_a_new_flight_has_its_risk_stored_before_its_first_booking(
    mesh: Mesh, catalogue: Catalogue, flyer: Account, http: httpx.Client
) -> None:
    flight = catalogue.create(seats=3)
    stored, asked = _risks(mesh, "stored"), _risks(mesh, "asked")
    booking = book(http, flyer, flight["flight_id"])
    assert 0 <= booking["delay_risk"] <= 1
    assert (_risks(mesh, "stored"), _risks(mesh, "asked")) == (stored + 1, asked)


def test_bookings_on_seeded_flights_copy_the_risks_computed_in_batches(
    mesh: Mesh, flyer: Account, http: httpx.Client
) -> None:
    """The first pass after start stores the seeded flights' risks; bookings then copy them."""
    flights = _seeded_flights(http)

    def booked_with_a_stored_risk() -> bool:
        before = _risks(mesh, "stored")
        booking = book(http, flyer, next(flights))
        assert 0 <= booking["delay_risk"] <= 1
        return _risks(mesh, "stored") > before

    wait_for(booked_with_a_stored_risk, "a booking with a stored risk", timeout=180, interval=1)
