"""The capability analysis as a table (`vmxprobe caps`), and one decoded register as
aligned lines (`vmxprobe decode`)."""

from __future__ import annotations

from typing import Any

from vmxprobe.arch.capabilities import KIND_CTLS, MSRS, msr_label
from vmxprobe.arch.vmx import FEATURE_CONTROL_FIELDS
from vmxprobe.host.cpulist import format_cpulist
from vmxprobe.host.sources import MEANING
from vmxprobe.kernel.capabilities import (
    STATE_NO_VMX,
    STATE_NOT_READ,
    STATE_READ,
    STATE_UNKNOWN,
    CapabilityAnalysis,
)
from vmxprobe.printable import printable


def _fmt_field(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value)) if value else "-"
    return str(value)


def decoded_lines(d: dict[str, Any], indent: str = "  ") -> list[str]:
    """A decoded MSR (kernel.capabilities.decode_any()) as aligned "name  value" lines."""
    lines = []
    if d["kind"] == "basic":
        lines.append(f"{indent}{'revision id':<40} {d['revision_id']} (0x{d['revision_id']:x})")
        lines.append(f"{indent}{'VMCS size':<40} {d['vmcs_size']} bytes")
        lines.append(f"{indent}{'memory type':<40} {d['memory_type_name']} ({d['memory_type']})")
        for key in (
            "phys_addr_32bit",
            "dual_monitor",
            "ins_outs",
            "true_controls",
            "no_hw_error_code_cc",
            "no_seamret_invd_vmcs",
        ):
            lines.append(f"{indent}{key:<40} {_fmt_field(d[key])}")
        lines.append(f"{indent}{'TDX SEAMRET':<40} {d['seamret']['meaning']}")
        if d.get("synthetic"):
            lines.append(f"{indent}{'synthetic':<40} {d['synthetic']}")
    elif d["kind"] == "feature_control":
        for f in FEATURE_CONTROL_FIELDS:
            lines.append(f"{indent}{f.name:<40} {_fmt_field(d[f.name])}")
        lines.append(f"{indent}{'state':<40} {d['state']}")
    elif "controls" in d:
        for name, st in d["controls"].items():
            lines.append(f"{indent}{name:<40} {st}")
        for name, st in d.get("reserved_controls", {}).items():
            lines.append(f"{indent}{name + ' (undefined)':<40} {st}")
    else:
        for name, v in d["fields"].items():
            lines.append(f"{indent}{name:<40} {_fmt_field(v)}")
    if d.get("reserved"):
        lines.append(f"{indent}{'set reserved/undefined bits':<40} {', '.join(map(str, d['reserved']))}")
    for e in d.get("errors", []):
        lines.append(f"{indent}error: {e}")
    return lines


def render_text(a: CapabilityAnalysis) -> str:
    lines: list[str] = []
    boot = a.boot_cpu
    state = a.state
    if state == STATE_UNKNOWN:
        return "VMX capabilities: IA32_VMX_BASIC could not be read\n"
    if state == STATE_NO_VMX:
        return "VMX capabilities: none (IA32_VMX_BASIC faults or reads 0: no VMX here)\n"
    if state == STATE_NOT_READ:
        lines.append(
            f"VMX capabilities of CPU {boot}: only IA32_VMX_BASIC was read; the "
            "capability MSRs 0x481-0x493 were not (not recorded, or not readable)"
        )
    else:
        lines.append(
            f"VMX capabilities of CPU {boot} (the boot CPU); read on CPU(s) "
            f"{format_cpulist(a.cpus_read) or '-'}"
            + (f", not read on CPU(s) {format_cpulist(a.cpus_not_read)}" if a.cpus_not_read else "")
        )
    syn = a.synthetic
    if syn:
        lines.append(f"Made up by {syn.by}: {syn.how}")
        ev = syn.evmcs
        if ev:
            lines.append(
                f"  enlightened VMCS: recommended {_fmt_field(ev.recommended)}, versions "
                f"{ev.version_low}-{ev.version_high}; kvm_intel would use it: "
                f"{_fmt_field(ev.kvm_uses_evmcs)}"
            )
    eff = a.effective_controls
    unread: dict[str, list[str]] = {}
    for row in a.msrs:
        d = row.decoded
        if d is None:
            if row.read != "absent":
                unread.setdefault(row.read, []).append(f"0x{row.index:x}")
            continue
        kvm = "compared by kvm_intel" if row.kvm.compared else "not compared by kvm_intel"
        lines.append(f"{msr_label(row.index)} = {d['raw']}  [{kvm}]")
        m = MSRS.get(row.index)
        if m is not None and m.table is not None and m.true_of is None and m.kind == KIND_CTLS:
            e = eff.get(m.table.group)
            if e is not None and e.source != row.index:
                lines.append(
                    f"  (effective settings below are from {msr_label(e.source)}: IA32_VMX_BASIC bit 55)"
                )
                d = dict(d, controls=e.controls, reserved_controls=e.reserved_controls)
            if e is not None and e.default1:
                lines.append(f"  default1 (forced here, optional per the TRUE MSR): {', '.join(e.default1)}")
        lines += decoded_lines(d)
    for how, indexes in unread.items():
        lines.append(f"Not decoded ({how}: {MEANING.get(how, 'not read')}): {', '.join(indexes)}")
    for reg, s in a.cr_fixed.items():
        lines.append(
            f"{reg} in VMX operation: fixed to 1 {_fmt_field(s['fixed_to_1'])}; fixed to 0 "
            f"{_fmt_field(s['fixed_to_0'])}"
        )
    if a.kvm_setup:
        lines.append(f"kvm_intel setup_vmcs_config() on CPU {boot}:")
        lines += [f"  - {x}" for x in a.kvm_setup]
    if a.faults:
        lines.append("Faults where the SDM says the MSR exists:")
        lines += [f"  - CPU(s) {format_cpulist(f.cpus)}: {f.why}" for f in a.faults]
    if a.differences:
        lines.append(f"CPUs that differ from CPU {boot}:")
        for diff in a.differences:
            lines.append(
                f"  {msr_label(diff.index)} (CPU {boot}: 0x{diff.boot_value:016x}); "
                + (
                    "kvm_intel compares it"
                    if diff.kvm.compared
                    else f"kvm_intel does not compare it: {diff.kvm.why}"
                )
            )
            for c in diff.cpus:
                verdict = (
                    f'kvm_intel refuses ("Inconsistent VMCS config on CPU {c.cpu}")'
                    if c.kvm_refuses
                    else "reported, not refused"
                )
                read = "" if c.read == "ok" else f" ({c.read})"
                lines.append(f"    CPU {c.cpu} = 0x{c.value:016x}{read}: {verdict}")
                for b in c.bits:
                    lines.append(f"      bit {b.bit:>2} {b.what}: CPU {boot} {b.a}, CPU {c.cpu} {b.b}")
    elif state == STATE_READ:
        lines.append(f"All CPUs read agree with CPU {boot} on every capability MSR.")
    for n in a.not_compared:
        lines.append(f"Not compared: {msr_label(n.index)} on CPU(s) {format_cpulist(n.cpus)} ({n.why})")
    for k in a.kernel_view:
        lines.append(f"Kernel view, CPU(s) {format_cpulist(k.cpus)}:")
        lines += [f"  - {w}" for w in k.why]
    return "\n".join(printable(line) for line in lines) + "\n"
