"""`vmxprobe caps` (every CPU's VMX capability MSRs, decoded and compared) and
`vmxprobe decode` (one pasted value, no hardware needed)."""

from __future__ import annotations

import json

import click

from vmxprobe.cli.common import (
    EXIT_CODES_HELP,
    Fail,
    emit,
    exit_with_verdict,
    open_source,
    output_option,
    source_options,
)

DECODE_EXIT_HELP = """\b
Exit codes:
  0  decoded
  2  bad value or unknown MSR (one line on stderr)"""


@click.command("caps", epilog=EXIT_CODES_HELP)
@source_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@output_option("table")
def caps(root: str | None, fixture: str | None, fmt: str, output: str | None) -> None:
    """Decode every VMX capability MSR and show which CPUs differ from the boot CPU.

    The boot CPU's IA32_VMX_BASIC and 0x481-0x493 are decoded (control MSRs as always
    on / always off / either, from the TRUE MSRs when VMX_BASIC bit 55 says they
    exist); every other CPU is compared with it bit by bit, each difference saying
    whether kvm_intel's per-CPU check ("Inconsistent VMCS config on CPU N") sees it.
    The exit code is the scan's: the verdict covers these checks.
    """
    from vmxprobe.pipeline import run

    source, fx = open_source(root, fixture)
    result = run(source, fx)
    if fmt == "json":
        from vmxprobe.render.report import render_caps_json

        text = render_caps_json(result)
    else:
        from vmxprobe.render.caps import render_text
        from vmxprobe.render.text import headline

        text = (
            headline(result.verdict, len(result.plan.pages), result.plan.lower_bound)
            + "\n"
            + render_text(result.verdict.capabilities)
        )
    emit(text, output, what="table")
    v = result.verdict
    exit_with_verdict(v.ready, v.determined, v.undetermined, more_hint=False)


@click.command("decode", epilog=DECODE_EXIT_HELP)
@click.argument("value", nargs=-1, required=True)
@click.option(
    "--msr",
    "msr",
    metavar="INDEX|NAME",
    default="0x480",
    show_default=True,
    help="Which register VALUE came from: 0x3a, 0x480-0x493, or a name such as "
    "PROCBASED_CTLS2 or IA32_VMX_EPT_VPID_CAP.",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def decode(value: tuple[str, ...], msr: str, fmt: str) -> None:
    """Decode a register VALUE pasted from a bug report, rdmsr or vmxcap.

    No hardware and no root needed.  VALUE is hex, as rdmsr prints it: "0x" optional,
    "_" and spaces between digit groups allowed (quote it, or pass the groups as
    separate words), a trailing "h" accepted.
    """
    from vmxprobe.arch import capabilities as caps
    from vmxprobe.kernel.capabilities import decode_any
    from vmxprobe.render.caps import decoded_lines

    try:
        index = caps.resolve_msr(msr)
        number = caps.parse_value(" ".join(value))
    except ValueError as e:
        raise Fail(str(e)) from None
    d = decode_any(index, number)
    if fmt == "json":
        click.echo(json.dumps(d, indent=2))
        return
    lines = [f"{caps.msr_label(index)} = {d['raw']}"]
    if d["kind"] == "basic":
        lines[0] += (
            f": revision {d['revision_id']} (0x{d['revision_id']:x}), VMCS size "
            f"{d['vmcs_size']}, memory type {d['memory_type_name']}"
        )
    lines += decoded_lines(d)
    m = caps.MSRS.get(index)
    if (
        m is not None
        and m.true_of is None
        and m.kind == caps.KIND_CTLS
        and any(t.true_of == index for t in caps.MSRS.values())
    ):
        lines.append(
            "  note: when IA32_VMX_BASIC bit 55 is set, the TRUE_* MSR holds the "
            "final word on the default1 controls shown as always_on here (SDM A.2)"
        )
    click.echo("\n".join(lines))
