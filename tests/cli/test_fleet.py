"""Tests for vmxprobe.cli.fleet: `vmxprobe fleet` / `fleet summary` / `fleet diff` as
commands (FleetGroup's shorthand, option checks, stdin, the progress bar); what the
summary and the diff say is tested in tests/fleet."""

import io
import json
import sys

import pytest

from tests.fleet.reports import invoke, live, write
from vmxprobe.cli import fleet as fleet_cli
from vmxprobe.fleet import summary as fleet_summary


@pytest.fixture
def fleet_dir(tmp_path):
    d = tmp_path / "reports"
    d.mkdir()
    write(d, "web01.json", live("intel-2s-ready"))
    write(d, "web02.json", live("intel-fw-locked-off"))
    write(d, "kvm01.json", live("kvm-nested-guest"))
    return d


def test_fleet_shorthand_and_summary_subcommand_are_the_same(fleet_dir):
    a = invoke("fleet", "--format", "json", fleet_dir)
    b = invoke("fleet", "summary", "--format", "json", fleet_dir)
    strip = lambda t: {k: v for k, v in json.loads(t).items() if k != "generated_at"}  # noqa: E731
    assert a.exit_code == b.exit_code == 1
    assert strip(a.stdout) == strip(b.stdout)


def test_a_folder_named_diff_is_reachable(tmp_path, monkeypatch):
    d = tmp_path / "diff"
    d.mkdir()
    write(d, "a.json", live())
    monkeypatch.chdir(tmp_path)
    assert invoke("fleet", "./diff").exit_code == 0
    assert invoke("fleet", "summary", "diff").exit_code == 0


def test_usage_errors(tmp_path):
    r = invoke("fleet", tmp_path / "missing")
    assert r.exit_code == 2 and "no such file or folder" in r.stderr
    (tmp_path / "empty").mkdir()
    r = invoke("fleet", tmp_path / "empty")
    assert r.exit_code == 2 and "no report files" in r.stderr
    write(tmp_path, "a.json", live())
    r = invoke("fleet", "--stale-after", "7", tmp_path)
    assert r.exit_code == 2 and "not a duration" in r.stderr
    assert invoke("fleet", "--limit", "-1", tmp_path).exit_code == 2
    assert invoke("fleet").exit_code == 2


def test_progress_bar_on_a_terminal_goes_to_stderr(tmp_path, monkeypatch):
    for i in range(fleet_summary.PROGRESS_MIN):
        write(tmp_path, f"h{i:04d}.json", live())

    class TTY(io.StringIO):
        def isatty(self):
            return True

    err = TTY()
    monkeypatch.setattr(fleet_cli, "progress_stream", lambda: err)
    r = invoke("fleet", "--format", "json", tmp_path)
    assert r.exit_code == 0
    assert "Reading reports" in err.getvalue()
    assert json.loads(r.stdout)["readiness"]["ready"] == fleet_summary.PROGRESS_MIN


def test_diff_reads_one_side_from_stdin(tmp_path):
    old = write(tmp_path, "old.json", live())
    r = invoke("fleet", "diff", old, "-", input=json.dumps(live()))
    assert r.exit_code == 0, r.stderr
    r = invoke("fleet", "diff", "-", old, input="{")
    assert r.exit_code == 2 and r.stderr.startswith("vmxprobe: error: OLD -: ")


def test_diff_refuses_stdin_twice_and_a_folder(tmp_path):
    good = write(tmp_path, "good.json", live())
    r = invoke("fleet", "diff", "-", "-")
    assert r.exit_code == 2 and "OLD and NEW cannot both be stdin (-)" in r.stderr
    r = invoke("fleet", "diff", good, tmp_path)
    assert r.exit_code == 2 and f"NEW {tmp_path}: is a folder; give one report file" in r.stderr


def test_the_progress_stream_is_standard_error():
    assert fleet_cli.progress_stream() is sys.stderr
