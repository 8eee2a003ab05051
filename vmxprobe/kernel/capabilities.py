"""Every CPU's VMX capability MSRs, side by side, as the kernel sees them: the boot CPU's
decoded table, the CPUs that differ from it bit by bit (and whether kvm_intel's per-CPU
check sees the difference), MSRs that fault where the SDM says they exist, the kernel's
"vmx flags" against what the registers imply, the TDX SEAMRET erratum bit and who made
the values up.

analyse() returns a CapabilityAnalysis; vmxprobe.render turns it into the report's
"capabilities" section (schema report-v1.json) and the `vmxprobe caps` table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from vmxprobe.arch import capabilities as caps
from vmxprobe.arch.cpuid import (
    CPUID_HV_LEAF,
    CPUID_HYPERVISOR_BIT,
    ECX,
    HV_CPUID_ENLIGHTMENT_INFO,
    HV_CPUID_NESTED_FEATURES,
    hypervisor_name,
)
from vmxprobe.arch.vmx import (
    FEATURE_CONTROL_FIELDS,
    M64,
    MSR_IA32_FEAT_CTL,
    MSR_IA32_VMX_BASIC,
    PAGE_SIZE,
    VmxBasic,
    decode_feature_control,
    decode_vmx_basic,
)
from vmxprobe.host.readings import CpuReadings, HostReadings
from vmxprobe.host.sources import Regs
from vmxprobe.kernel import feat_ctl, vmcs_config
from vmxprobe.kernel.hypervisors import Synthetic, synthetic_vmx
from vmxprobe.kernel.tdx import Seamret, seamret_erratum

CAP_INDEXES = tuple(sorted(caps.MSRS))
# Readings that say nothing about the CPU (replay without the value, no driver, no
# permission, a short or offline read): such a register is "not read", never "absent".
NOT_READ = frozenset({"UNRECORDED", "ENOENT", "EPERM", "EACCES", "SHORT", "ENXIO", "EINVAL"})

STATE_READ = "read"  # the capability MSRs were read on the boot CPU
STATE_NOT_READ = "not_read"  # VMX_BASIC shows VMX but the others could not be read
STATE_NO_VMX = "no_vmx"  # VMX_BASIC absent, faulting or 0: nothing more to read
STATE_UNKNOWN = "unknown"  # VMX_BASIC itself could not be read


@dataclass(frozen=True)
class MsrRow:
    """One MSR of the boot CPU: how it read, KVM's use of it, and its decode."""

    index: int
    read: str  # "ok", an errno name, or "absent"
    kvm: vmcs_config.KvmRole
    decoded: dict[str, Any] | None  # decode_any(), or None when not read


@dataclass(frozen=True)
class ControlGroup:
    """One group of controls, read from the MSR that holds the whole answer (A.2)."""

    source: int  # the MSR index the settings come from
    controls: dict[str, str]
    reserved_controls: dict[str, str]
    default1: tuple[str, ...]  # forced by the plain MSR, optional per the TRUE MSR


@dataclass(frozen=True)
class BitDifference:
    bit: int
    what: str
    a: int  # the boot CPU's bit
    b: int  # this CPU's bit
    kvm: bool  # the bit reaches kvm_intel's vmcs_config


@dataclass(frozen=True)
class CpuDifference:
    cpu: int
    value: int  # as the kernel reads it: a fault is 0
    read: str
    bits: tuple[BitDifference, ...]
    kvm_refuses: bool


@dataclass(frozen=True)
class Difference:
    """The CPUs whose value of one MSR differs from the boot CPU's."""

    index: int
    boot_value: int
    boot_read: str
    kvm: vmcs_config.KvmRole
    cpus: tuple[CpuDifference, ...]


@dataclass(frozen=True)
class NotCompared:
    index: int
    cpus: tuple[int, ...]
    why: str


@dataclass(frozen=True)
class Fault:
    """An MSR that faults (EIO) on CPUs where the SDM says it exists."""

    index: int
    cpus: tuple[int, ...]
    why: str
    sdm: str


@dataclass(frozen=True)
class FlagView:
    """CPUs whose "vmx flags" line disagrees with their registers in the same way."""

    cpus: tuple[int, ...]
    missing: tuple[str, ...]
    extra: tuple[str, ...]
    why: tuple[str, ...]


@dataclass(frozen=True)
class CapabilityAnalysis:
    boot_cpu: int | None
    state: str = STATE_UNKNOWN
    cpus_read: tuple[int, ...] = ()
    cpus_not_read: tuple[int, ...] = ()
    kvm_nested: bool | None = None
    msrs: tuple[MsrRow, ...] = ()
    effective_controls: dict[str, ControlGroup] = field(default_factory=dict)
    cr_fixed: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: tuple[Fault, ...] = ()
    differences: tuple[Difference, ...] = ()
    not_compared: tuple[NotCompared, ...] = ()
    kernel_view: tuple[FlagView, ...] = ()
    seamret: Seamret | None = None
    synthetic: Synthetic | None = None
    kvm_setup: tuple[str, ...] = ()


def cpu_values(p: CpuReadings) -> dict[int, int]:
    """The values of the capability MSRs read on one CPU (and IA32_VMX_BASIC)."""
    return {
        i: r.value
        for i, r in p.msr.items()
        if r.value is not None and (i in caps.MSRS or i == MSR_IA32_VMX_BASIC)
    }


def kernel_values(p: CpuReadings) -> dict[int, int] | None:
    """The values the kernel would get on this CPU: a faulting read is 0 (the rdmsr()
    exception fixup zeroes the result; rdmsr_safe() callers see 0 too), an MSR that is not
    architecturally there is left out (the kernel does not read it).  None when some MSR
    could not be read at all, so the kernel's view cannot be rebuilt."""
    out = {}
    for i, r in p.msr.items():
        if i not in caps.MSRS and i != MSR_IA32_VMX_BASIC:
            continue
        if r.value is not None:
            out[i] = r.value
        elif r.errno == "EIO":
            out[i] = 0
        else:
            return None
    return out


def cpu_state(p: CpuReadings) -> str:
    basic = p.msr.get(MSR_IA32_VMX_BASIC)
    if basic is None or (not basic.ok and basic.errno != "EIO"):
        return STATE_UNKNOWN
    if not basic.ok or not basic.value:
        return STATE_NO_VMX
    r = p.msr.get(0x481)
    if r is None or (not r.ok and r.errno in NOT_READ):
        return STATE_NOT_READ
    return STATE_READ


def _read_state(p: CpuReadings, index: int) -> str:
    r = p.msr.get(index)
    if r is None:
        return "absent"
    return "ok" if r.ok else (r.errno or "?")


def msr_key(p: CpuReadings) -> int:
    """Which readings a CPU has, for computing what derives from them once per distinct
    set rather than once per CPU: host.readings.read_host() gives CPUs that read alike one
    shared msr dict, so a host of 8192 CPUs has a handful of keys. Valid for one pass over
    the readings, while they hold their dicts."""
    return id(p.msr)


def _how(r: Any) -> str:
    return "absent" if r is None else ("ok" if r.ok else r.errno)


def _differences(
    scan: HostReadings,
    boot: int,
    nested: bool,
    states: dict[int, str],
    setups: dict[int, vmcs_config.Setup | None],
) -> tuple[list[Difference], list[NotCompared]]:
    """Per MSR, the CPUs whose value differs from the boot CPU's, and the pairs that
    could not be compared. A differing bit "reaches KVM" when the two CPUs'
    vmcs_config (kernel.vmcs_config) differ in it; where a CPU's vmcs_config could not
    be built, every bit of an MSR KVM reads counts."""
    bp = scan.cpus[boot]
    ref = setups.get(boot)
    ref_config = ref.config if ref is not None else None
    indexes = (MSR_IA32_VMX_BASIC,) + CAP_INDEXES
    # A CPU whose readings of every compared MSR equal the boot CPU's has nothing to
    # report, except where the boot CPU's own reading is "not read" (handled per MSR
    # below); its state is the boot CPU's too, since cpu_state() looks at 0x480 and
    # 0x481 only. Only the others are walked MSR by MSR.
    boot_key = tuple(map(bp.msr.get, indexes))
    same: list[int] = []
    others: list[int] = []
    for cpu in sorted(scan.cpus):
        if cpu != boot:
            msr = scan.cpus[cpu].msr
            (same if msr is bp.msr or tuple(map(msr.get, indexes)) == boot_key else others).append(cpu)
    boot_state = states[boot]
    diffs: list[Difference] = []
    not_compared: list[NotCompared] = []
    for index in indexes:
        role: vmcs_config.KvmRole | None = None
        found: list[CpuDifference] = []
        unknown: list[int] = []
        whys: set[str] = set()
        a = bp.msr.get(index)
        va = a.value if a is not None and a.value is not None else 0
        if (
            same
            and a is not None
            and not a.ok
            and a.errno in NOT_READ
            and (boot_state == STATE_READ or index == MSR_IA32_VMX_BASIC)
        ):
            unknown.extend(same)
            whys.add(a.errno or "?")
        for cpu in others:
            p = scan.cpus[cpu]
            if states[cpu] != STATE_READ and index != MSR_IA32_VMX_BASIC:
                continue
            b = p.msr.get(index)
            if a is None and b is None:
                continue
            if (a is not None and not a.ok and a.errno in NOT_READ) or (
                b is not None and not b.ok and b.errno in NOT_READ
            ):
                unknown.append(cpu)
                whys.update(r.errno for r in (a, b) if r is not None and r.errno)
                continue
            # The kernel's view: a fault reads 0, an MSR that is not there is not read (0).
            vb = b.value if b is not None and b.value is not None else 0
            if va == vb and _how(a) == _how(b):
                continue
            if role is None:
                role = vmcs_config.kvm_role(index, nested)
            mine = setups.get(cpu)
            if not role.compared:
                mask = 0
            elif ref_config is not None and mine is not None and mine.config is not None:
                mask = vmcs_config.reaching_bits(index, ref_config, mine.config)
            else:
                mask = M64
            bits = tuple(
                BitDifference(d["bit"], d["what"], d["a"], d["b"], bool(mask >> d["bit"] & 1))
                for d in caps.differing_bits(index, va, vb)
            )
            found.append(CpuDifference(cpu, vb, _how(b), bits, bool((va ^ vb) & mask) and role.compared))
        if role is not None:
            diffs.append(Difference(index, va, _how(a), role, tuple(found)))
        if unknown:
            not_compared.append(NotCompared(index, tuple(sorted(set(unknown))), ", ".join(sorted(whys))))
    return diffs, not_compared


def _faults(scan: HostReadings) -> list[Fault]:
    """Capability MSRs that fault (EIO) on a CPU where the SDM says they exist: the scan
    reads only MSRs arch.capabilities.readable_msrs() lists, so every EIO among them is
    one."""
    by_index: dict[int, list[int]] = {}
    faulting: dict[int, list[int]] = {}  # msr_key() -> the MSRs that fault there
    for cpu, p in sorted(scan.cpus.items()):
        key = msr_key(p)
        indexes = faulting.get(key)
        if indexes is None:
            indexes = faulting[key] = [
                index for index in CAP_INDEXES if (r := p.msr.get(index)) is not None and r.errno == "EIO"
            ]
        for index in indexes:
            by_index.setdefault(index, []).append(cpu)
    out = []
    for index, cpus in sorted(by_index.items()):
        m = caps.MSRS[index]
        out.append(
            Fault(
                index,
                tuple(cpus),
                f"{caps.msr_label(index)} faults (EIO) although "
                f"{_existence_rule(index)} says it exists: not implemented by this "
                "CPU or hypervisor",
                m.sdm,
            )
        )
    return out


def _existence_rule(index: int) -> str:
    return {
        0x48B: "IA32_VMX_PROCBASED_CTLS bit 63 (A.3.3)",
        0x492: "IA32_VMX_PROCBASED_CTLS bit 49 (A.3.4)",
        0x493: "IA32_VMX_EXIT_CTLS bit 63 (A.4.2)",
        0x48C: "IA32_VMX_PROCBASED_CTLS2 bit 33 or 37 (A.10)",
        0x491: "IA32_VMX_PROCBASED_CTLS2 bit 45 (A.11)",
        0x48D: "IA32_VMX_BASIC bit 55 (A.1)",
        0x48E: "IA32_VMX_BASIC bit 55 (A.1)",
        0x48F: "IA32_VMX_BASIC bit 55 (A.1)",
        0x490: "IA32_VMX_BASIC bit 55 (A.1)",
    }.get(index, "every CPU with VMX (SDM Vol. 3D Appendix A)")


def kernel_version(text: str | None) -> tuple[int, int] | None:
    """(major, minor) of a kernel release string, or None."""
    # ASCII digits, few enough for int() (a hostile osrelease may hold thousands).
    m = re.match(r"([0-9]{1,9})\.([0-9]{1,9})", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


# Names mainline's vmxfeatures.h prints that 6.1's leaves unnamed ("" comments), so a
# 6.1 kernel never shows them (arch/x86/include/asm/vmxfeatures.h in Debian's 6.1.192).
UNNAMED_IN_6_1 = frozenset({"ept_5level", "ept_violation_ve"})


def _kernel_view(scan: HostReadings, states: dict[int, str]) -> list[FlagView]:
    """Each CPU's /proc/cpuinfo "vmx flags" against feat_ctl.implied_vmx_flags() of its
    own registers, CPUs with the same disagreement grouped, each disagreement explained."""
    groups: dict[tuple[str, tuple[str, ...], tuple[str, ...]], list[int]] = {}
    version = kernel_version(scan.kernel)
    unnamed = UNNAMED_IN_6_1 if version is not None and version <= (6, 1) else frozenset()
    known_names = set(feat_ctl.VMX_FLAG_NAMES.values())
    implied_of: dict[int, frozenset[str] | None] = {}  # msr_key() -> implied flags
    compared: dict[tuple[frozenset[str], frozenset[str]], tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for cpu, p in sorted(scan.cpus.items()):
        info = scan.cpuinfo.get(cpu)
        if info is None or states[cpu] != STATE_READ:
            continue
        # init_vmx_capabilities() runs only while X86_FEATURE_VMX survives feat_ctl.c;
        # a CPU with VMX off has no vmx flags line, as the kernel view of "flags" says.
        if "vmx" not in info["flags"]:
            continue
        key = msr_key(p)
        if key in implied_of:
            implied = implied_of[key]
        else:
            values = kernel_values(p)
            implied = implied_of[key] = (
                None if values is None else frozenset(feat_ctl.implied_vmx_flags(values)) - unnamed
            )
        if implied is None:
            continue
        shown = info["vmx flags"]
        if not info.get("vmx flags line", bool(shown)):
            if implied:
                groups.setdefault(("noline", (), ()), []).append(cpu)
            continue
        try:
            # Flag sets from host.readings.parse_cpuinfo() are shared frozensets: one
            # comparison per distinct pair.
            missing, extra = compared[implied, shown]
        except KeyError:
            missing, extra = compared[implied, shown] = (
                tuple(sorted(implied - shown)),
                tuple(sorted(shown - implied)),
            )
        except TypeError:  # a plain set
            missing, extra = tuple(sorted(implied - shown)), tuple(sorted(shown - implied))
        if missing or extra:
            groups.setdefault(("differ", missing, extra), []).append(cpu)
    out = []
    for (kind, missing, extra), cpus in groups.items():
        why = []
        if kind == "noline":
            version = kernel_version(scan.kernel)
            if version is not None and version >= (5, 6):
                why.append(
                    f'no "vmx flags" line although the registers imply some: kernel {scan.kernel} '
                    "prints it whenever VMX survives feat_ctl.c (CONFIG_X86_VMX_FEATURE_NAMES "
                    "follows CONFIG_IA32_FEAT_CTL), so this /proc/cpuinfo was not written by that "
                    "kernel on these registers (composed, or copied from another boot)"
                )
            else:
                why.append(
                    'no "vmx flags" line although the registers imply some: kernels before 5.6 '
                    "do not print it, so tools that read that line see nothing"
                )
        if missing:
            why.append(
                f"implied by the registers but not shown ({', '.join(missing)}): the "
                "running kernel's vmxfeatures.h predates these names, or the registers "
                "changed after the kernel read them at boot"
            )
        unknown = [f for f in extra if f not in known_names]
        stale = [f for f in extra if f in known_names]
        if stale:
            why.append(
                f"shown but not allowed by the registers now ({', '.join(stale)}): the "
                "values changed after boot (a microcode update, or a hypervisor that "
                "changed what it offers, e.g. across a migration)"
            )
        if unknown:
            why.append(
                f"shown under names vmxprobe does not decode ({', '.join(unknown)}): a "
                "kernel newer than vmxprobe's table of VMX_FEATURE names"
            )
        out.append(FlagView(tuple(cpus), missing, extra, tuple(why)))
    return out


def _hv_leaves(p: CpuReadings) -> dict[int, Regs]:
    return {
        leaf: r.value
        for leaf, r in p.cpuid.items()
        if leaf in (HV_CPUID_ENLIGHTMENT_INFO, HV_CPUID_NESTED_FEATURES) and r.value is not None
    }


def hypervisor_signature(p: CpuReadings) -> str | None:
    """The name in CPUID leaf 0x40000000, when it was read."""
    r = p.cpuid.get(CPUID_HV_LEAF)
    return hypervisor_name(r.value) if r is not None and r.value is not None else None


def hypervisor_of(p: CpuReadings) -> str | None:
    """The hypervisor this CPU runs under, by CPUID; None without the hypervisor bit."""
    if not p.cpuid_bit(1, ECX, CPUID_HYPERVISOR_BIT):
        return None
    return hypervisor_signature(p) or "an unnamed hypervisor"


def _seamret(scan: HostReadings, boot: int, basic: int) -> Seamret:
    info = scan.cpuinfo.get(boot)
    return seamret_erratum(
        basic, None if info is None else info["flags"], None if info is None else info["bugs"]
    )


def analyse(
    scan: HostReadings,
    boot: int | None,
    setups: dict[int, vmcs_config.Setup | None] | None = None,
    basic_decoded: VmxBasic | None = None,
) -> CapabilityAnalysis:
    """The capability analysis of a scan, judged from the boot CPU; `setups` are each
    CPU's setup_vmcs_config() (kernel.kvm_intel.vmcs_configs()), which decide which
    differing bits reach KVM; `basic_decoded` is the boot CPU's IA32_VMX_BASIC as the
    verdict decoded it (decoded here when not given)."""
    setups = setups or {}
    if boot is None or boot not in scan.cpus:
        return CapabilityAnalysis(boot_cpu=boot)
    nested = vmcs_config.nested_enabled(scan.kvm_params)
    bp = scan.cpus[boot]
    state = cpu_state(bp)
    states = {cpu: cpu_state(p) for cpu, p in scan.cpus.items()}
    cpus_read = tuple(c for c, s in sorted(states.items()) if s == STATE_READ)
    cpus_not_read = tuple(c for c, s in sorted(states.items()) if s == STATE_NOT_READ)
    basic_r = bp.msr.get(MSR_IA32_VMX_BASIC)
    basic = basic_r.value if basic_r is not None else None
    syn = synthetic_vmx(basic if basic else None, hypervisor_of(bp), _hv_leaves(bp))
    if state in (STATE_UNKNOWN, STATE_NO_VMX) or basic is None:
        return CapabilityAnalysis(boot, state, cpus_read, cpus_not_read, nested, synthetic=syn)
    values = cpu_values(bp)
    rows = []
    for index in (MSR_IA32_VMX_BASIC,) + CAP_INDEXES:
        rows.append(
            MsrRow(
                index,
                _read_state(bp, index),
                vmcs_config.kvm_role(index, nested)
                if index in caps.MSRS
                else vmcs_config.KvmRole(True, "setup_vmcs_config(): vmcs_conf->basic"),
                (
                    None
                    if index not in values
                    else decode_basic(basic_decoded)
                    if index == MSR_IA32_VMX_BASIC and basic_decoded is not None
                    else decode_any(index, values[index])
                ),
            )
        )
    effective: dict[str, ControlGroup] = {}
    cr_fixed: dict[str, dict[str, Any]] = {}
    kvm_setup: tuple[str, ...] = ()
    if state == STATE_READ:
        true_ctls = bool(basic & caps.VMX_BASIC_TRUE_CTLS)
        for group, d in caps.effective_controls(values, true_ctls).items():
            index = int(d["index"], 16)
            m = caps.MSRS[index]
            default1: tuple[str, ...] = ()
            if m.true_of is not None and m.true_of in values and m.table is not None:
                names = {c.bit: c.name for c in m.table.controls}
                default1 = tuple(
                    names.get(b, f"bit{b}")
                    for b in caps.default1_controls(values[m.true_of], values[m.index])
                )
            effective[group] = ControlGroup(index, d["controls"], d.get("reserved_controls", {}), default1)
        for reg, f0, f1 in (("CR0", 0x486, 0x487), ("CR4", 0x488, 0x489)):
            if f0 in values and f1 in values:
                cr_fixed[reg] = caps.cr_fixed_summary(reg, values[f0], values[f1])
        boot_setup = setups.get(boot)
        if boot_setup is not None:
            kvm_setup = boot_setup.refusals
    differences, not_compared = _differences(scan, boot, nested, states, setups)
    return CapabilityAnalysis(
        boot_cpu=boot,
        state=state,
        cpus_read=cpus_read,
        cpus_not_read=cpus_not_read,
        kvm_nested=nested,
        msrs=tuple(rows),
        effective_controls=effective,
        cr_fixed=cr_fixed,
        faults=tuple(_faults(scan)),
        differences=tuple(differences),
        not_compared=tuple(not_compared),
        kernel_view=tuple(_kernel_view(scan, states)),
        seamret=_seamret(scan, boot, basic),
        synthetic=syn,
        kvm_setup=kvm_setup,
    )


# ---------------------------------------------------------------------------------------
# Any MSR `vmxprobe decode` accepts: the SDM's decode, with what the kernel makes of it.


def seamret_fields(s: Seamret) -> dict[str, Any]:
    """The erratum as `vmxprobe decode` and the report show it."""
    return {
        "bit60": s.keeps_current_vmcs,
        "seamret_keeps_current_vmcs": s.keeps_current_vmcs,
        "kernel_bug": s.kernel_bug,
        "meaning": s.meaning,
    }


def decode_any(index: int, value: int) -> dict[str, Any]:
    """Decode IA32_FEATURE_CONTROL, IA32_VMX_BASIC or a capability MSR value; the result
    always carries msr, index, kind and raw."""
    value &= M64
    out: dict[str, Any]
    if index == MSR_IA32_FEAT_CTL:
        out = {"msr": "IA32_FEATURE_CONTROL", "index": "0x3a", "kind": "feature_control"}
        out.update(decode_feature_control(value).fields())
        known = 0
        for f in FEATURE_CONTROL_FIELDS:
            known |= ((1 << (f.hi - f.lo + 1)) - 1) << f.lo
        out["reserved"] = caps.set_bits(value & ~known & M64)
        out["errors"] = []
        return out
    if index == MSR_IA32_VMX_BASIC:
        return decode_basic(decode_vmx_basic(value))
    return caps.decode(index, value)


def decode_basic(basic: VmxBasic) -> dict[str, Any]:
    """IA32_VMX_BASIC, already decoded, with what the SDM bounds and the kernel makes of it."""
    value = basic.value
    out: dict[str, Any] = {"msr": "IA32_VMX_BASIC", "index": "0x480", "kind": "basic"}
    out.update(basic.fields())
    out["errors"] = []
    if value and not basic.vmcs_size:
        out["errors"].append("VMCS size (bits 44:32) is 0: no real CPU reports that")
    if basic.vmcs_size > PAGE_SIZE:
        out["errors"].append(f"VMCS size {basic.vmcs_size} is above 4096: the SDM bounds it by 4 KiB")
    out["seamret"] = seamret_fields(seamret_erratum(value))
    syn = synthetic_vmx(value, None)
    out["synthetic"] = syn.how if syn else None
    return out
