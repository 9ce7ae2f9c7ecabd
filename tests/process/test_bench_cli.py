"""`make bench`'s entry point starts: run as a script (bench/ first on sys.path), its
imports resolve and it describes its options. The benchmark itself is not a test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_run_as_a_script_lists_its_options() -> None:
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for option in ("--bookings-only", "--users", "--account-cache-seconds", "--rounds"):
        assert option in done.stdout
