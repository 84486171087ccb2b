"""The fault-sequence soak, short: bench/soak.py with a minute and a half of load, 20
subscribers and a 5 s broker outage (the long one runs by hand; docs/RELIABILITY.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_short_soak_loses_duplicates_and_stalls_nothing() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            "--minutes",
            "1.5",
            "--sockets",
            "20",
            "--outage",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    figures = json.loads(out.stdout[out.stdout.index("{") : out.stdout.rindex("}") + 1])
    assert figures["accepted_changes"] > 1000
    assert len(figures["faults"]) == 6
