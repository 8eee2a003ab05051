"""`vmxprobe caps` (every CPU's VMX capability MSRs, decoded and compared) and
`vmxprobe decode` (one pasted value, no hardware needed)."""

from __future__ import annotations

import json
import sys

import click

from vmxprobe.cli import (EXIT_CODES_HELP, EXIT_NOT_READY, EXIT_READY, EXIT_UNKNOWN, EXIT_USAGE,
                          Fail, _emit, _source)

DECODE_EXIT_HELP = """\b
Exit codes:
  0  decoded
  2  bad value or unknown MSR (one line on stderr)"""


@click.command("caps", epilog=EXIT_CODES_HELP)
@click.option("--root", metavar="DIR", help="Read the host tree under DIR instead of / (like lscpu --sysroot).")
@click.option("--fixture", metavar="PATH|NAME", help="Replay a recorded fixture file, or a bundled one by name.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("-o", "--output", metavar="FILE", help="Write the table to FILE (atomically) instead of stdout.")
def caps(root, fixture, fmt, output):
    """Decode every VMX capability MSR and show which CPUs differ from the boot CPU.

    The boot CPU's IA32_VMX_BASIC and 0x481-0x493 are decoded (control MSRs as always
    on / always off / either, from the TRUE MSRs when VMX_BASIC bit 55 says they
    exist); every other CPU is compared with it bit by bit, each difference saying
    whether kvm_intel's per-CPU check ("Inconsistent VMCS config on CPU N") sees it.
    The exit code is the scan's: the verdict covers these checks.
    """
    from vmxprobe import capview
    from vmxprobe.pipeline import run

    source, fx = _source(root, fixture)
    report, verdict = run(source, fx)
    section = report["capabilities"]
    if fmt == "json":
        doc = {"schema_version": report["schema_version"], "tool": report["tool"],
               "generated_at": report["generated_at"], "source": report["source"],
               "host": report["host"], "cpus": report["cpus"], "capabilities": section,
               "verdict": {k: report["verdict"][k] for k in ("x86_vmx_init", "kvm_intel", "ready",
                                                             "determined", "boot_cpu", "reasons")}}
        text = json.dumps(doc, indent=2) + "\n"
    else:
        from vmxprobe.report import headline
        text = headline(report) + "\n" + capview.render_text(section)
    _emit(text, output, what="table")
    if verdict.ready:
        sys.exit(EXIT_READY)
    if not verdict.determined:
        first = verdict.undetermined[0] if verdict.undetermined else "the registers could not be read"
        click.echo(f"vmxprobe: could not determine: {first}", err=True)
        sys.exit(EXIT_UNKNOWN)
    sys.exit(EXIT_NOT_READY)


@click.command("decode", epilog=DECODE_EXIT_HELP)
@click.argument("value", nargs=-1, required=True)
@click.option("--msr", "msr", metavar="INDEX|NAME", default="0x480", show_default=True,
              help="Which register VALUE came from: 0x3a, 0x480-0x493, or a name such as "
                   "PROCBASED_CTLS2 or IA32_VMX_EPT_VPID_CAP.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def decode(value, msr, fmt):
    """Decode a register VALUE pasted from a bug report, rdmsr or vmxcap.

    No hardware and no root needed.  VALUE is hex, as rdmsr prints it: "0x" optional,
    "_" and spaces between digit groups allowed (quote it, or pass the groups as
    separate words), a trailing "h" accepted.
    """
    from vmxprobe import caps, capview

    try:
        index = caps.resolve_msr(msr)
    except ValueError as e:
        raise Fail(str(e), EXIT_USAGE) from None
    try:
        number = caps.parse_value(" ".join(value))
    except ValueError as e:
        raise Fail(str(e), EXIT_USAGE) from None
    d = caps.decode_any(index, number)
    if fmt == "json":
        click.echo(json.dumps(d, indent=2))
        return
    lines = [f"{caps.msr_label(index)} = {d['raw']}"]
    if d["kind"] == "basic":
        lines[0] += (f": revision {d['revision_id']} (0x{d['revision_id']:x}), VMCS size "
                     f"{d['vmcs_size']}, memory type {d['memory_type_name']}")
    lines += capview.decoded_lines(d)
    m = caps.MSRS.get(index)
    if m is not None and m.true_of is None and m.kind == caps.KIND_CTLS and \
            any(t.true_of == index for t in caps.MSRS.values()):
        lines.append("  note: when IA32_VMX_BASIC bit 55 is set, the TRUE_* MSR holds the "
                     "final word on the default1 controls shown as always_on here (SDM A.2)")
    click.echo("\n".join(lines))
