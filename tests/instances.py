"""Several instances of one service started at the same moment, as a deployment does."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, ExitStack, contextmanager

from services.runtime.server import Server

START_TIMEOUT_SECONDS = 600


@contextmanager
def started_together(*launches: AbstractContextManager[Server]) -> Iterator[list[Server]]:
    """Enters every launch on its own thread, released together; stops them all after.

    Each launch builds its service (schema, seed, first key, model) and starts it, so
    whatever a service does once at start races exactly as two processes' would.
    """
    barrier = threading.Barrier(len(launches))

    def enter(launch: AbstractContextManager[Server]) -> Server:
        barrier.wait(timeout=30)
        return launch.__enter__()

    with ExitStack() as running:
        with ThreadPoolExecutor(max_workers=len(launches)) as pool:
            futures = [pool.submit(enter, launch) for launch in launches]
            wait(futures, timeout=START_TIMEOUT_SECONDS)
        for launch, future in zip(launches, futures, strict=True):
            if future.done() and future.exception() is None:
                running.push(launch)
        yield [future.result(timeout=0) for future in futures]
