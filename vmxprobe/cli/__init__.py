"""Command-line wiring: the commands, their options and exit codes. The logic lives in
host/, kernel/, render/ and fleet/; a command here reads its options, calls them, and
turns their errors into one line and a documented exit code."""

from __future__ import annotations

import importlib
import io
import os
import sys
from typing import Any

import click

from vmxprobe import __version__
from vmxprobe.cli.common import EXIT_CODES_HELP, Group
from vmxprobe.exitcodes import EXIT_INTERNAL, EXIT_USAGE


class LazyGroup(Group):
    """Each command lives in its own module, imported only when it is invoked, so
    `vmxprobe --version` and `vmxprobe scan` do not pay for the others."""

    LAZY = {
        # "name": "module:attribute"
        "scan": "vmxprobe.cli.scan:scan",
        "record": "vmxprobe.cli.scan:record",
        "fixtures": "vmxprobe.cli.scan:fixtures_cmd",
        "caps": "vmxprobe.cli.caps:caps",
        "decode": "vmxprobe.cli.caps:decode",
        "fixture": "vmxprobe.cli.fixture:fixture_group",
        "fleet": "vmxprobe.cli.fleet:fleet",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.LAZY))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.LAZY:
            module, _, attr = self.LAZY[name].partition(":")
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, "-V", "--version", prog_name="vmxprobe")
def cli() -> None:
    """Will Linux bring up VMX on every CPU of this host?

    Reads IA32_VMX_BASIC and IA32_FEATURE_CONTROL on every CPU, judges them as the
    kernel's x86_vmx_init() and kvm_intel would, and builds the root-VMCS plan: one
    page per possible CPU on its NUMA node.
    """


class OutputFailed(Exception):
    """Standard output could not be written; the message says why, in one line."""


class _Descriptor(io.RawIOBase):
    """A raw, unbuffered writer on one file descriptor (FD), written with os.write."""

    FD: int

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.FD

    def isatty(self) -> bool:
        return os.isatty(self.FD)


class _Stdout(_Descriptor):
    """Descriptor 1, where any failure to write is OutputFailed: raised once, from
    whichever write or flush meets it; what comes after is dropped, so that the exit
    and its final flush do not fail again."""

    FD = 1

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def write(self, data: Any) -> int:
        size = len(memoryview(data))
        if self.failed:
            return size
        try:
            return os.write(self.FD, data)
        except OSError as e:
            self.failed = True
            raise OutputFailed(e.strerror or str(e)) from None


class _TextStdout(io.TextIOWrapper):
    """The text layer over _Stdout: a character the encoding cannot hold
    (PYTHONIOENCODING=latin-1) is OutputFailed too, never a partial line."""

    def write(self, text: str) -> int:
        try:
            return super().write(text)
        except UnicodeEncodeError as e:
            raw = self.buffer.raw  # type: ignore[attr-defined]
            raw.failed = True
            raise OutputFailed(f"{e.encoding} cannot encode {e.object[e.start : e.end]!r}") from None


class _Stderr(_Descriptor):
    """Descriptor 2: a failure to write there has nowhere to be reported, and must not
    turn a documented exit code into a crash."""

    FD = 2

    def write(self, data: Any) -> int:
        try:
            return os.write(self.FD, data)
        except OSError:
            return len(memoryview(data))


def _standard_streams() -> None:
    """Standard output that fails on every write the same way (OutputFailed), and a
    standard error that never fails, for the process (not under a test's runner).

    A descriptor the caller closed (`>&-`) is held with /dev/null opened read-only,
    so that no file vmxprobe opens later takes its number (and receives the output),
    and a write to it fails, EBADF, as it would have."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdout is None or sys.stdout is sys.__stdout__:
        encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
        sys.stdout = _TextStdout(
            io.BufferedWriter(_Stdout()), encoding=encoding, errors="strict", line_buffering=os.isatty(1)
        )
    if sys.stderr is None or sys.stderr is sys.__stderr__:
        encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
        sys.stderr = io.TextIOWrapper(
            io.BufferedWriter(_Stderr()), encoding=encoding, errors="backslashreplace", line_buffering=True
        )
    if sys.stdin is None:
        sys.stdin = open(0, closefd=False)  # noqa: SIM115  (the process's, for its life)


def _say(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except Exception:  # nowhere left to say it; the exit code still does
        pass


def main(argv: list[str] | None = None) -> Any:
    _standard_streams()
    try:
        try:
            return cli.main(args=argv, prog_name="vmxprobe")
        finally:
            # What is still buffered is written now, so that a failure to write it is
            # reported like any other, not lost at interpreter exit.
            if sys.stdout is not None:
                sys.stdout.flush()
    except OutputFailed as e:
        _say(f"vmxprobe: error: cannot write to standard output: {e}")
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        _say("vmxprobe: interrupted")
        sys.exit(130)
    except Exception as e:  # a bug: one line, not a traceback, unless asked for
        if os.environ.get("VMXPROBE_DEBUG"):
            raise
        _say(
            f"vmxprobe: internal error: {type(e).__name__}: {e} (set VMXPROBE_DEBUG=1 "
            "for the traceback, and please report it)"
        )
        sys.exit(EXIT_INTERNAL)
