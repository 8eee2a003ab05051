"""What every command shares: the one-line error with its exit code, the options that
choose a source and an output, and writing the result."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import click

from vmxprobe.exitcodes import EXIT_NOT_READY, EXIT_READY, EXIT_UNKNOWN, EXIT_USAGE
from vmxprobe.files import OutputError, write_atomic
from vmxprobe.printable import printable

if TYPE_CHECKING:
    from vmxprobe.host.fixture import Fixture
    from vmxprobe.host.sources import Source

# The host modules are imported where a command needs them, not here: `vmxprobe
# --version` and `--help` start without them (docs/benchmarks.md, start-up).

EXIT_CODES_HELP = """\b
Exit codes:
  0  ready: x86_vmx_init() and kvm_intel would both succeed
     (on AMD and Hygon: x86_svm_init() and kvm_amd)
  1  not ready: the registers say VMX (on AMD: SVM) cannot be brought up
  2  usage error, or an invalid input file (fixture, root)
  3  could not determine (msr driver missing, not root, CPUs unreadable)
  70 internal error (a bug: please report it)"""

F = TypeVar("F", bound=Callable[..., Any])


class Group(click.Group):
    """A command group run with no arguments prints its help to standard error and exits
    2 (a usage error), on every click: click 8.1 would exit 0, click 8.2 and later exit 2,
    and a script that runs `vmxprobe` bare should not read that as success."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            click.echo(ctx.get_help(), err=True)
            ctx.exit(EXIT_USAGE)
        return super().parse_args(ctx, args)


class Fail(click.ClickException):
    """A one-line error with a documented exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = code

    def show(self, file: Any = None) -> None:
        # One line, whatever a path or a value in it holds.
        click.echo(f"vmxprobe: error: {printable(self.format_message())}", err=True)


def use_colour(output_path: str | None) -> bool:
    return output_path is None and sys.stdout.isatty() and "NO_COLOR" not in os.environ


def style_for(output_path: str | None) -> Callable[..., str]:
    """click.style where colour is wanted (a terminal, no NO_COLOR), else plain text."""
    return click.style if use_colour(output_path) else (lambda text, **kw: text)


def emit(text: str, output_path: str | None, what: str = "report") -> None:
    """The result to stdout, or atomically to a file."""
    if output_path is None:
        click.echo(text, nl=False)
        return
    try:
        write_atomic(output_path, text)
    except OutputError as e:
        raise Fail(f"cannot write the {what}: {e}") from None


def load_fixture(spec: str) -> Fixture:
    from vmxprobe.host.fixture import FixtureError, load

    try:
        return load(spec)
    except FixtureError as e:
        raise Fail(f"invalid fixture: {e}") from None


def root_dir(root: str | None) -> str:
    """The folder --root names, / when it is not given."""
    if root == "":
        # An empty value (an unset variable in `--root "$ROOT"`) is a mistake, not a
        # request to read the host itself.
        raise Fail("--root is empty: give the root of a host tree, or leave --root out to read /")
    root = "/" if root is None else root
    if not os.path.isdir(root):
        raise Fail(f"--root {root}: not a directory; give the root of a host tree (default /)")
    return root


def open_source(root: str | None, fixture: str | None) -> tuple[Source, Fixture | None]:
    """The host --root or --fixture names (the live host at / by default)."""
    from vmxprobe.host.sources import FixtureHost, LiveHost

    if root is not None and fixture is not None:
        raise Fail("--root and --fixture cannot be used together: pick one source")
    if fixture is not None:
        fx = load_fixture(fixture)
        return FixtureHost(fx), fx
    return LiveHost(root_dir(root)), None


def source_options(f: F) -> F:
    """--root DIR and --fixture PATH|NAME: the host to read."""
    f = click.option(
        "--fixture", metavar="PATH|NAME", help="Replay a recorded fixture file, or a bundled one by name."
    )(f)
    return click.option(
        "--root", metavar="DIR", help="Read the host tree under DIR instead of / (like lscpu --sysroot)."
    )(f)


def output_option(what: str) -> Callable[[F], F]:
    """-o FILE: write atomically instead of to stdout."""
    return click.option(
        "-o", "--output", metavar="FILE", help=f"Write the {what} to FILE (atomically) instead of stdout."
    )


def exit_with_verdict(
    ready: bool, determined: bool, undetermined: tuple[str, ...], more_hint: bool = True
) -> None:
    """The exit code of a scan: 0 ready, 1 not ready, 3 could not determine (with the
    first cause on stderr)."""
    if ready:
        sys.exit(EXIT_READY)
    if not determined:
        first = undetermined[0] if undetermined else "the registers could not be read"
        more = len(undetermined) - 1
        click.echo(
            f"vmxprobe: could not determine: {printable(first)}"
            + (f" (and {more} more; see the report)" if more > 0 and more_hint else ""),
            err=True,
        )
        sys.exit(EXIT_UNKNOWN)
    sys.exit(EXIT_NOT_READY)
