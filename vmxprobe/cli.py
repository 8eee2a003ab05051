"""Command-line wiring: options, output, exit codes. The logic lives in the modules."""

from __future__ import annotations

import os
import sys

import click

from vmxprobe import __version__

EXIT_READY = 0
EXIT_NOT_READY = 1
EXIT_USAGE = 2
EXIT_UNKNOWN = 3
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug in vmxprobe, never a verdict

EXIT_CODES_HELP = """\b
Exit codes:
  0  ready: x86_vmx_init() and kvm_intel would both succeed
  1  not ready: the registers say VMX cannot be brought up
  2  usage error, or an invalid input file (fixture, root)
  3  could not determine (msr driver missing, not root, CPUs unreadable)
  70 internal error (a bug: please report it)"""


class Fail(click.ClickException):
    """A one-line error with a documented exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = code

    def show(self, file=None):
        click.echo(f"vmxprobe: error: {self.format_message()}", err=True)


def _use_colour(output_path) -> bool:
    return output_path is None and sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _emit(text: str, output_path, what="report") -> None:
    if output_path is None:
        click.echo(text, nl=False)
        return
    from vmxprobe.output import OutputError, write_atomic
    try:
        write_atomic(output_path, text)
    except OutputError as e:
        raise Fail(f"cannot write the {what}: {e}") from None


def _source(root, fixture):
    from vmxprobe.sources import FixtureHost, LiveHost
    if root is not None and fixture is not None:
        raise Fail("--root and --fixture cannot be used together: pick one source")
    if fixture is not None:
        from vmxprobe.fixture import FixtureError, load
        try:
            fx = load(fixture)
        except FixtureError as e:
            raise Fail(f"invalid fixture: {e}") from None
        return FixtureHost(fx), fx
    root = root or "/"
    if not os.path.isdir(root):
        raise Fail(f"--root {root}: not a directory; give the root of a host tree (default /)")
    return LiveHost(root), None


class LazyGroup(click.Group):
    """Commands that live in their own modules are imported only when invoked, so
    `vmxprobe --version` and `vmxprobe scan` do not pay for them."""

    LAZY = {
        # "name": "module:attribute",
        "caps": "vmxprobe.capscmd:caps",
        "decode": "vmxprobe.capscmd:decode",
        "fixture": "vmxprobe.devfs:fixture_group",
        "fleet": "vmxprobe.fleet:fleet",
    }

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.LAZY))

    def get_command(self, ctx, name):
        if name in self.LAZY:
            import importlib
            module, _, attr = self.LAZY[name].partition(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=EXIT_CODES_HELP)
@click.version_option(__version__, "-V", "--version", prog_name="vmxprobe")
def cli():
    """Will Linux bring up VMX on every CPU of this host?

    Reads IA32_VMX_BASIC and IA32_FEATURE_CONTROL on every CPU, judges them as the
    kernel's x86_vmx_init() and kvm_intel would, and builds the root-VMCS plan: one
    page per possible CPU on its NUMA node.
    """


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--root", metavar="DIR", help="Read the host tree under DIR instead of / (like lscpu --sysroot).")
@click.option("--fixture", metavar="PATH|NAME", help="Replay a recorded fixture file, or a bundled one by name.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "prometheus", "nfd"]), default="text",
              show_default=True, help="prometheus: node_exporter textfile (*.prom); nfd: a node-feature-"
              "discovery features.d file (see docs/fleet.md).")
@click.option("-o", "--output", metavar="FILE", help="Write the report to FILE (atomically) instead of stdout.")
def scan(root, fixture, fmt, output):
    """Read every CPU, judge, and build the root-VMCS plan."""
    from vmxprobe import report as rep
    from vmxprobe.pipeline import run

    source, fx = _source(root, fixture)
    report, verdict = run(source, fx)
    if fmt == "json":
        text = rep.render_json(report)
    elif fmt in ("prometheus", "nfd"):
        from vmxprobe import export
        try:
            text = export.RENDERERS[fmt](report)
        except export.ExportError as e:
            raise Fail(str(e)) from None
        for note in export.output_notes(fmt, output):
            click.echo(f"vmxprobe: note: {note}", err=True)
    else:
        colour = _use_colour(output)
        text = rep.render_text(report, style=click.style if colour else (lambda t, **kw: t))
    _emit(text, output)
    if verdict.ready:
        sys.exit(EXIT_READY)
    if not verdict.determined:
        first = verdict.undetermined[0] if verdict.undetermined else "the registers could not be read"
        more = len(verdict.undetermined) - 1
        click.echo(f"vmxprobe: could not determine: {first}"
                   + (f" (and {more} more; see the report)" if more > 0 else ""), err=True)
        sys.exit(EXIT_UNKNOWN)
    sys.exit(EXIT_NOT_READY)


@cli.command()
@click.option("--root", metavar="DIR", default="/", show_default=True, help="Root of the host tree to record.")
@click.option("-o", "--output", metavar="FILE", help="Write the fixture to FILE (atomically) instead of stdout.")
@click.option("--name", metavar="NAME", help="Fixture name (default: from the output file name).")
@click.option("--description", metavar="TEXT", default="", help="One line saying what this host is.")
@click.option("--hostname/--no-hostname", default=False, show_default=True,
              help="Store this machine's host name in the provenance.")
def record(root, output, name, description, hostname):
    """Record what a scan reads from a host into a fixture (JSON)."""
    import json
    import socket

    from vmxprobe import fixture
    from vmxprobe.scan import collect
    from vmxprobe.sources import LiveHost, RecordingHost

    if not os.path.isdir(root):
        raise Fail(f"--root {root}: not a directory; give the root of a host tree (default /)")
    rec = RecordingHost(LiveHost(root))
    host_scan = collect(rec)
    if name is None:
        name = os.path.splitext(os.path.basename(output))[0] if output else "recorded-host"
    doc = fixture.from_recording(rec, name, description, host_scan.kernel,
                                 hostname=socket.gethostname() if hostname else None)
    _emit(json.dumps(doc, indent=1) + "\n", output, what="fixture")
    missing = list(host_scan.topology.missing)
    for kind, results in (("msr", rec.msr), ("cpuid", rec.cpuid)):
        seen = [r for per_cpu in results.values() for r in per_cpu.values()]
        if seen and all(r.errno == "ENOENT" for r in seen):
            missing.append(f"/dev/cpu/N/{kind}")
    if missing:
        click.echo(f"vmxprobe: recorded; absent on this host: {', '.join(missing)}", err=True)


@cli.command("fixtures")
def fixtures_cmd():
    """List the bundled fixtures, one line each."""
    from vmxprobe import fixture
    for name in fixture.bundled_names():
        try:
            fx = fixture.load(name)
            click.echo(f"{name:<28} {fx.provenance.get('origin', '?'):<9} {fx.description}")
        except fixture.FixtureError as e:
            click.echo(f"{name:<28} (unreadable: {e})")


def main():
    try:
        cli.main(prog_name="vmxprobe")
    except KeyboardInterrupt:
        click.echo("vmxprobe: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # a bug: one line, not a traceback, unless asked for
        if os.environ.get("VMXPROBE_DEBUG"):
            raise
        click.echo(f"vmxprobe: internal error: {type(e).__name__}: {e} (set VMXPROBE_DEBUG=1 "
                   "for the traceback, and please report it)", err=True)
        sys.exit(EXIT_INTERNAL)
