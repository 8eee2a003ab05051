"""Command-line wiring: the commands, their options and exit codes. The logic lives in
host/, kernel/, render/ and fleet/; a command here reads its options, calls them, and
turns their errors into one line and a documented exit code."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from vmxprobe import __version__
from vmxprobe.cli.common import EXIT_CODES_HELP, Group
from vmxprobe.exitcodes import EXIT_INTERNAL


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


def main(argv: list[str] | None = None) -> Any:
    try:
        return cli.main(args=argv, prog_name="vmxprobe")
    except KeyboardInterrupt:
        click.echo("vmxprobe: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # a bug: one line, not a traceback, unless asked for
        if os.environ.get("VMXPROBE_DEBUG"):
            raise
        click.echo(
            f"vmxprobe: internal error: {type(e).__name__}: {e} (set VMXPROBE_DEBUG=1 "
            "for the traceback, and please report it)",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)
