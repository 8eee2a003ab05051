"""`vmxprobe scan` (read, judge, plan, render), `vmxprobe record` (a fixture of what a
scan reads) and `vmxprobe fixtures` (the bundled ones)."""

from __future__ import annotations

import json
import os

import click

from vmxprobe.cli.common import (
    EXIT_CODES_HELP,
    Fail,
    emit,
    exit_with_verdict,
    open_source,
    output_option,
    root_dir,
    source_options,
    style_for,
)
from vmxprobe.printable import printable


@click.command(epilog=EXIT_CODES_HELP)
@source_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "prometheus", "nfd"]),
    default="text",
    show_default=True,
    help="prometheus: node_exporter textfile (*.prom); nfd: a node-feature-"
    "discovery features.d file (see docs/fleet.md).",
)
@output_option("report")
def scan(root: str | None, fixture: str | None, fmt: str, output: str | None) -> None:
    """Read every CPU, judge, and build the root-VMCS plan."""
    from vmxprobe.pipeline import run

    source, fx = open_source(root, fixture)
    result = run(source, fx)
    note = None
    if fmt == "json":
        from vmxprobe.render.report import render_json

        text = render_json(result)
    elif fmt == "prometheus":
        from vmxprobe.render import prometheus

        text = prometheus.render_prometheus(result)
        note = prometheus.output_note(output) if output else None
    elif fmt == "nfd":
        from vmxprobe.render import nfd

        try:
            text = nfd.render_nfd(result)
        except nfd.ExportError as e:
            raise Fail(str(e)) from None
        note = nfd.output_note(output) if output else None
    else:
        from vmxprobe.render.text import render_text

        text = render_text(result, style=style_for(output))
    if note:
        click.echo(f"vmxprobe: note: {printable(note)}", err=True)
    emit(text, output)
    v = result.verdict
    exit_with_verdict(v.ready, v.determined, v.undetermined)


@click.command()
@click.option(
    "--root", metavar="DIR", default="/", show_default=True, help="Root of the host tree to record."
)
@output_option("fixture")
@click.option("--name", metavar="NAME", help="Fixture name (default: from the output file name).")
@click.option("--description", metavar="TEXT", default="", help="One line saying what this host is.")
@click.option(
    "--hostname/--no-hostname",
    default=False,
    show_default=True,
    help="Store this machine's host name in the provenance.",
)
def record(root: str, output: str | None, name: str | None, description: str, hostname: bool) -> None:
    """Record what a scan reads from a host into a fixture (JSON)."""
    from vmxprobe.host import fixture
    from vmxprobe.host.readings import read_host
    from vmxprobe.host.sources import LiveHost, RecordingHost

    root = root_dir(root)
    for option, text in (("--name", name), ("--description", description)):
        if text is not None and printable(text) != text:
            # They are shown on a terminal; a fixture holding them would not load.
            raise Fail(f"{option}: control characters or bytes that are not UTF-8 are not allowed")
    rec = RecordingHost(LiveHost(root))
    readings = read_host(rec)
    if name is None:
        name = printable(os.path.splitext(os.path.basename(output))[0]) if output else "recorded-host"
    doc = fixture.from_recording(
        rec,
        name,
        description,
        readings.kernel,
        hostname=printable(os.uname().nodename) if hostname else None,  # gethostname(2) on Linux
    )
    emit(json.dumps(doc, indent=1) + "\n", output, what="fixture")
    missing = list(readings.topology.missing)
    for kind, seen in (
        ("msr", [r.errno for d in rec.msr.values() for r in d.values()]),
        ("cpuid", [r.errno for d in rec.cpuid.values() for r in d.values()]),
    ):
        if seen and all(e == "ENOENT" for e in seen):
            missing.append(f"/dev/cpu/N/{kind}")
    if missing:
        click.echo(f"vmxprobe: recorded; absent on this host: {printable(', '.join(missing))}", err=True)


@click.command("fixtures")
def fixtures_cmd() -> None:
    """List the bundled fixtures, one line each."""
    from vmxprobe.host import fixture

    for name in fixture.bundled_names():
        try:
            fx = fixture.load(name)
            line = f"{name:<28} {fx.provenance.get('origin', '?'):<9} {fx.description}"
        except fixture.FixtureError as e:
            line = f"{name:<28} (unreadable: {e})"
        click.echo(printable(line))
