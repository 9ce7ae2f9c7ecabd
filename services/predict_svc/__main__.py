"""Starts one predict-svc instance: `python -m services.predict_svc`."""

from functools import partial

from services.predict_svc.server import SERVICE_NAME, PredictConfig, build
from services.runtime.config import ServerConfig
from services.runtime.server import serve

if __name__ == "__main__":
    serve(ServerConfig.from_env(SERVICE_NAME), partial(build, settings=PredictConfig.from_env()))
