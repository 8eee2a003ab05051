"""Faults of the fleet layer (vmxprobe/fleet): a report path that is not a regular file."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests import REPO


def test_a_fifo_among_reports_does_not_hang_the_fleet(tmp_path):
    fifo = tmp_path / "web01.json"
    os.mkfifo(fifo)
    code = (
        "import sys; from vmxprobe.fleet import check as fleet_check\n"
        "try:\n    fleet_check.read_report(sys.argv[1])\n"
        "except fleet_check.Unreadable as e:\n    print('Unreadable', e)\n"
    )
    try:
        p = subprocess.run(
            [sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=5, cwd=REPO
        )
    except subprocess.TimeoutExpired:
        pytest.fail("fleet_check.read_report() blocked on a FIFO")
    assert p.stdout.startswith("Unreadable") and "not a regular file" in p.stdout
