"""Loading kvm_intel, in the kernel's order, by kernel release:

1. the support check on the CPU that runs the module's init. 6.1: kvm_x86_vendor_init()
   (arch/x86/kvm/x86.c) asks the loading CPU's CPUID for VMX (cpu_has_kvm_support()),
   then boot_cpu_data for X86_FEATURE_MSR_IA32_FEAT_CTL and X86_FEATURE_VMX
   (vmx_disabled_by_bios()): boot_cpu_data is the AND of every CPU, so one CPU without
   VMX refuses (-EOPNOTSUPP). 6.3 on: kvm_is_vmx_supported() (arch/x86/kvm/vmx/vmx.c)
   asks the loading CPU alone (this_cpu_has()). 7.1 on: a failed x86_vmx_init() at boot
   has cleared X86_FEATURE_VMX on every CPU (arch/x86/virt/hw.c), so this check refuses.
2. hardware_setup(): setup_vmcs_config() on the loading CPU (-EIO, silent); up to 7.0
   also alloc_kvm_area(), the root VMCS pages (-ENOMEM).
3. the per-CPU compatibility check on every online CPU, ascending, the first failure
   winning (kvm_init()'s loop in 6.1, kvm_x86_vendor_init()'s from 6.3): the CR4
   reserved bits against boot_cpu_data (kernel.cr4_reserved_bits), VMX on that CPU,
   setup_vmcs_config() on that CPU, and memcmp() of its vmcs_config against the loading
   CPU's (vmx_check_processor_compat()).

The loading CPU is whichever CPU the scheduler runs modprobe on; the verdict takes the
boot CPU and says where the outcome would differ on another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from vmxprobe.arch.capabilities import msr_label
from vmxprobe.arch.cpuid import CPUID_VMX_BIT, ECX
from vmxprobe.arch.vmx import MSR_IA32_FEAT_CTL, MSR_IA32_VMX_BASIC, VmxBasic
from vmxprobe.host.cpulist import every_online, format_cpulist
from vmxprobe.host.readings import CpuReadings, HostReadings
from vmxprobe.host.sources import MEANING
from vmxprobe.kernel import access, cr4_reserved_bits, feat_ctl, vmcs_config
from vmxprobe.kernel.capabilities import STATE_NOT_READ, CapabilityAnalysis, msr_key
from vmxprobe.kernel.cr4_reserved_bits import Cr4Check
from vmxprobe.kernel.release import HW_C, KVM_PER_CPU_SUPPORT, KernelModel
from vmxprobe.kernel.vmcs_config import CpuidInputs, Setup

OK = "ok"
EOPNOTSUPP = "EOPNOTSUPP"
EIO = "EIO"
ENOMEM = "ENOMEM"

# The MSRs setup_vmcs_config() and the nested set-up read; a CPU on which one of them
# could not be read (not a fault: a fault reads 0) has no vmcs_config we can rebuild.
CONFIG_MSRS = (0x480, 0x481, 0x482, 0x483, 0x484, 0x485, 0x487, 0x489, 0x48B, 0x48C, 0x492)


@dataclass(frozen=True)
class KvmIntel:
    """What loading kvm_intel returns: "ok", an errno name, or None (not determined)."""

    errno: str | None
    reasons: tuple[str, ...] = ()
    undetermined: tuple[str, ...] = ()
    stage: str | None = None  # where it stops: "init", "setup", "compat"; "ok"; None


def cpuid_inputs(p: CpuReadings) -> CpuidInputs:
    """The raw CPUID values setup_vmcs_config() reads on the CPU it runs on."""
    leaf0, leaf1, sgx = p.cpuid.get(0), p.cpuid.get(1), p.cpuid.get(0x12)
    return CpuidInputs(
        max_leaf=leaf0.value[0] if leaf0 is not None and leaf0.value is not None else None,
        sgx1=bool(sgx.value[0] & 1) if sgx is not None and sgx.value is not None else None,
        signature=leaf1.value[0] if leaf1 is not None and leaf1.value is not None else None,
    )


def kernel_msrs(p: CpuReadings) -> dict[int, int] | None:
    """The values setup_vmcs_config() reads on this CPU: a faulting MSR reads 0, one the
    CPU does not have (never read: the SDM says it is not there) reads 0. None when one
    of them could not be read at all (no driver, not recorded, ...)."""
    out: dict[int, int] = {}
    for index in CONFIG_MSRS:
        r = p.msr.get(index)
        if r is None or r.errno == "EIO":
            out[index] = 0
        elif r.value is not None:
            out[index] = r.value
        else:
            return None
    return out


def vmcs_configs(
    scan: HostReadings, model: KernelModel, reference: int, evmcs: bool = False
) -> dict[int, Setup | None]:
    """setup_vmcs_config() on every online CPU (None where its registers were not all
    read), each with the nested part vmx_check_processor_compat() adds when
    kvm_intel.nested=1, computed once per distinct set of readings."""
    params = scan.kvm_params
    strict, nested = vmcs_config.strict_config(params), vmcs_config.nested_enabled(params)
    memo: dict[tuple[int, CpuidInputs], tuple[Setup | None, dict[int, int] | None]] = {}

    def base(p: CpuReadings) -> tuple[Setup | None, dict[int, int] | None]:
        inputs = cpuid_inputs(p)
        key = (msr_key(p), inputs)
        got = memo.get(key)
        if got is None:
            msrs = kernel_msrs(p)
            setup = (
                None if msrs is None else vmcs_config.setup_vmcs_config(msrs, inputs, model, strict, evmcs)
            )
            got = memo[key] = (setup, msrs)
        return got

    out: dict[int, Setup | None] = {}
    ref_setup = base(scan.cpus[reference])[0] if reference in scan.cpus else None
    # hardware_setup(): enable_ept from the loading CPU's capabilities, for every CPU.
    ept = ref_setup is not None and vmcs_config.ept_enabled(ref_setup, vmcs_config.ept_param(params))
    nested_memo: dict[int, Setup | None] = {}
    for cpu, p in scan.cpus.items():
        setup, msrs = base(p)
        if nested and setup is not None and msrs is not None:
            done = nested_memo.get(id(setup))
            if done is None:
                done = nested_memo[id(setup)] = vmcs_config.with_nested(setup, msrs, ept)
            setup = done
        out[cpu] = setup
    return out


def load_kvm_intel(
    scan: HostReadings,
    boot: int,
    basic: VmxBasic,
    capsec: CapabilityAnalysis,
    model: KernelModel,
    setups: dict[int, Setup | None],
    cr4: Cr4Check,
    tboot: bool = False,
) -> KvmIntel:
    """Steps 1-3 of the module docstring, with the boot CPU loading the module."""
    p = model.kvm_prefix
    first: str | None = None
    reasons: list[str] = []
    undetermined: list[str] = []

    def refuse(code: str, reason: str) -> None:
        nonlocal first
        first = first or code
        reasons.append(reason)

    vmx: dict[int, tuple[bool | None, str | None]] = {
        cpu: feat_ctl.vmx_feature(scan, cpu, tboot) for cpu in sorted(scan.cpus)
    }
    without = [cpu for cpu, (has, _) in vmx.items() if has is False]
    unknown = [cpu for cpu, (has, _) in vmx.items() if has is None]
    # Which drivers have a device on some CPU: ENOENT on one CPU is a missing driver
    # only when no CPU has its device.
    loaded = access.drivers_loaded(scan)
    for cpu in unknown:
        q = scan.cpus[cpu]
        undetermined += access.unreadable_cpu(q, "flags" in scan.cpuinfo.get(cpu, {}), loaded)

    # 1. The support check on the loading CPU.
    bsp = scan.cpus[boot]
    if not model.has(KVM_PER_CPU_SUPPORT):
        if bsp.cpuid_bit(1, ECX, CPUID_VMX_BIT) is False:
            refuse(
                EOPNOTSUPP,
                f"CPU {boot}: no CPUID VMX; kvm_intel logs \"{p}no hardware support for 'kvm_intel'\"",
            )
            return KvmIntel(first, tuple(reasons), tuple(undetermined), "init")
        if without:
            whys = "; ".join(vmx[c][1] or "" for c in without[:3])
            refuse(
                EOPNOTSUPP,
                f"CPU(s) {format_cpulist(without)} lack X86_FEATURE_VMX, so boot_cpu_data (every CPU's "
                f"features ANDed by identify_cpu()) lacks it: {whys}; vmx_disabled_by_bios() "
                f"refuses, \"{p}support for 'kvm_intel' disabled by bios\" (-EOPNOTSUPP)",
            )
            return KvmIntel(first, tuple(reasons), tuple(undetermined), "init")
    elif model.has(HW_C) and without and boot in without:
        # x86_vmx_init() failed on the boot CPU: judged by the caller, which never gets
        # here; kept for a caller that asks anyway.
        refuse(
            EOPNOTSUPP,
            f"CPU {boot}: kvm_intel logs "
            + _logged(model, f"VMX not fully enabled on CPU {boot}.  Check kernel logs and/or BIOS"),
        )
        return KvmIntel(first, tuple(reasons), tuple(undetermined), "init")
    elif boot in without:
        refuse(EOPNOTSUPP, f"{vmx[boot][1]}; kvm_intel logs {_not_supported(bsp, boot, model)} (-EOPNOTSUPP)")
        return KvmIntel(first, tuple(reasons), tuple(undetermined), "init")
    if unknown and boot in unknown:
        return KvmIntel(None, tuple(reasons), tuple(undetermined))

    # 2. hardware_setup(): setup_vmcs_config() on the loading CPU. Where its control MSRs
    # were not read, its checks of IA32_VMX_BASIC still decide.
    ref = setups.get(boot)
    if ref is None and basic.value:
        refused = vmcs_config.basic_refusals(basic.value)
        ref = Setup(None, tuple(refused[:1])) if refused else None
    if ref is not None and ref.config is None:
        for why in ref.refusals:
            refuse(EIO, f"CPU {boot}: setup_vmcs_config() fails: {why}; kvm_intel refuses to load (-EIO)")
        reasons.append(
            "kvm_intel stops at the loading CPU, in hardware_setup(): the per-CPU "
            "compatibility checks never run"
        )
        return KvmIntel(first, tuple(reasons), tuple(undetermined), "setup")
    if ref is not None:
        reasons += [f'CPU {boot}: setup_vmcs_config() warns "{w}"' for w in ref.warnings]

    # 3. The per-CPU compatibility check, ascending.
    refused_cr4 = set(cr4.refused)
    stopped_at: int | None = None
    for cpu in sorted(scan.cpus):
        before = first
        q = scan.cpus[cpu]
        if cpu in refused_cr4:
            refuse(EIO, cr4_reserved_bits.refusal(cpu, cr4))
        elif vmx[cpu][0] is False:
            refuse(EIO, f"{vmx[cpu][1]}; kvm_intel logs {_not_enabled(q, cpu, model)} (-EIO)")
        elif vmx[cpu][0] is not None:
            _compare(scan, cpu, boot, basic, setups, model, refuse, undetermined, capsec, loaded)
        if before is None and first is not None:
            stopped_at = cpu
    if stopped_at is not None and len(reasons) > 1:
        reasons.append(f"loading kvm_intel stops at the first of these, CPU {stopped_at}")
    if model.has(KVM_PER_CPU_SUPPORT) and without and boot not in without:
        k = without[0]
        reasons.append(
            f"if modprobe runs on CPU {k} instead, kvm_is_vmx_supported() refuses there first: "
            f"{_not_supported(scan.cpus[k], k, model)} (-EOPNOTSUPP)"
        )
    reasons += _feature_control_notes(scan, boot, without)
    reasons += capability_notes(capsec, boot)
    reasons += cr4_reserved_bits.notes(cr4)
    offline = sorted(set(scan.topology.possible) - set(scan.cpus))
    if offline:
        later = (
            "meets KVM's compatibility check when it comes online"
            if model.has(KVM_PER_CPU_SUPPORT)
            else "is not checked by this kernel when it comes online"
        )
        reasons.append(
            f"CPU(s) {format_cpulist(offline)} are not online, so not read: each gets its "
            f"root VMCS page and {later}"
        )
    if first:
        return KvmIntel(first, tuple(reasons), tuple(undetermined), "compat")
    if undetermined:
        return KvmIntel(None, tuple(reasons), tuple(undetermined))
    reasons.append(_all_agree(scan, capsec, setups))
    return KvmIntel(OK, tuple(reasons), tuple(undetermined), "ok")


def _logged(model: KernelModel, message: str) -> str:
    """A kvm_intel message, quoted as the kernel log shows it. 6.3 gave KVM's modules
    pr_fmt(fmt) KBUILD_MODNAME ": " fmt ("KVM: x86: Unify pr_fmt to use module name for all
    KVM modules"): "kvm_intel: " leads every line. 6.1's vmx.c and x86.c have no pr_fmt;
    their strings carry "kvm: " themselves, and `message` brings it."""
    prefix = "kvm_intel: " if model.has(KVM_PER_CPU_SUPPORT) else ""
    return f'"{prefix}{message}"'


def _not_supported(q: CpuReadings, cpu: int, model: KernelModel) -> str:
    """What kvm_is_vmx_supported() prints for a CPU without VMX (6.3+)."""
    if q.cpuid_bit(1, ECX, CPUID_VMX_BIT) is False:
        return _logged(model, f"VMX not supported by CPU {cpu}")
    return _not_enabled(q, cpu, model)


def _not_enabled(q: CpuReadings, cpu: int, model: KernelModel) -> str:
    """The message for a CPU whose VMX flag did not survive feat_ctl."""
    if not model.has(KVM_PER_CPU_SUPPORT):
        return _logged(model, f"kvm: VMX is disabled on CPU {cpu}")
    if q.cpuid_bit(1, ECX, CPUID_VMX_BIT) is False:
        return _logged(model, f"VMX not supported by CPU {cpu}")
    fc = q.msr.get(MSR_IA32_FEAT_CTL)
    # 7.1 splits the test: X86_FEATURE_MSR_IA32_FEAT_CTL missing (the read faulted) keeps
    # the old message, X86_FEATURE_VMX missing gets "not fully enabled".
    if model.has(HW_C) and fc is not None and fc.ok:
        return _logged(model, f"VMX not fully enabled on CPU {cpu}.  Check kernel logs and/or BIOS")
    return _logged(model, f"VMX not enabled (by BIOS) in MSR_IA32_FEAT_CTL on CPU {cpu}")


def _compare(
    scan: HostReadings,
    cpu: int,
    boot: int,
    basic: VmxBasic,
    setups: dict[int, Setup | None],
    model: KernelModel,
    refuse: Callable[[str, str], None],
    undetermined: list[str],
    capsec: CapabilityAnalysis,
    loaded: frozenset[str] = frozenset(),
) -> None:
    """setup_vmcs_config() on this CPU, then memcmp() against the loading CPU's.
    `loaded`: access.drivers_loaded()."""
    q = scan.cpus[cpu]
    r = q.msr[MSR_IA32_VMX_BASIC]
    if r.value is None and r.errno != "EIO":
        undetermined.append(access.unreadable(cpu, "IA32_VMX_BASIC (0x480)", r, loaded=loaded))
        return
    mine, ref = setups.get(cpu), setups.get(boot)
    setup_failed = (
        "logs " + _logged(model, f"Failed to setup VMCS config on CPU {cpu}")
        if model.has(KVM_PER_CPU_SUPPORT)
        else "logs no message of its own"
    )
    if mine is None and r.value:
        refused = vmcs_config.basic_refusals(r.value)
        mine = Setup(None, tuple(refused[:1])) if refused else None
    if mine is not None and mine.config is None:
        differs = _raw_differences(capsec, cpu)
        refuse(
            EIO,
            f"CPU {cpu}: setup_vmcs_config() fails: {'; '.join(mine.refusals)}; "
            f"kvm_intel {setup_failed} (-EIO)"
            + (f"; its registers differ from CPU {boot}'s in {differs}" if differs else ""),
        )
        return
    inconsistent = (
        _logged(model, f"Inconsistent VMCS config on CPU {cpu}")
        if model.has(KVM_PER_CPU_SUPPORT)
        else _logged(model, f"kvm: CPU {cpu} feature inconsistency!")
    )
    if cpu == boot:
        return
    if mine is not None and ref is not None and mine.config is not None and ref.config is not None:
        diffs = vmcs_config.differences(ref.config, mine.config)
        if diffs:
            named = "; ".join(
                f"{d.describe(boot, cpu)} ({msr_label(d.index)} = {_raw(q, d.index)} on CPU {cpu}, "
                f"{_raw(scan.cpus[boot], d.index)} on CPU {boot})"
                for d in diffs
            )
            refuse(
                EIO,
                f"CPU {cpu}: vmcs_config differs from CPU {boot}'s: {named}; "
                f"kvm_intel logs {inconsistent} (-EIO)",
            )
        return
    # The capability MSRs were not all read here or on the loading CPU: IA32_VMX_BASIC,
    # which vmcs_config holds whole, is what can still be compared.
    value = r.value or 0
    if value != basic.value:
        differ = [b for b in range(64) if (value ^ basic.value) >> b & 1]
        refuse(
            EIO,
            f"CPU {cpu}: IA32_VMX_BASIC (0x480) = 0x{value:016x} differs from CPU {boot}'s "
            f"{basic.raw} in bit(s) {', '.join(map(str, differ))}; kvm_intel logs {inconsistent} (-EIO)",
        )


def _raw(q: CpuReadings, index: int) -> str:
    r = q.msr.get(index)
    if r is None:
        return "not present (read as 0)"
    return f"0x{r.value:016x}" if r.value is not None else f"{r.errno} (read as 0)"


def _raw_differences(capsec: CapabilityAnalysis, cpu: int) -> str:
    """This CPU's capability-MSR bits that differ from the boot CPU's, named."""
    out = []
    for d in capsec.differences:
        for c in d.cpus:
            if c.cpu == cpu:
                bits = ", ".join(f"bit {b.bit} ({b.what})" for b in c.bits)
                out.append(f"{msr_label(d.index)} {bits}")
    return "; ".join(out)


def _feature_control_notes(scan: HostReadings, boot: int, without: list[int]) -> list[str]:
    """IA32_FEATURE_CONTROL differing in bits that do not turn VMX off: reported only."""
    boot_fc = scan.cpus[boot].msr[MSR_IA32_FEAT_CTL]
    differ = [
        cpu
        for cpu, q in sorted(scan.cpus.items())
        if cpu != boot
        and cpu not in without
        and q.msr[MSR_IA32_FEAT_CTL].ok
        and boot_fc.ok
        and q.msr[MSR_IA32_FEAT_CTL].value != boot_fc.value
    ]
    if not differ:
        return []
    return [
        f"CPU(s) {format_cpulist(differ)}: IA32_FEATURE_CONTROL differs from CPU {boot}'s in bits "
        "that do not disable VMX; firmware set the CPUs up unevenly"
    ]


def _all_agree(scan: HostReadings, capsec: CapabilityAnalysis, setups: dict[int, Setup | None]) -> str:
    if setups and all(s is not None for s in setups.values()):
        compared = "vmcs_config (as setup_vmcs_config() builds it from each CPU's registers)"
    elif capsec.state == STATE_NOT_READ or capsec.cpus_not_read:
        compared = "IA32_VMX_BASIC"
    else:
        compared = "IA32_VMX_BASIC and the capability MSRs that were read"
    return (
        f"{every_online(scan.cpus)} VMX enabled, "
        f"the same CR4 features and the same {compared} as the boot CPU"
    )


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
            else "the differing bits do not reach kvm_intel's vmcs_config (controls KVM does not request)"
        )
        out.append(
            f"CPU(s) {format_cpulist(c.cpu for c in quiet)}: {msr_label(d.index)} differs "
            f"from CPU {boot}'s in bit(s) {', '.join(map(str, bits))}: {why}; reported, not refused"
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
