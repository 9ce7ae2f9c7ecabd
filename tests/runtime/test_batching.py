"""BatchLookup: callers that ask while a call is in flight go together in the next one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest

from services.runtime import context
from services.runtime.batching import BatchLookup
from services.runtime.errors import DeadlineExceeded, Unavailable
from tests.support import serving_call, wait_for

MARGIN = 0.05


@dataclass
class Fetch:
    """A fetch that records each call and, while `hold` is clear, blocks in it."""

    answers: Mapping[str, int] = field(default_factory=dict)
    calls: list[tuple[list[str], float, list[str]]] = field(default_factory=list)
    inside: list[context.RequestContext | None] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)
    fail_with: Exception | None = None

    def __post_init__(self) -> None:
        self.hold.set()

    def __call__(
        self, keys: Sequence[str], timeout: float, request_ids: Sequence[str]
    ) -> dict[str, int]:
        self.calls.append((list(keys), timeout, list(request_ids)))
        self.inside.append(context.current())
        assert self.hold.wait(10)
        if self.fail_with is not None:
            raise self.fail_with
        return {key: self.answers[key] for key in keys if key in self.answers}


def lookup_for(fetch: Fetch, **kwargs: Any) -> BatchLookup[str, int]:
    options: dict[str, Any] = {"default_timeout": 30.0, "max_batch": 100, **kwargs}
    return BatchLookup(fetch, name="user-svc", margin=MARGIN, **options)


@dataclass
class Asker:
    """One caller on its own thread: what it got, or the error it raised."""

    thread: threading.Thread
    answers: list[object] = field(default_factory=list)


def ask(
    lookup: BatchLookup[str, int], key: str, request_id: str = "", seconds_left: float = 30.0
) -> Asker:
    asker = Asker(threading.Thread(target=lambda: None))

    def run() -> None:
        try:
            with serving_call(request_id or f"req-{key}", seconds_left):
                asker.answers.append(lookup(key))
        except Exception as error:  # noqa: BLE001 - the test reads what the caller got
            asker.answers.append(error)

    asker.thread = threading.Thread(target=run)
    asker.thread.start()
    return asker


def first_call_in_flight(fetch: Fetch, lookup: BatchLookup[str, int]) -> Asker:
    """A caller whose call blocks until `fetch.hold` is set."""
    fetch.hold.clear()
    first = ask(lookup, "ada", "req-first")
    wait_for(lambda: len(fetch.calls) == 1, "the first call in flight")
    return first


def pending(lookup: BatchLookup[str, int]) -> int:
    return lookup.waiting


def joined(*askers: Asker) -> None:
    for asker in askers:
        asker.thread.join(timeout=10)
        assert not asker.thread.is_alive()


def test_a_caller_alone_is_answered_by_a_call_of_its_own_key_at_once() -> None:
    fetch = Fetch({"ada": 1})
    lookup = lookup_for(fetch)
    with serving_call("req-1", 2.0):
        assert lookup("ada") == 1
        assert lookup("nobody") is None
    assert [keys for keys, _, _ in fetch.calls] == [["ada"], ["nobody"]]
    assert fetch.calls[0][2] == ["req-1"]
    assert fetch.calls[0][1] <= 2.0 - MARGIN


def test_callers_arriving_during_a_call_go_together_in_the_next_one() -> None:
    fetch = Fetch({"ada": 1, "bob": 2, "cy": 3})
    lookup = lookup_for(fetch)
    first = first_call_in_flight(fetch, lookup)
    others = [ask(lookup, key) for key in ("bob", "cy", "bob", "nobody")]
    wait_for(lambda: pending(lookup) == 4, "callers waiting")
    fetch.hold.set()
    joined(first, *others)
    assert [keys for keys, _, _ in fetch.calls] == [["ada"], ["bob", "cy", "nobody"]]
    assert [asker.answers for asker in (first, *others)] == [[1], [2], [3], [2], [None]]
    # Every member's request id for user-svc's log, each once, the first member's first.
    assert fetch.calls[1][2] == ["req-bob", "req-cy", "req-nobody"]


def test_the_call_runs_outside_any_served_call_with_the_latest_members_deadline() -> None:
    fetch = Fetch({"ada": 1, "bob": 2, "cy": 3})
    lookup = lookup_for(fetch, default_timeout=60.0)
    first = first_call_in_flight(fetch, lookup)
    short, long = ask(lookup, "bob", seconds_left=1.0), ask(lookup, "cy", seconds_left=30.0)
    wait_for(lambda: pending(lookup) == 2, "callers waiting")
    fetch.hold.set()
    joined(first, short, long)
    timeout = fetch.calls[1][1]
    assert 1.0 < timeout <= 30.0 - MARGIN
    assert fetch.inside == [None, None]


def test_a_call_takes_at_most_max_batch_keys_and_the_rest_go_next() -> None:
    fetch = Fetch({f"u{i}": i for i in range(7)})
    lookup = lookup_for(fetch, max_batch=3)
    first = first_call_in_flight(fetch, lookup)
    others = []
    for i in range(7):  # one at a time, so the order they wait in is known
        others.append(ask(lookup, f"u{i}"))
        wait_for(partial(lambda n: pending(lookup) == n, i + 1), "callers waiting")
    fetch.hold.set()
    joined(first, *others)
    batches = [keys for keys, _, _ in fetch.calls[1:]]
    assert batches == [["u0", "u1", "u2"], ["u3", "u4", "u5"], ["u6"]]
    assert [asker.answers for asker in others] == [[i] for i in range(7)]


def test_a_failed_call_fails_each_member_and_the_next_call_goes_ahead() -> None:
    fetch = Fetch({"ada": 1, "bob": 2})
    lookup = lookup_for(fetch)
    first = first_call_in_flight(fetch, lookup)
    fetch.fail_with = Unavailable("user-svc is unavailable; retry later")
    others = [ask(lookup, "bob"), ask(lookup, "ada")]
    wait_for(lambda: pending(lookup) == 2, "callers waiting")
    fetch.hold.set()
    joined(first, *others)
    assert all(isinstance(asker.answers[0], Unavailable) for asker in (first, *others))
    fetch.fail_with = None
    assert lookup("bob") == 2


def test_a_caller_whose_deadline_passes_while_waiting_is_refused_and_not_asked_for() -> None:
    fetch = Fetch({"ada": 1, "bob": 2, "cy": 3})
    lookup = lookup_for(fetch)
    first = first_call_in_flight(fetch, lookup)
    hurried = ask(lookup, "bob", seconds_left=MARGIN + 0.2)
    patient = ask(lookup, "cy")
    joined(hurried)
    wait_for(lambda: pending(lookup) == 1, "the patient caller waiting")
    assert isinstance(hurried.answers[0], DeadlineExceeded)
    assert "user-svc did not answer in time" in str(hurried.answers[0])
    fetch.hold.set()
    joined(first, patient)
    assert [keys for keys, _, _ in fetch.calls] == [["ada"], ["cy"]]
    assert patient.answers == [3]


def test_callers_from_many_threads_each_get_their_own_answer() -> None:
    """Under contention (no call held), every caller gets exactly its key's answer."""
    answers = {f"u{i}": i for i in range(40)}
    fetch = Fetch(answers)
    lookup = lookup_for(fetch, max_batch=8, default_timeout=60.0)
    askers = [ask(lookup, f"u{i % 40}", seconds_left=60.0) for i in range(200)]
    joined(*askers)
    assert [asker.answers for asker in askers] == [[i % 40] for i in range(200)]
    assert all(len(keys) <= 8 for keys, _, _ in fetch.calls)
    # Each call names exactly its own members' requests (here one id per key).
    assert all(ids == [f"req-{key}" for key in keys] for keys, _, ids in fetch.calls)
    calls = len(fetch.calls)
    assert lookup("u1") == 1  # idle again: the next caller goes at once, alone
    assert fetch.calls[calls:] == [(["u1"], fetch.calls[-1][1], [])]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda fetch: lookup_for(fetch, max_batch=0), "max_batch"),
        (lambda fetch: lookup_for(fetch, default_timeout=0), "default_timeout"),
    ],
)
def test_a_lookup_needs_a_positive_batch_size_and_timeout(
    make: Callable[[Fetch], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make(Fetch())


def test_a_caller_outside_a_served_call_has_the_default_timeout() -> None:
    fetch = Fetch({"ada": 1})
    lookup = lookup_for(fetch, default_timeout=2.0)
    started = time.monotonic()
    assert lookup("ada") == 1
    assert fetch.calls[0][1] <= 2.0
    assert fetch.calls[0][1] > 2.0 - (time.monotonic() - started) - 0.5
    assert fetch.calls[0][2] == []
