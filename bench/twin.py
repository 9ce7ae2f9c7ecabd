"""The FastAPI twin of GetFlight and ListFlights that `bench/run.py` measures the edge against.

A plain REST app on booking-svc's own database through the project's own `BookingStore`,
answering with the very JSON bytes the edge sends: the mesh's messages, printed as
Envoy's transcoder prints them (proto field names, compact, defaults left out).
`bench/run.py` starts its workers with `serve`: uvicorn processes sharing one listening
socket, as `uvicorn --workers N` does, but made with IPPROTO_TCP. uvicorn's own
`--workers` socket has protocol 0, so asyncio never sets TCP_NODELAY on its
connections and a lone request waits ~40 ms for a delayed ACK (measured: c=1 p50
45 ms with `--workers 2`, 1.1 ms with this socket).
"""

from __future__ import annotations

import json
import socket

import uvicorn
from fastapi import FastAPI, Response
from google.protobuf import json_format
from google.protobuf.message import Message

from airline.booking.v1 import booking_pb2
from services.booking_svc.domain import FlightFilters, FlightNotFound, OrderBy
from services.booking_svc.servicer import flight_message
from services.booking_svc.store import BookingStore
from services.runtime.db import make_engine, service_secret
from services.runtime.pagination import PageTokens

_JSON = "application/json"
# The query the first page of an unfiltered ListFlights signs its next-page token with.
_FIRST_PAGE_QUERY = {
    "origin": None,
    "destination": None,
    "departure_date": "",
    "order_by": ["departure_time", False],
}


def listening_socket() -> socket.socket:
    """A TCP socket listening on a free loopback port, for every worker to accept on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def serve(sock: socket.socket, database_url: str) -> None:
    """One worker process: uvicorn serving the twin on the shared socket until SIGTERM."""
    config = uvicorn.Config(create_app(database_url), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def create_app(database_url: str) -> FastAPI:
    """The app, with its store opened once per worker process."""
    engine = make_engine(database_url)
    store = BookingStore(engine)
    tokens = PageTokens(service_secret(engine, "page_tokens"))
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/v1/flights/{flight_id}")
    def get_flight(flight_id: str) -> Response:
        try:
            flight = store.get_flight(flight_id)
        except FlightNotFound:
            return Response(b'{"code":5,"message":"flight not found"}', 404, media_type=_JSON)
        return Response(edge_json(flight_message(flight)), media_type=_JSON)

    @app.get("/v1/flights")
    def list_flights(page_size: int = 20) -> Response:
        flights, cursor = store.list_flights(FlightFilters(), OrderBy(), None, page_size)
        token = tokens.encode(cursor.to_dict(), _FIRST_PAGE_QUERY) if cursor else ""
        page = booking_pb2.ListFlightsResponse(
            flights=[flight_message(f) for f in flights], next_page_token=token
        )
        return Response(edge_json(page), media_type=_JSON)

    return app


def edge_json(message: Message) -> bytes:
    """`message` as Envoy's transcoder prints it."""
    fields = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
