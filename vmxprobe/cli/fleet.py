"""`vmxprobe fleet` (a summary of many scan reports) and `vmxprobe fleet diff` (two scans
of one host compared); the work is in vmxprobe.fleet."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

import click

from vmxprobe.cli.common import Fail, Group, emit, use_colour
from vmxprobe.durations import DurationError, parse_duration
from vmxprobe.exitcodes import EXIT_NOT_READY, EXIT_READY
from vmxprobe.files import OutputError
from vmxprobe.fleet.check import Invalid, Unreadable, read_report
from vmxprobe.fleet.diff import DIFF_KIND, OUTPUT_VERSION, compare, render_diff_text
from vmxprobe.fleet.inputs import check_paths, count_files, iter_paths
from vmxprobe.fleet.summary import DEFAULT_LIMIT, HOST_FROM, PROGRESS_MIN, plain, summarise

FLEET_EXIT_HELP = """\b
Exit codes of `fleet` / `fleet summary`:
  0  every report was read and every host is ready
  1  at least one host is not ready
  2  usage error: a path does not exist, no report files, a bad option
  3  none is not ready, but some hosts could not be determined, or some
     reports were skipped (unreadable, invalid, unknown schema version),
     or are stale (--stale-after)
Exit codes of `fleet diff`:
  0  unchanged   1  changed   2  an input is missing or not a scan report"""


class FleetGroup(Group):
    """`fleet PATHS...` is `fleet summary PATHS...`: arguments that do not start with a
    subcommand name are the summary's, and so is no argument at all: a usage error (exit 2)
    on every click, where a bare group would print its help and exit 0 on click 8.1 but 2
    from 8.2. (A report file named `diff` or `summary` in the current folder: write it
    ./diff.)"""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = ["summary", *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write(
            f"Usage: {ctx.command_path} [summary] [OPTIONS] REPORT...|DIR\n"
            f"       {ctx.command_path} diff [OPTIONS] OLD NEW\n"
        )


@click.group(cls=FleetGroup, epilog=FLEET_EXIT_HELP)
def fleet() -> None:
    """Summarise many hosts' scan reports, or compare two scans of one host.

    `vmxprobe fleet REPORT...|DIR` is `vmxprobe fleet summary REPORT...|DIR`.
    Collect the reports with deploy/ansible/vmxprobe-scan.yml or any tool that runs
    `vmxprobe scan --format json -o HOST.json` on each host.
    """


def _parse_limit(ctx: click.Context, param: click.Parameter, value: int) -> int | None:
    if value < 0:
        raise click.BadParameter("must be 0 (list all) or more")
    return None if value == 0 else value


def _parse_stale(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except DurationError as e:
        raise click.BadParameter(str(e)) from None


def progress_stream() -> TextIO:
    """Where the progress bar goes: standard error, shown only when it is a terminal."""
    return sys.stderr


@fleet.command("summary", epilog=FLEET_EXIT_HELP)
@click.argument("paths", nargs=-1, required=True, metavar="REPORT...|DIR")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "csv"]),
    default="text",
    show_default=True,
    help="text and json summarise; csv is one row per report (the full inventory, streamed).",
)
@click.option("-o", "--output", metavar="FILE", help="Write to FILE (atomically) instead of stdout.")
@click.option(
    "--stale-after",
    metavar="AGE",
    callback=_parse_stale,
    help="List reports scanned longer than AGE ago (90m, 36h, 7d, 2w) and exit 3 for them.",
)
@click.option(
    "--host-from",
    type=click.Choice(HOST_FROM),
    default="filename",
    show_default=True,
    help="Host name: the file name without .json (web01.json -> web01), or the report's "
    "source.name (meaningful for fixture replays only: a live scan's is its root, /).",
)
@click.option(
    "--limit",
    type=int,
    default=DEFAULT_LIMIT,
    show_default=True,
    callback=_parse_limit,
    help="Hosts listed per problem (first by name); 0 lists all, with memory to match.",
)
@click.option("-r", "--recursive", is_flag=True, help="Read *.json in the folders below each DIR too.")
def summary_cmd(
    paths: tuple[str, ...],
    fmt: str,
    output: str | None,
    stale_after: int | None,
    host_from: str,
    limit: int | None,
    recursive: bool,
) -> None:
    """Summarise scan reports: files, or folders of *.json (dot-files skipped)."""
    missing = check_paths(paths)
    if missing:
        raise Fail(f"no such file or folder: {', '.join(missing)}")
    if next(iter_paths(paths, recursive, []), None) is None:
        raise Fail(
            f"no report files (*.json) in {', '.join(paths)}"
            + ("" if recursive else " (-r reads the folders below too)")
        )
    progress = None
    stderr = progress_stream()
    if stderr.isatty():
        total = count_files(paths, recursive)
        if total >= PROGRESS_MIN:

            def progress(files: Any) -> Any:
                return click.progressbar(files, length=total, label="Reading reports", file=stderr)

    style = click.style if fmt == "text" and use_colour(output) else plain
    try:
        text, summary = summarise(
            paths,
            fmt=fmt,
            output=output if fmt == "csv" else None,
            limit=limit,
            stale_after=stale_after,
            host_from=host_from,
            recursive=recursive,
            style=style,
            progress=progress,
            stdout=sys.stdout,
        )
    except OutputError as e:
        raise Fail(f"cannot write the inventory: {e}") from None
    if text is not None:
        emit(text, output, what="summary")
    sys.exit(summary.exit_code())


def _load_for_diff(path: str, which: str) -> dict[str, Any]:
    try:
        if path == "-":
            return read_report("-", stream=sys.stdin.buffer)
        if os.path.isdir(path):
            raise Unreadable("is a folder; give one report file")
        return read_report(path)
    except (Unreadable, Invalid) as e:
        raise Fail(f"{which} {path}: {e}") from None


@fleet.command("diff", epilog=FLEET_EXIT_HELP)
@click.argument("old", metavar="OLD")
@click.argument("new", metavar="NEW")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def diff_cmd(old: str, new: str, fmt: str) -> None:
    """What changed between two scans of one host (OLD or NEW may be -, stdin)."""
    if old == "-" and new == "-":
        raise Fail("OLD and NEW cannot both be stdin (-)")
    a = _load_for_diff(old, "OLD")
    b = _load_for_diff(new, "NEW")
    result = compare(a, b)
    if fmt == "json":

        def meta(doc: dict[str, Any], path: str) -> dict[str, Any]:
            return {
                "file": path,
                "generated_at": doc["generated_at"],
                "tool_version": doc["tool"]["version"],
                "source": {"kind": doc["source"]["kind"], "name": doc["source"]["name"]},
            }

        text = (
            json.dumps(
                {
                    "kind": DIFF_KIND,
                    "version": OUTPUT_VERSION,
                    "old": meta(a, old),
                    "new": meta(b, new),
                    **result,
                },
                indent=2,
            )
            + "\n"
        )
    else:
        text = render_diff_text(result, old, new, a, b)
    click.echo(text, nl=False)
    sys.exit(EXIT_NOT_READY if result["changed"] else EXIT_READY)
