"""Starts one user-svc instance: `python -m services.user_svc`."""

from functools import partial

from services.runtime.config import ServerConfig
from services.runtime.server import serve
from services.user_svc.server import SERVICE_NAME, UserConfig, build

if __name__ == "__main__":
    serve(ServerConfig.from_env(SERVICE_NAME), partial(build, settings=UserConfig.from_env()))
