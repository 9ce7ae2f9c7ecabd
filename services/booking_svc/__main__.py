"""Starts one booking-svc instance: `python -m services.booking_svc`."""

from functools import partial

from services.booking_svc.server import SERVICE_NAME, BookingConfig, build
from services.runtime.config import ServerConfig
from services.runtime.server import serve

if __name__ == "__main__":
    serve(ServerConfig.from_env(SERVICE_NAME), partial(build, settings=BookingConfig.from_env()))
