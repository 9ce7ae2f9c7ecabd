"""A booking that was answered survives kill -9 of its instance, group commit or not."""

from __future__ import annotations

import multiprocessing
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.booking_svc.domain import NewFlight
from services.booking_svc.store import BookingStore
from services.runtime.db import make_engine
from tests.booking_svc.booking_writer import book_until_killed

# Answered bookings to collect before the kill: enough that batches of several commit.
ANSWERED = 300
WAIT_SECONDS = 120


def all_booking_ids(store: BookingStore) -> set[str]:
    found: set[str] = set()
    page, cursor = store.list_bookings(None, None, 100)
    while True:
        found |= {b.booking_id for b in page}
        if cursor is None:
            return found
        page, cursor = store.list_bookings(None, cursor, 100)


def test_every_answered_booking_survives_kill_9(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'booking.db'}"
    store = BookingStore(make_engine(url))
    store.create_schema()
    departs = datetime.now(UTC) + timedelta(days=3)
    flight = store.create_flight(
        NewFlight("B6123", "JFK", "LAX", departs, departs + timedelta(hours=6), 1000, 19999)
    )
    receive, send = multiprocessing.get_context("spawn").Pipe(duplex=False)
    child = multiprocessing.get_context("spawn").Process(
        target=book_until_killed, args=(url, flight.flight_id, 16, send)
    )
    child.start()
    answered: list[str] = []
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while len(answered) < ANSWERED:
            assert time.monotonic() < deadline, f"only {len(answered)} bookings answered"
            if receive.poll(timeout=1):
                answered.append(receive.recv())
    finally:
        child.kill()  # SIGKILL, by the child's PID
        child.join(timeout=30)
    while receive.poll():  # answered before the kill landed
        answered.append(receive.recv())

    stored = all_booking_ids(store)
    assert set(answered) <= stored
    seats = store.get_flight(flight.flight_id).seats_available
    assert seats == flight.seats_total - len(stored)
