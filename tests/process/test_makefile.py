"""The Makefile's test targets, run with make: each runs the tests it names, and help lists it."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def _collected_folders(target: str) -> set[str]:
    """The tests/<folder> of every test `make target` runs (collected, not run)."""
    # `-o gen`: generated/ exists already (these tests import it); do not regenerate.
    done = _make("-o", "gen", target, "PYTEST_ARGS=--collect-only -q -p no:cacheprovider")
    assert done.returncode == 0, done.stdout + done.stderr
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    return {Path(node.split("::")[0]).parts[1] for node in ids}


def _test_folders() -> set[str]:
    return {path.parent.name for path in (ROOT / "tests").glob("*/test_*.py")}


def test_make_test_unit_runs_every_test_folder_but_integration() -> None:
    assert _collected_folders("test-unit") == _test_folders() - {"integration"}


def test_make_test_integration_runs_the_integration_folder_only() -> None:
    assert _collected_folders("test-integration") == {"integration"}


def test_make_help_lists_the_test_targets() -> None:
    listed = _make("help")
    assert listed.returncode == 0, listed.stderr
    targets = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
    assert {"test", "test-unit", "test-integration"} <= targets
