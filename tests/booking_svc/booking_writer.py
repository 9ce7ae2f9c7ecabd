"""A booking-svc stand-in for the kill -9 test: threads booking through one store.

Run in a child process (multiprocessing, spawn): every booking id is sent to the
parent only after `create_booking` returned it, as the servicer answers a client.
"""

from __future__ import annotations

import threading
import uuid
from multiprocessing.connection import Connection

from services.booking_svc.domain import SeatClass, price_for
from services.booking_svc.store import BookingStore
from services.runtime.db import make_engine


def book_until_killed(database_url: str, flight_id: str, threads: int, out: Connection) -> None:
    store = BookingStore(make_engine(database_url))
    sending = threading.Lock()

    def book(worker: int) -> None:
        while True:
            booking, _ = store.create_booking(
                user_id=f"user-{worker}",
                request_id=uuid.uuid4().hex,
                flight_id=flight_id,
                seat_class=SeatClass.ECONOMY,
                passenger_name="Ada Lovelace",
                price_for=price_for,
            )
            with sending:
                out.send(booking.booking_id)

    workers = [threading.Thread(target=book, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
