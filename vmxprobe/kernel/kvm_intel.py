"""Loading kvm_intel: setup_vmcs_config() on the boot CPU in hardware_setup(), then
vmx_check_processor_compat() on each online CPU (arch/x86/kvm/vmx/vmx.c); the first
failure is what loading the module returns."""

from __future__ import annotations

from dataclasses import dataclass

from vmxprobe.arch.capabilities import msr_label
from vmxprobe.arch.vmx import MSR_IA32_FEAT_CTL, MSR_IA32_VMX_BASIC, VMX_BASIC_MEM_TYPE_WB, VmxBasic
from vmxprobe.host.cpulist import format_cpulist
from vmxprobe.host.readings import HostReadings
from vmxprobe.host.sources import MEANING
from vmxprobe.kernel import access, feat_ctl, vmcs_config
from vmxprobe.kernel.capabilities import (
    STATE_NOT_READ,
    STATE_READ,
    CapabilityAnalysis,
    cpu_state,
    kernel_values,
    msr_key,
)

OK = "ok"
EOPNOTSUPP = "EOPNOTSUPP"
EIO = "EIO"


@dataclass(frozen=True)
class KvmIntel:
    """What loading kvm_intel returns: "ok", an errno name, or None (not determined)."""

    errno: str | None
    reasons: tuple[str, ...] = ()
    undetermined: tuple[str, ...] = ()


def load_kvm_intel(scan: HostReadings, boot: int, basic: VmxBasic, capsec: CapabilityAnalysis) -> KvmIntel:
    """setup_vmcs_config() on the boot CPU, then vmx_check_processor_compat() on each
    online CPU."""
    first: str | None = None
    reasons: list[str] = []
    undetermined: list[str] = []

    def refuse(code: str, reason: str) -> None:
        nonlocal first
        first = first or code
        reasons.append(reason)

    if basic.phys_addr_32bit:
        refuse(
            EIO,
            f"CPU {boot}: IA32_VMX_BASIC bit 48 (32-bit physical addresses only) is "
            "set; setup_vmcs_config() refuses it on x86_64 (-EIO)",
        )
    if basic.memory_type != VMX_BASIC_MEM_TYPE_WB:
        refuse(
            EIO,
            f"CPU {boot}: IA32_VMX_BASIC memory type (bits 53:50) = "
            f"{basic.memory_type}, not 6 (WB); setup_vmcs_config() refuses it (-EIO)",
        )
    for problem in capsec.kvm_setup:
        refuse(EIO, f"CPU {boot}: setup_vmcs_config() fails: {problem}; kvm_intel refuses to load (-EIO)")
    if first:
        # setup_vmcs_config() runs in hardware_setup(), before the per-CPU compatibility
        # checks (__kvm_x86_vendor_init()): when the boot CPU fails it, those never run.
        reasons.append(
            "kvm_intel stops at the boot CPU, in hardware_setup(): the per-CPU "
            "compatibility checks (vmx_check_processor_compat()) never run"
        )
        return KvmIntel(first, tuple(reasons))
    # Capability-MSR differences that reach vmcs_config, per CPU (IA32_VMX_BASIC is
    # handled below with its own message).
    cap_refusals: dict[int, list[str]] = {}
    for d in capsec.differences:
        if d.index == MSR_IA32_VMX_BASIC:
            continue
        for c in d.cpus:
            if not c.kvm_refuses:
                continue
            bits = "; ".join(
                f"bit {b.bit} ({b.what}): {b.a} on CPU {boot}, {b.b} here" for b in c.bits if b.kvm
            )
            read = "" if c.read == "ok" else f" ({c.read}, read by the kernel as 0)"
            cap_refusals.setdefault(c.cpu, []).append(
                f"{msr_label(d.index)} = 0x{c.value:016x}{read} differs from CPU {boot}'s "
                f"0x{d.boot_value:016x} in {bits}"
            )
    unknown = False
    differ_fc = []
    strict = vmcs_config.strict_config(scan.kvm_params)
    # setup_vmcs_config() depends on the registers alone: judged once per distinct set
    # of readings (capabilities.msr_key()), not once per CPU.
    setup_of: dict[int, str] = {}
    boot_fc = scan.cpus[boot].msr[MSR_IA32_FEAT_CTL]
    loaded = access.drivers_loaded(scan)
    for cpu in sorted(scan.cpus):
        if cpu == boot:
            continue
        has_vmx, why = feat_ctl.vmx_feature(scan, cpu)
        q = scan.cpus[cpu]
        if has_vmx is None:
            unknown = True
            undetermined += access.unreadable_cpu(q, "flags" in scan.cpuinfo.get(q.cpu, {}), loaded)
            continue
        if not has_vmx:
            refuse(
                EOPNOTSUPP,
                f'{why}; kvm_intel refuses to load ("VMX not enabled (by '
                f'BIOS) in MSR_IA32_FEAT_CTL on CPU {cpu}" or "VMX not supported by CPU '
                f'{cpu}")',
            )
            continue
        r = q.msr[MSR_IA32_VMX_BASIC]
        if r.value is None:
            if r.errno == "EIO":
                refuse(
                    EIO,
                    f"CPU {cpu}: IA32_VMX_BASIC (0x480) faults (EIO); KVM's "
                    f'"Failed to setup VMCS config on CPU {cpu}"',
                )
            else:
                unknown = True
                undetermined.append(access.unreadable(cpu, "IA32_VMX_BASIC (0x480)", r, loaded=loaded))
            continue
        # vmx_check_processor_compat(): setup_vmcs_config() on this CPU first, then the
        # memcmp() of the result against the boot CPU's vmcs_config.
        key = msr_key(q)
        setup = setup_of.get(key)
        if setup is None:
            kv = kernel_values(q) if cpu_state(q) == STATE_READ else None
            setup = setup_of[key] = "; ".join(
                vmcs_config.kvm_setup_problems(kv, strict) if kv is not None else []
            )
        if setup:
            also = (
                f"; it also differs from CPU {boot}: {'; '.join(cap_refusals[cpu])}"
                if cpu in cap_refusals
                else ""
            )
            refuse(
                EIO,
                f"CPU {cpu}: setup_vmcs_config() fails: {setup}; KVM: "
                f'"Failed to setup VMCS config on CPU {cpu}" (-EIO){also}',
            )
            continue
        if r.value != basic.value:
            differ = [b for b in range(64) if (r.value ^ basic.value) >> b & 1]
            refuse(
                EIO,
                f"CPU {cpu}: IA32_VMX_BASIC (0x480) = 0x{r.value:016x} differs from "
                f"CPU {boot}'s {basic.raw} in bit(s) {', '.join(map(str, differ))}; "
                f'KVM: "Inconsistent VMCS config on CPU {cpu}" (-EIO)',
            )
        elif cpu in cap_refusals:
            refuse(
                EIO,
                f'CPU {cpu}: {"; ".join(cap_refusals[cpu])}; KVM: "Inconsistent VMCS '
                f'config on CPU {cpu}" (-EIO)',
            )
        fc = q.msr[MSR_IA32_FEAT_CTL]
        if fc.ok and boot_fc.ok and fc.value != boot_fc.value:
            differ_fc.append(cpu)
    if differ_fc:
        # KVM refuses a CPU only when the difference turns VMX off there (handled
        # above); other bits (SGX, SENTER, LMCE) differing is reported, not refused.
        reasons.append(
            f"CPU(s) {format_cpulist(differ_fc)}: IA32_FEATURE_CONTROL differs "
            f"from CPU {boot}'s in bits that do not disable VMX; firmware set "
            "the CPUs up unevenly"
        )
    reasons += capability_notes(capsec, boot)
    offline = sorted(set(scan.topology.possible) - set(scan.cpus))
    if offline:
        reasons.append(
            f"CPU(s) {format_cpulist(offline)} are not online, so not read: "
            "each gets its root VMCS page now and meets KVM's compatibility "
            "check when it comes online"
        )
    if first:
        return KvmIntel(first, tuple(reasons), tuple(undetermined))
    if unknown:
        return KvmIntel(None, tuple(reasons), tuple(undetermined))
    if capsec.state == STATE_READ and not capsec.cpus_not_read:
        compared = (
            "IA32_VMX_BASIC and VMX capability MSRs (as far as kvm_intel compares "
            "them" + (", and of those that were read" if capsec.not_compared else "") + ")"
        )
    else:
        compared = "IA32_VMX_BASIC"
    reasons.append(
        f"all {len(scan.cpus)} online CPU(s) {format_cpulist(scan.cpus)} "
        f"have VMX enabled and the same {compared} as the boot CPU"
    )
    return KvmIntel(OK, tuple(reasons), tuple(undetermined))


def capability_notes(capsec: CapabilityAnalysis, boot: int) -> list[str]:
    """What the capability MSRs show besides refusals: MSRs not read, MSRs that fault
    where they should exist, and differences kvm_intel does not compare."""
    out = []
    if capsec.state == STATE_NOT_READ:
        bp_reading = next((r.read for r in capsec.msrs if r.index == 0x481), "?")
        out.append(
            f"the VMX capability MSRs (0x481-0x493) were not read on CPU {boot} "
            f"({bp_reading}: {MEANING.get(bp_reading, 'not read')}): kvm_intel's "
            "per-CPU comparison of its vmcs_config was checked on IA32_VMX_BASIC only"
        )
    elif capsec.cpus_not_read:
        out.append(
            f"the VMX capability MSRs were not read on CPU(s) "
            f"{format_cpulist(capsec.cpus_not_read)}: kvm_intel's per-CPU comparison "
            "was checked there on IA32_VMX_BASIC only"
        )
    for n in capsec.not_compared:
        out.append(
            f"CPU(s) {format_cpulist(n.cpus)}: {msr_label(n.index)} was not read on them "
            f"or on CPU {boot} ({n.why}), so it was not compared"
        )
    for f in capsec.faults:
        out.append(f"CPU(s) {format_cpulist(f.cpus)}: {f.why}; the kernel reads it as 0")
    for d in capsec.differences:
        if d.kvm.compared and d.index == MSR_IA32_VMX_BASIC:
            continue
        quiet = [c for c in d.cpus if not c.kvm_refuses]
        if not quiet:
            continue
        bits = sorted({b.bit for c in quiet for b in c.bits})
        why = (
            f"kvm_intel does not compare it ({d.kvm.why})"
            if not d.kvm.compared
            else "the differing bits do not reach kvm_intel's vmcs_config"
        )
        out.append(
            f"CPU(s) {format_cpulist(c.cpu for c in quiet)}: {msr_label(d.index)} differs "
            f"from CPU {boot}'s in bit(s) {', '.join(map(str, bits))}: {why}; reported, "
            "not refused"
        )
    s = capsec.seamret
    if s and (s.tdx_host_platform or s.kernel_reports_bug):
        line = f"CPU {boot}: TDX host: {s.meaning}"
        if not s.keeps_current_vmcs and s.kernel_reports_bug is False:
            line += (
                "; the running kernel does not list seamret_invd_vmcs in its bugs (it "
                "predates the erratum handling)"
            )
        out.append(line)
    return out
