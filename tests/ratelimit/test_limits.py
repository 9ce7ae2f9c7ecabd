"""The limits file and what counts mean, with no Redis."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from envoy_bootstrap.render import Settings, write
from ratelimit.limits import Algorithm, Counts, Limit, decide, load, parse
from ratelimit.server import LIMITS_FILE
from services.runtime.config import ConfigError


def test_shipped_limits_are_todays_defaults() -> None:
    shipped = load(LIMITS_FILE, {})

    assert shipped.domain == "airline-edge"
    assert shipped.by_name == {
        "create_token": Limit("create_token", 10, 60, Algorithm.FIXED),
        "create_user": Limit("create_user", 10, 60, Algorithm.FIXED),
        # Asked only when the edge counts reads too (READ_RATE_LIMIT).
        "api": Limit("api", 600, 60, Algorithm.SLIDING),
    }


def test_environment_overrides_a_limit_and_its_window() -> None:
    env = {"TOKEN_RATE_LIMIT": "3", "TOKEN_RATE_WINDOW_SECONDS": "3600", "SIGNUP_RATE_LIMIT": "7"}

    shipped = load(LIMITS_FILE, env).by_name

    assert shipped["create_token"] == Limit("create_token", 3, 3600)
    assert shipped["create_user"] == Limit("create_user", 7, 60)


def test_an_override_below_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="TOKEN_RATE_LIMIT"):
        load(LIMITS_FILE, {"TOKEN_RATE_LIMIT": "0"})


@pytest.mark.parametrize(
    ("table", "complaint"),
    [
        ({"requests": 0, "window_seconds": 60}, "requests"),
        ({"requests": 5}, "window_seconds"),
        ({"requests": 5, "window_seconds": 60, "algorithm": "leaky"}, "algorithm"),
    ],
)
def test_a_bad_limit_is_refused_naming_its_field(table: dict[str, object], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        parse({"domain": "d", "limits": {"x": table}}, {}, "test")


def test_a_missing_limits_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="limits file"):
        load(tmp_path / "absent.toml", {})


FIXED = Limit("f", 10, 60)
SLIDING = Limit("s", 10, 60, Algorithm.SLIDING)


def test_fixed_window_counts_down_and_resets_at_the_window_end() -> None:
    decision = decide(FIXED, Counts(True, 0, 4, elapsed_ms=20_500))

    assert (decision.allowed, decision.remaining, decision.reset_seconds) == (True, 6, 40)


def test_fixed_window_refusal_waits_for_the_window_end() -> None:
    decision = decide(FIXED, Counts(False, 0, 10, elapsed_ms=59_001))

    assert (decision.allowed, decision.remaining, decision.reset_seconds) == (False, 0, 1)


def test_sliding_window_weighs_the_previous_window_by_its_overlap() -> None:
    """Half-way through, half of the previous window's 8 calls still count."""
    decision = decide(SLIDING, Counts(True, 8, 3, elapsed_ms=30_000))

    assert decision.remaining == 3


def test_sliding_window_refusal_waits_until_one_more_call_fits() -> None:
    """10 previous, 5 current: one fits when 10 * (1 - e/60) <= 4, at e = 36 s."""
    decision = decide(SLIDING, Counts(False, 10, 5, elapsed_ms=30_000))

    assert (decision.allowed, decision.remaining, decision.reset_seconds) == (False, 0, 6)


def test_sliding_window_full_on_its_own_waits_into_the_next_window() -> None:
    """10 current: the window ends in 50 s, then 10 * (1 - e/60) <= 9 at e = 6 s."""
    decision = decide(SLIDING, Counts(False, 0, 10, elapsed_ms=10_000))

    assert decision.reset_seconds == 56


def test_the_edge_asks_about_the_shipped_limits_by_name_and_domain(tmp_path: Path) -> None:
    """One source of names: every limited route's descriptor names a table of limits.toml."""
    out = tmp_path / "envoy.yaml"
    env = {
        "ENVOY_CONFIG": str(out),
        "RATELIMIT_ADDR": "127.0.0.1:18081",
        "READ_RATE_LIMIT": "600",
    }
    write(Settings.from_env(env))
    text = out.read_text()
    shipped = load(LIMITS_FILE, {})

    asked = set(re.findall(r'"descriptor_value": "([a-z_]+)"', text))

    assert asked == set(shipped.by_name)
    assert set(re.findall(r'"domain": "([a-z-]+)"', text)) == {shipped.domain}
