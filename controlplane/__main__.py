"""`python -m controlplane`: watch Consul, serve ADS to Envoy, stop cleanly on SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from controlplane.app import ControlPlane
from controlplane.config import ControlPlaneConfig
from services.runtime import logs

log = logging.getLogger("controlplane")


def main() -> None:
    config = ControlPlaneConfig.from_env()
    logs.configure("controlplane", config.log_level)
    # httpx logs every request at INFO: one line per blocking query is noise, not events.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    control_plane = ControlPlane(config)
    control_plane.start()
    stop.wait()
    control_plane.stop()


if __name__ == "__main__":
    main()
