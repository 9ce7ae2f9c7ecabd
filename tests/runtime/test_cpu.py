"""The CPU limiter admits work by its expected wait and refuses the rest at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest

from services.runtime.cpu import CpuBusy, CpuLimiter
from services.runtime.errors import ResourceExhausted
from tests.support import serving_call, wait_for


@contextmanager
def _holding_the_slot(limiter: CpuLimiter) -> Iterator[threading.Event]:
    """Runs a job that holds the limiter's only slot until the yielded event is set."""
    release, started = threading.Event(), threading.Event()

    def block() -> None:
        started.set()
        release.wait(10)

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(limiter.run, block)
        try:
            assert started.wait(5)
            yield release
        finally:
            release.set()
            running.result(10)


def test_a_call_beyond_slots_and_queue_is_refused_at_once() -> None:
    limiter = CpuLimiter(slots=1, queue=0)
    with _holding_the_slot(limiter), pytest.raises(ResourceExhausted):
        limiter.run(lambda: None)


def test_result_of_the_job_is_returned() -> None:
    assert CpuLimiter(slots=2, queue=0).run(lambda: 42) == 42


def test_a_call_whose_expected_wait_exceeds_the_max_wait_is_refused_at_once() -> None:
    """The queue has room, but one job ahead costs more than the caller may wait."""
    limiter = CpuLimiter(slots=1, queue=16, max_wait_seconds=0.5, initial_cost_seconds=2.0)
    with _holding_the_slot(limiter), pytest.raises(CpuBusy) as refused:
        limiter.run(lambda: None)
    assert refused.value.retry_after_seconds >= 1


def test_a_call_whose_expected_wait_fits_waits_for_the_slot_and_runs() -> None:
    limiter = CpuLimiter(slots=1, queue=16, max_wait_seconds=5.0, initial_cost_seconds=0.01)
    with _holding_the_slot(limiter) as release, ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(limiter.run, lambda: "ran")
        release.set()
        assert waiting.result(10) == "ran"


def test_a_waiting_call_that_gets_no_slot_within_the_max_wait_is_refused() -> None:
    """The estimate said it would fit; the running job took longer: refused, not kept."""
    limiter = CpuLimiter(slots=1, queue=16, max_wait_seconds=0.2, initial_cost_seconds=0.01)
    with _holding_the_slot(limiter), pytest.raises(CpuBusy):
        limiter.run(lambda: None)


def test_a_call_whose_deadline_leaves_no_room_to_wait_is_refused_with_retry_after() -> None:
    limiter = CpuLimiter(slots=1, queue=16, max_wait_seconds=5.0, initial_cost_seconds=1.0)
    with _holding_the_slot(limiter), serving_call(seconds_left=1.2) as ctx:
        with pytest.raises(CpuBusy):
            limiter.run(lambda: None)
        assert ("retry-after", "1") in ctx.response_headers


def test_retry_after_covers_the_work_already_admitted() -> None:
    limiter = CpuLimiter(slots=1, queue=0, initial_cost_seconds=3.0)
    with _holding_the_slot(limiter), serving_call(seconds_left=30) as ctx:
        with pytest.raises(CpuBusy) as refused:
            limiter.run(lambda: None)
        assert refused.value.retry_after_seconds == 3
        assert ("retry-after", "3") in ctx.response_headers


def test_a_free_slot_runs_the_job_even_when_the_estimate_is_high() -> None:
    limiter = CpuLimiter(slots=1, queue=0, max_wait_seconds=0.0, initial_cost_seconds=60.0)
    with serving_call(seconds_left=0.5):
        assert limiter.run(lambda: "ran") == "ran"


def test_the_cost_estimate_follows_measured_jobs() -> None:
    now = [0.0]

    def job(seconds: float) -> None:
        now[0] += seconds

    limiter = CpuLimiter(slots=1, queue=0, initial_cost_seconds=0.1, clock=lambda: now[0])
    for _ in range(30):
        limiter.run(lambda: job(1.0))
    assert limiter.cost_seconds == pytest.approx(1.0, abs=0.01)


def test_waiting_calls_get_the_slot_in_arrival_order() -> None:
    limiter = CpuLimiter(slots=1, queue=16, max_wait_seconds=10.0, initial_cost_seconds=0.01)
    order: list[int] = []
    with ThreadPoolExecutor(4) as pool:
        futures: list[Future[Any]] = []
        with _holding_the_slot(limiter):
            for n in range(3):
                futures.append(pool.submit(limiter.run, lambda n=n: order.append(n)))
                _wait_until_queued(limiter, n + 1)
        for future in futures:
            future.result(10)
    assert order == [0, 1, 2]


def _wait_until_queued(limiter: CpuLimiter, count: int) -> None:
    wait_for(lambda: limiter.waiting >= count, f"{count} queued calls", timeout=60)
