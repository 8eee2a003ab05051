"""Tests for vmxprobe.cli.fixture: `vmxprobe fixture mount` as a command, what it checks
before it mounts (the fixture, the mount point, --offline-after, the FUSE binding). The
mounted tree itself is tested in tests/host/test_devfs.py (FUSE)."""

import subprocess
import sys

import pytest

from tests import cli_runner
from vmxprobe.cli import cli


def vmxprobe(*args, **kw):
    return subprocess.run([sys.executable, "-m", "vmxprobe", *args], capture_output=True, text=True, **kw)


def test_without_the_binding_one_line_and_exit_2(tmp_path):
    code = (
        "import sys; sys.modules['mfusepy'] = None; sys.argv[0] = 'vmxprobe'; "
        "from vmxprobe.cli import main; main()"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, "fixture", "mount", "amd-host", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "pip install 'vmxprobe[fuse]'" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["amd-host", "/nonexistent/mnt"], "not a directory"),
        (["no-such-fixture", "."], "no fixture file or bundled fixture"),
        (["amd-host", ".", "--offline-after", "3"], "expected CPU:READS"),
        (["amd-host", ".", "--offline-after", "99:1"], "no CPU 99"),
    ],
)
def test_usage_errors_exit_2(tmp_path, args, message):
    r = vmxprobe("fixture", "mount", *args, cwd=str(tmp_path))
    assert r.returncode == 2 and message in r.stderr


def test_listed_in_help():
    assert "fixture" in vmxprobe("--help").stdout


def test_every_offline_after_is_parsed_and_checked_against_the_fixture(tmp_path):
    # amd-host has CPUs 0-7: 0:5 is fine; of 99 and 8, the lowest is named.
    args = ["fixture", "mount", "amd-host", str(tmp_path)]
    args += ["--offline-after", "0:5", "--offline-after", "99:1", "--offline-after", "8:2"]
    r = cli_runner().invoke(cli, args)
    assert r.exit_code == 2
    assert r.stderr == "vmxprobe: error: --offline-after: the fixture has no CPU 8\n"
