"""Starts the rate limit service: `python -m ratelimit`."""

from functools import partial

from ratelimit.server import SERVICE_NAME, RateLimitConfig, build
from services.runtime.config import ServerConfig
from services.runtime.server import serve

if __name__ == "__main__":
    serve(ServerConfig.from_env(SERVICE_NAME), partial(build, settings=RateLimitConfig.from_env()))
