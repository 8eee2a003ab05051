"""KVM's per-CPU CR4 check: kvm_x86_check_processor_compatibility() (arch/x86/kvm/x86.c;
kvm_arch_check_processor_compat() in 6.1) refuses a CPU with -EIO, and no message, when
__cr4_reserved_bits(cpu_has, c) differs from __cr4_reserved_bits(cpu_has, &boot_cpu_data)
(arch/x86/kvm/x86.h).

A CR4 bit is reserved when the CPU lacks its feature. boot_cpu_data holds the features
common to every CPU identified since boot: identify_cpu() (arch/x86/kernel/cpu/common.c)
ANDs each CPU's capability words into it. So when CPUs differ in one of these features,
every CPU that has it differs from boot_cpu_data, and the check refuses the lowest online
one of them. The VMX feature here is the kernel's flag after init_ia32_feat_ctl(): a CPU
whose firmware locked VMX off lacks it.

Each CPU's features come from its cpuid device (raw CPUID), or, where that was not read,
from its /proc/cpuinfo flags (the kernel's own per-CPU flags), and the result says which.
A feature that raw CPUID shows on some CPUs but /proc/cpuinfo shows on none was cleared
by the kernel for every CPU (clearcpuid=, nopku, ...): it cannot differ, so it does not
refuse.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmxprobe.arch import cpuid
from vmxprobe.arch.cpuid import CpuFeature
from vmxprobe.host.readings import HostReadings
from vmxprobe.kernel import feat_ctl
from vmxprobe.kernel.release import CR4_LAM, KVM_CET, KernelModel

# (feature(s), CR4 bit it reserves when absent, first release that checks it). CET is
# reserved only when the CPU has neither shadow stacks nor IBT.
CR4_FEATURES: tuple[tuple[tuple[CpuFeature, ...], str, tuple[int, int]], ...] = (
    ((cpuid.XSAVE,), "OSXSAVE", (6, 1)),
    ((cpuid.SMEP,), "SMEP", (6, 1)),
    ((cpuid.SMAP,), "SMAP", (6, 1)),
    ((cpuid.FSGSBASE,), "FSGSBASE", (6, 1)),
    ((cpuid.PKU,), "PKE", (6, 1)),
    ((cpuid.LA57,), "LA57", (6, 1)),
    ((cpuid.UMIP,), "UMIP", (6, 1)),
    ((cpuid.VMX,), "VMXE", (6, 1)),
    ((cpuid.PCID,), "PCIDE", (6, 1)),
    ((cpuid.LAM,), "LAM_SUP", CR4_LAM),
    ((cpuid.SHSTK, cpuid.IBT), "CET", KVM_CET),
)

FROM_CPUID = "cpuid"
FROM_CPUINFO = "cpuinfo"


@dataclass(frozen=True)
class FeatureSplit:
    """One feature the CPUs do not agree on."""

    cr4_bit: str  # the CR4 bit it reserves
    features: str  # "SMAP", "SHSTK/IBT"
    with_it: tuple[int, ...]  # CPUs that have it (each differs from boot_cpu_data)
    without: tuple[int, ...]


@dataclass(frozen=True)
class Cr4Check:
    """The CR4 check over the online CPUs."""

    splits: tuple[FeatureSplit, ...] = ()
    sources: tuple[tuple[int, str], ...] = ()  # (cpu, FROM_CPUID | FROM_CPUINFO)
    not_read: tuple[int, ...] = ()  # CPUs whose features could not be told
    masked: tuple[str, ...] = ()  # features raw CPUID splits but the kernel cleared everywhere
    checked: tuple[str, ...] = ()  # the CR4 bits this kernel checks

    @property
    def refused(self) -> tuple[int, ...]:
        """Every CPU the check refuses, ascending: the lowest online one is what loading
        kvm_intel (or kvm_amd) stops at."""
        return tuple(sorted({c for s in self.splits for c in s.with_it}))

    @property
    def cpuinfo_cpus(self) -> tuple[int, ...]:
        return tuple(c for c, how in self.sources if how == FROM_CPUINFO)


def _has(scan: HostReadings, cpu: int, f: CpuFeature, from_cpuinfo: bool) -> bool | None:
    if f is cpuid.VMX:
        # X86_FEATURE_VMX after init_ia32_feat_ctl(), from the registers.
        return feat_ctl.vmx_feature(scan, cpu)[0]
    if from_cpuinfo:
        info = scan.cpuinfo.get(cpu)
        if info is None or f.cpuinfo is None:
            return None
        return f.cpuinfo in info["flags"]
    p = scan.cpus[cpu]
    leaf0 = p.cpuid.get(0)
    if leaf0 is not None and leaf0.value is not None and leaf0.value[0] < f.leaf < 0x80000000:
        return False  # beyond the CPU's highest leaf: get_cpu_cap() leaves the word 0
    if f.subleaf:
        leaf7 = p.cpuid.get(f.leaf)
        if leaf7 is not None and leaf7.value is not None and leaf7.value[0] < f.subleaf:
            return False
    return p.has(f)


def _cpuid_read(scan: HostReadings, cpu: int) -> bool:
    """Did this CPU's cpuid device answer the structured-features leaf (or show that the
    CPU has none)?"""
    p = scan.cpus[cpu]
    leaf0 = p.cpuid.get(0)
    if leaf0 is None or leaf0.value is None:
        return False
    if leaf0.value[0] < cpuid.LEAF_STRUCTURED:
        return True
    r = p.cpuid.get(cpuid.LEAF_STRUCTURED)
    return r is not None and r.value is not None


def check(scan: HostReadings, model: KernelModel) -> Cr4Check:
    """The CR4 check for every online CPU, with where each CPU's features came from."""
    rows = [(bits, fs) for fs, bits, since in CR4_FEATURES if model.has(since)]
    sources: list[tuple[int, str]] = []
    not_read: list[int] = []
    have: dict[int, dict[str, bool | None]] = {}
    # CPUs with the same readings have the same features: computed once per kind (the
    # readings of alike CPUs are shared objects, see host.readings.read_host()).
    memo: dict[tuple[object, ...], dict[str, bool | None]] = {}
    for cpu in sorted(scan.cpus):
        p = scan.cpus[cpu]
        flags = scan.cpuinfo.get(cpu, {}).get("flags")
        from_cpuinfo = not _cpuid_read(scan, cpu)
        if from_cpuinfo and flags is None:
            not_read.append(cpu)
            continue
        sources.append((cpu, FROM_CPUINFO if from_cpuinfo else FROM_CPUID))
        key = (
            from_cpuinfo,
            id(flags),
            id(p.msr),
            *map(id, p.cpuid.values()),
            *map(id, p.subleaves.values()),
        )
        got = memo.get(key)
        if got is None:
            got = memo[key] = {}
            for bits, fs in rows:
                answers = [_has(scan, cpu, f, from_cpuinfo) for f in fs]
                got[bits] = True if any(answers) else (None if None in answers else False)
        have[cpu] = got
    splits: list[FeatureSplit] = []
    masked: list[str] = []
    for bits, fs in rows:
        with_it = tuple(c for c in have if have[c][bits] is True)
        without = tuple(c for c in have if have[c][bits] is False)
        if not with_it or not without:
            continue
        names = "/".join(f.feature for f in fs)
        if _cleared_everywhere(scan, fs, with_it):
            masked.append(names)
            continue
        splits.append(FeatureSplit(bits, names, with_it, without))
    return Cr4Check(tuple(splits), tuple(sources), tuple(not_read), tuple(masked), tuple(b for b, _ in rows))


def _cleared_everywhere(scan: HostReadings, fs: tuple[CpuFeature, ...], cpus: tuple[int, ...]) -> bool:
    """Raw CPUID shows the feature on `cpus`, but each of their /proc/cpuinfo flag lines
    lacks it: the kernel cleared it with setup_clear_cpu_cap(), for every CPU."""
    if any(f.cpuinfo is None or f is cpuid.VMX for f in fs):
        return False
    flags = [scan.cpuinfo.get(c, {}).get("flags") for c in cpus]
    return all(fl is not None for fl in flags) and not any(f.cpuinfo in fl for fl in flags for f in fs if fl)
