"""CreateBooking's memory of live accounts: what it remembers, for how long, how much."""

from __future__ import annotations

import pytest

from services.booking_svc.accounts import LiveAccounts


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Directory:
    """A stand-in for user-svc's answers that counts the questions."""

    def __init__(self) -> None:
        self.active: dict[str, bool | None] = {}
        self.asked: list[str] = []

    def __call__(self, user_id: str) -> bool | None:
        self.asked.append(user_id)
        return self.active.get(user_id)


def test_a_live_account_is_asked_about_once_within_the_ttl() -> None:
    clock, users = Clock(), Directory()
    users.active["u1"] = True
    accounts = LiveAccounts(users, ttl_seconds=2.0, clock=clock)

    answers = [accounts("u1") for _ in range(5)]
    clock.now += 1.9
    answers.append(accounts("u1"))

    assert answers == [True] * 6
    assert users.asked == ["u1"]


def test_a_deleted_account_is_refused_once_the_ttl_has_passed() -> None:
    clock, users = Clock(), Directory()
    users.active["u1"] = True
    accounts = LiveAccounts(users, ttl_seconds=2.0, clock=clock)
    assert accounts("u1") is True

    del users.active["u1"]
    clock.now += 2.0

    assert accounts("u1") is None
    assert users.asked == ["u1", "u1"]


def test_the_ttl_counts_from_before_the_question_was_asked() -> None:
    """A slow answer does not stretch the bound: it is as old as the question."""
    clock, users = Clock(), Directory()

    def slow(user_id: str) -> bool | None:
        clock.now += 1.5
        return users(user_id)

    users.active["u1"] = False
    accounts = LiveAccounts(slow, ttl_seconds=2.0, clock=clock)
    users.active["u1"] = True
    assert accounts("u1") is True  # asked at 100, answered at 101.5
    users.active["u1"] = False
    clock.now = 102.0

    assert accounts("u1") is False


@pytest.mark.parametrize("answer", [False, None])
def test_refusals_are_never_remembered(answer: bool | None) -> None:
    clock, users = Clock(), Directory()
    users.active["u1"] = answer
    accounts = LiveAccounts(users, ttl_seconds=2.0, clock=clock)

    assert [accounts("u1"), accounts("u1")] == [answer, answer]
    assert users.asked == ["u1", "u1"]


def test_a_failed_lookup_is_raised_and_not_remembered() -> None:
    calls = []

    def failing(user_id: str) -> bool | None:
        calls.append(user_id)
        raise RuntimeError("user-svc is unavailable")

    accounts = LiveAccounts(failing, ttl_seconds=2.0, clock=Clock())
    for _ in range(2):
        with pytest.raises(RuntimeError):
            accounts("u1")
    assert calls == ["u1", "u1"]


def test_a_zero_ttl_asks_every_time() -> None:
    users = Directory()
    users.active["u1"] = True
    accounts = LiveAccounts(users, ttl_seconds=0, clock=Clock())

    accounts("u1")
    accounts("u1")

    assert users.asked == ["u1", "u1"]


def test_when_full_the_oldest_account_is_forgotten_first() -> None:
    clock, users = Clock(), Directory()
    users.active.update({"a": True, "b": True, "c": True})
    accounts = LiveAccounts(users, ttl_seconds=60.0, max_entries=2, clock=clock)

    for user_id in ("a", "b", "c", "b", "c", "a"):
        accounts(user_id)

    assert users.asked == ["a", "b", "c", "a"]
