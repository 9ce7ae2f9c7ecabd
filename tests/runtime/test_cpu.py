"""The CPU limiter admits a bounded number of jobs and refuses the rest at once."""

import threading

import pytest

from services.runtime.cpu import CpuLimiter
from services.runtime.errors import ResourceExhausted


def test_a_call_beyond_slots_and_queue_is_refused_at_once() -> None:
    limiter = CpuLimiter(slots=1, queue=0)
    release, started = threading.Event(), threading.Event()

    def block() -> None:
        started.set()
        release.wait(5)

    running = threading.Thread(target=limiter.run, args=(block,))
    running.start()
    try:
        assert started.wait(5)
        with pytest.raises(ResourceExhausted):
            limiter.run(lambda: None)
    finally:
        release.set()
        running.join(5)


def test_result_of_the_job_is_returned() -> None:
    assert CpuLimiter(slots=2, queue=0).run(lambda: 42) == 42
