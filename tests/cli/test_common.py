"""Tests for vmxprobe.cli.common: the one-line error and its exit code, choosing the
source (--root / --fixture), writing the result, colour, and the exit code of a verdict
(README "Exit codes")."""

import sys

import click
import pytest

from vmxprobe.cli import common
from vmxprobe.cli.common import Fail, emit, exit_with_verdict, open_source, use_colour
from vmxprobe.host.sources import FixtureHost, LiveHost


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_colour(None) is True
    assert use_colour("out.txt") is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert use_colour(None) is False


def test_fail_is_one_line_with_its_code(capsys):
    e = Fail("--root /x: not a directory")
    assert e.exit_code == 2
    e.show()
    assert capsys.readouterr().err == "vmxprobe: error: --root /x: not a directory\n"
    assert Fail("could not read", code=3).exit_code == 3


def test_open_source_picks_the_fixture_or_the_tree(tmp_path):
    src, fx = open_source(None, "amd-host")
    assert isinstance(src, FixtureHost) and fx is not None and fx.name == "amd-host"
    src, fx = open_source(str(tmp_path), None)
    assert isinstance(src, LiveHost) and fx is None


@pytest.mark.parametrize(
    "root,fixture,words",
    [
        ("/", "amd-host", "--root and --fixture cannot be used together"),
        ("/nonexistent", None, "--root /nonexistent: not a directory"),
        (None, "nope", "invalid fixture: no fixture file or bundled fixture named 'nope'"),
    ],
)
def test_open_source_refuses_bad_choices_with_exit_2(root, fixture, words):
    with pytest.raises(Fail) as e:
        open_source(root, fixture)
    assert words in e.value.format_message() and e.value.exit_code == 2


def test_emit_to_stdout_or_atomically_to_a_file(tmp_path, capsys):
    emit("report\n", None)
    assert capsys.readouterr().out == "report\n"
    out = tmp_path / "r.txt"
    emit("report\n", str(out))
    assert out.read_text() == "report\n" and capsys.readouterr().out == ""
    with pytest.raises(Fail, match="cannot write the summary: /dev/null: vmxprobe writes regular files only"):
        emit("x", "/dev/null", what="summary")


@pytest.mark.parametrize(
    "ready,determined,undetermined,code",
    [(True, True, (), 0), (False, True, (), 1), (False, False, ("cannot read IA32_VMX_BASIC",), 3)],
)
def test_exit_with_verdict(ready, determined, undetermined, code):
    with pytest.raises(SystemExit) as e:
        exit_with_verdict(ready, determined, undetermined)
    assert e.value.code == code


def test_could_not_determine_names_the_first_cause_on_stderr(capsys):
    with pytest.raises(SystemExit):
        exit_with_verdict(False, False, ("cause one", "cause two", "cause three"))
    assert (
        capsys.readouterr().err == "vmxprobe: could not determine: cause one (and 2 more; see the report)\n"
    )
    with pytest.raises(SystemExit):
        exit_with_verdict(False, False, ("cause one", "cause two"), more_hint=False)
    assert capsys.readouterr().err == "vmxprobe: could not determine: cause one\n"


def test_style_is_plain_unless_colour(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert common.style_for(None)("x", fg="red") == "x"
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert common.style_for(None) is click.style
