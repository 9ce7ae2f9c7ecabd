"""Page sizes and tamper-evident page tokens."""

import pytest

from services.runtime.errors import InvalidArgument
from services.runtime.pagination import PageTokens, page_size

QUERY = {"origin": "JFK", "order_by": "price"}


def test_page_size_defaults_to_twenty_and_clamps_to_one_hundred() -> None:
    assert page_size(0) == 20
    assert page_size(7) == 7
    assert page_size(5000) == 100


def test_negative_page_size_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as err:
        page_size(-1)
    assert err.value.violations[0][0] == "page_size"


def test_token_round_trips_its_cursor() -> None:
    tokens = PageTokens(b"k" * 32)
    token = tokens.encode({"after": ["2026-01-01T00:00:00Z", "abc"]}, QUERY)
    assert tokens.decode(token, QUERY) == {"after": ["2026-01-01T00:00:00Z", "abc"]}


def test_empty_token_means_first_page() -> None:
    assert PageTokens(b"k").decode("", QUERY) is None


@pytest.mark.parametrize(
    "edit", [lambda t: "x" + t, lambda t: t[:-2], lambda t: t + "==", str.upper]
)
def test_edited_token_is_refused(edit: object) -> None:
    tokens = PageTokens(b"k" * 32)
    token = tokens.encode({"after": [1, "id"]}, QUERY)
    with pytest.raises(InvalidArgument) as err:
        tokens.decode(edit(token), QUERY)  # type: ignore[operator]
    assert err.value.violations[0][0] == "page_token"


def test_token_replayed_with_other_filters_is_refused() -> None:
    tokens = PageTokens(b"k" * 32)
    token = tokens.encode({"after": [1, "id"]}, QUERY)
    with pytest.raises(InvalidArgument):
        tokens.decode(token, {**QUERY, "origin": "EWR"})


def test_token_signed_with_another_key_is_refused() -> None:
    token = PageTokens(b"a" * 32).encode({"after": [1, "id"]}, QUERY)
    with pytest.raises(InvalidArgument):
        PageTokens(b"b" * 32).decode(token, QUERY)
