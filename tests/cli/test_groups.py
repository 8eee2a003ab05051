"""vmxprobe.cli: the command groups (LazyGroup, cli.common.Group, FleetGroup) and main()."""

import subprocess
import sys

import pytest

from tests import REPO


def vmxprobe(*args):
    return subprocess.run(
        [sys.executable, "-m", "vmxprobe", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("group", [[], ["fixture"]])
def test_bare_group_is_a_usage_error_with_help_on_stderr(group):
    # click 8.1 would print the help and exit 0; a cron job must not read that as "ready".
    r = vmxprobe(*group)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.startswith("Usage: vmxprobe") and "Commands:" in r.stderr


def test_bare_fleet_is_summary_missing_its_reports():
    r = vmxprobe("fleet")
    assert r.returncode == 2 and r.stdout == ""
    assert "Missing argument 'REPORT...|DIR'" in r.stderr


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["fixture", "--help"], ["fleet", "-h"]])
def test_asked_for_help_goes_to_stdout_and_exits_0(args):
    r = vmxprobe(*args)
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.startswith("Usage: vmxprobe")


def test_version_comes_from_the_package():
    from vmxprobe import __version__

    r = vmxprobe("--version")
    assert r.returncode == 0 and r.stdout == f"vmxprobe, version {__version__}\n"


def test_installed_metadata_carries_the_same_version():
    # pyproject's version is dynamic, read from vmxprobe.__version__: one source.
    from importlib import metadata

    from vmxprobe import __version__

    try:
        installed = metadata.version("vmxprobe")
    except metadata.PackageNotFoundError:
        pytest.skip("vmxprobe is not installed (pip install -e .)")
    assert installed == __version__
