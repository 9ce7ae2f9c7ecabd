"""The users table on a real SQLite file: first admin, unique emails, keyset paging."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import DateTime, Engine, bindparam, insert, text

from services.runtime.db import make_engine
from services.runtime.errors import InvalidArgument
from services.user_svc.domain import EmailTaken, UserNotFound, hash_password, verify_password
from services.user_svc.store import RECORD_COLUMNS, USERS, Cursor, UserRecord, UserStore

HASH = "$2b$04$not-a-real-hash-only-stored-and-read-back"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    found = make_engine(f"sqlite:///{tmp_path / 'users.db'}")
    yield found
    found.dispose()


@pytest.fixture
def store(engine: Engine) -> UserStore:
    found = UserStore(engine)
    found.create_schema()
    return found


def test_first_user_is_admin_and_later_ones_are_not(store: UserStore) -> None:
    first = store.create_user("first@example.com", HASH, "First")
    second = store.create_user("second@example.com", HASH, "Second")
    assert first.roles == ("user", "admin")
    assert second.roles == ("user",)
    assert first.active
    assert second.active


def test_concurrent_first_sign_ups_make_exactly_one_admin(store: UserStore) -> None:
    """Ten creators race on an empty database; the check and insert are serialised."""
    start = threading.Barrier(10)

    def create(i: int) -> tuple[str, ...]:
        start.wait(timeout=10)
        return store.create_user(f"user{i}@example.com", HASH, f"User {i}").roles

    with ThreadPoolExecutor(max_workers=10) as pool:
        roles = list(pool.map(create, range(10)))
    assert sorted(roles) == [("user",)] * 9 + [("user", "admin")]


def test_duplicate_email_is_taken(store: UserStore) -> None:
    store.create_user("alice@example.com", HASH, "Alice")
    with pytest.raises(EmailTaken):
        store.create_user("alice@example.com", HASH, "Other Alice")


def test_emails_differing_only_in_case_are_taken(store: UserStore) -> None:
    store.create_user("alice@example.com", HASH, "Alice")
    with pytest.raises(EmailTaken):
        store.create_user("ALICE@Example.com", HASH, "Alice again")


def test_email_lookup_ignores_case(store: UserStore) -> None:
    created = store.create_user("Alice@Example.com", HASH, "Alice")
    assert created.email == "alice@example.com"
    found = store.get_by_email(" ALICE@example.COM ")
    assert found is not None
    assert found[0] == created


def test_user_is_read_back_by_id_and_by_email_with_its_hash(store: UserStore) -> None:
    hashed = hash_password("correct horse", 4)
    created = store.create_user("alice@example.com", hashed, "Alice")
    assert store.get(created.user_id) == created
    found = store.get_by_email("alice@example.com")
    assert found is not None
    assert found[0] == created
    assert verify_password("correct horse", found[1])
    assert created.create_time.tzinfo is UTC


def test_unknown_user_is_not_found(store: UserStore) -> None:
    assert store.get_by_email("nobody@example.com") is None
    with pytest.raises(UserNotFound):
        store.get("no-such-id")
    with pytest.raises(UserNotFound):
        store.update("no-such-id", {"display_name": "X"})
    with pytest.raises(UserNotFound):
        store.delete("no-such-id")


def test_update_changes_fields_and_touches_update_time(engine: Engine) -> None:
    times = iter([datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC)])
    store = UserStore(engine, clock=lambda: next(times))
    store.create_schema()
    created = store.create_user("alice@example.com", HASH, "Alice")
    updated = store.update(
        created.user_id, {"display_name": "Alice B", "roles": ["user", "admin"], "active": False}
    )
    assert (updated.display_name, updated.roles, updated.active) == (
        "Alice B",
        ("user", "admin"),
        False,
    )
    assert updated.create_time == created.create_time
    assert updated.update_time == datetime(2030, 1, 2, tzinfo=UTC)
    assert store.get(created.user_id) == updated


def test_delete_frees_the_email(store: UserStore) -> None:
    created = store.create_user("alice@example.com", HASH, "Alice")
    store.delete(created.user_id)
    with pytest.raises(UserNotFound):
        store.get(created.user_id)
    again = store.create_user("alice@example.com", HASH, "Alice")
    assert again.user_id != created.user_id


def test_list_pages_oldest_first_and_ends_without_cursor(store: UserStore) -> None:
    made = [store.create_user(f"u{i}@example.com", HASH, f"U{i}").user_id for i in range(5)]
    first = store.list(None, 2)
    second = store.list(first.next_cursor, 2)
    third = store.list(second.next_cursor, 2)
    seen = [u.user_id for page in (first, second, third) for u in page.users]
    assert seen == made
    assert third.next_cursor is None


def test_exactly_full_last_page_has_no_cursor(store: UserStore) -> None:
    for i in range(2):
        store.create_user(f"u{i}@example.com", HASH, f"U{i}")
    assert store.list(None, 2).next_cursor is None


def test_paging_while_users_are_added_never_skips_or_repeats(store: UserStore) -> None:
    made = [store.create_user(f"u{i}@example.com", HASH, f"U{i}").user_id for i in range(3)]
    seen: list[str] = []
    cursor: Cursor | None = None
    for i in range(10):
        page = store.list(cursor, 2)
        seen += [u.user_id for u in page.users]
        if page.next_cursor is None:
            break
        made.append(store.create_user(f"late{i}@example.com", HASH, f"Late {i}").user_id)
        cursor = page.next_cursor
    assert seen == made
    assert len(set(seen)) == len(seen)


def test_create_time_increases_even_when_the_clock_stands_still(engine: Engine) -> None:
    """Equal clock readings still give a strict order, so keyset paging stays total."""
    frozen = datetime(2030, 1, 1, tzinfo=UTC)
    store = UserStore(engine, clock=lambda: frozen)
    store.create_schema()
    users = [store.create_user(f"u{i}@example.com", HASH, f"U{i}") for i in range(3)]
    assert [u.create_time - frozen for u in users] == [
        timedelta(0),
        timedelta(microseconds=1),
        timedelta(microseconds=2),
    ]


def test_lookups_answer_while_another_instance_holds_the_write_lock(
    store: UserStore, tmp_path: Path
) -> None:
    """LookupUser's reads take no write lock: a writer elsewhere does not hold them up."""
    user = store.create_user("ada@example.com", HASH, "Ada")
    writer = make_engine(f"sqlite:///{tmp_path / 'users.db'}")
    reading = UserStore(make_engine(f"sqlite:///{tmp_path / 'users.db'}"))
    try:
        with writer.begin() as conn, ThreadPoolExecutor(max_workers=1) as pool:
            conn.execute(text("UPDATE users SET display_name = 'Someone else'"))
            seen = pool.submit(reading.get, user.user_id).result(timeout=10)
            active = pool.submit(reading.active, user.user_id).result(timeout=10)
        assert (seen.display_name, active) == ("Ada", True)
    finally:
        writer.dispose()


def test_cursor_round_trips_through_token_fields() -> None:
    cursor = Cursor(datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=UTC), "some-id")
    assert Cursor.from_dict(cursor.to_dict()) == cursor


@pytest.mark.parametrize(
    "fields", [{}, {"t": "yesterday", "id": "x"}, {"t": "2030-01-01T00:00:00", "id": "x"}]
)
def test_malformed_cursor_fields_are_an_invalid_page_token(fields: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument) as exc:
        Cursor.from_dict(fields)
    assert exc.value.violations == (("page_token", "is not a token this query returned"),)


# --- Instances sharing one database: SQLite, then PostgreSQL (tests/conftest.py) --------

INSTANCES = 4


@pytest.fixture
def instance_stores(database_url: str) -> Iterator[list[UserStore]]:
    """One store per instance, each on its own engine, none with its schema yet."""
    engines = [make_engine(database_url) for _ in range(INSTANCES)]
    yield [UserStore(e) for e in engines]
    for e in engines:
        e.dispose()


def test_instances_starting_together_create_the_schema_and_share_users(
    instance_stores: list[UserStore],
) -> None:
    barrier = threading.Barrier(len(instance_stores))

    def start(store: UserStore) -> None:
        barrier.wait(timeout=30)
        store.create_schema()

    with ThreadPoolExecutor(max_workers=len(instance_stores)) as pool:
        list(pool.map(start, instance_stores))
    created = instance_stores[0].create_user("ada@example.com", HASH, "Ada")
    found = instance_stores[-1].get_by_email("ada@example.com")
    assert found is not None
    assert found[0] == created
    assert created.is_admin


def test_user_records_follow_the_record_columns() -> None:
    """Lookup rows become UserRecords by position, so the two must list the same fields."""
    assert [c.name for c in RECORD_COLUMNS] == list(UserRecord.__dataclass_fields__)


def test_lookups_read_back_every_field_on_each_database(database_url: str) -> None:
    """By id, by email and the active flag, after an update, on SQLite and PostgreSQL."""
    eastern = timezone(timedelta(hours=-5))
    times = iter(
        [
            datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=eastern),
            datetime(2030, 2, 1),
            datetime(2030, 3, 1),
        ]
    )
    engine = make_engine(database_url)
    try:
        store = UserStore(engine, clock=lambda: next(times).replace(tzinfo=eastern))
        store.create_schema()
        created = store.create_user("Ada@Example.com", HASH, "Ada")
        updated = store.update(created.user_id, {"active": False, "roles": ["user", "admin"]})
        assert created.create_time == datetime(2030, 1, 2, 8, 4, 5, 678901, tzinfo=UTC)
        assert created.create_time.tzinfo is UTC
        assert store.get(created.user_id) == updated
        assert store.get_by_email("ada@example.com") == (updated, HASH)
        assert updated.roles == ("user", "admin")
        assert store.active(created.user_id) is False
        assert store.active("no-such-id") is None
        other = store.create_user("bob@example.com", HASH, "Bob")
        asked = [other.user_id, "no-such-id", created.user_id, other.user_id]
        found = store.get_many(asked)  # one read; bob asked twice, answered once
        assert sorted(found, key=lambda user: user.email) == [updated, other]
        assert store.get_many([created.user_id]) == [updated]
        assert store.get_many(["no-such-id"]) == []
    finally:
        engine.dispose()


def test_rows_written_as_naive_datetimes_read_back_as_aware_utc(database_url: str) -> None:
    """A database written when the columns were declared DateTime reads back the same."""
    engine = make_engine(database_url)
    try:
        store = UserStore(engine)
        store.create_schema()
        stored = datetime(2030, 1, 2, 3, 4, 5, 678901)
        old_style = bindparam("t", stored, type_=DateTime())
        fields = {"user_id": "u1", "email": "ada@example.com", "display_name": "Ada"}
        with engine.begin() as conn:
            conn.execute(
                insert(USERS).values(
                    **fields,
                    password_hash=HASH,
                    roles=["user"],
                    active=True,
                    create_time=old_style,
                    update_time=old_style,
                )
            )
        found = store.get("u1")
        assert found.create_time == found.update_time == stored.replace(tzinfo=UTC)
        assert store.list(None, 10).users == [found]
    finally:
        engine.dispose()
