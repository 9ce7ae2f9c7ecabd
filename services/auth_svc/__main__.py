"""Starts one auth-svc instance: `python -m services.auth_svc`."""

from functools import partial

from services.auth_svc.server import SERVICE_NAME, AuthConfig, build
from services.runtime.config import ServerConfig
from services.runtime.server import serve

if __name__ == "__main__":
    serve(ServerConfig.from_env(SERVICE_NAME), partial(build, settings=AuthConfig.from_env()))
