"""Read everything a verdict needs from one source: topology, then each online CPU's
CPUID leaves and MSRs (IA32_FEATURE_CONTROL, IA32_VMX_BASIC and, where VMX_BASIC shows
VMX, the capability MSRs the architecture says exist), then the kernel's own view in
/proc/cpuinfo and the kvm_intel parameters that change what KVM compares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from vmxprobe import caps, vmx
from vmxprobe.sources import CPUINFO, OSRELEASE, Reading
from vmxprobe.topology import Topology, read_topology


@dataclass
class CpuProbe:
    cpu: int
    cpuid: dict[int, Reading] = field(default_factory=dict)   # leaf -> [eax, ebx, ecx, edx]
    msr: dict[int, Reading] = field(default_factory=dict)     # index -> value

    def cpuid_bit(self, leaf: int, reg: int, bit: int) -> Optional[bool]:
        r = self.cpuid.get(leaf)
        return vmx.bit(r.value[reg], bit) if r is not None and r.ok else None


@dataclass
class HostScan:
    source_kind: str
    source_name: str
    topology: Topology
    probes: dict[int, CpuProbe]
    cpuinfo: dict[int, dict]           # processor -> {"flags": set, "vmx flags": set, ...}
    kernel: Optional[str]
    file_errors: dict[str, str]
    kvm_params: dict[str, str] = field(default_factory=dict)  # kvm_intel module parameters


ECX = 2


HV_SIGNATURE_HYPERV = "Hyper-V"


def probe_cpu(source, cpu: int) -> CpuProbe:
    p = CpuProbe(cpu)
    p.cpuid[0] = source.read_cpuid(cpu, 0)
    p.cpuid[1] = source.read_cpuid(cpu, 1)
    if p.cpuid_bit(1, ECX, vmx.CPUID_HYPERVISOR_BIT):
        hv = source.read_cpuid(cpu, vmx.CPUID_HV_LEAF)
        p.cpuid[vmx.CPUID_HV_LEAF] = hv
        # Hyper-V's enlightenment hints and nested features (TLFS; asm/hyperv-tlfs.h):
        # whether kvm_intel in this guest would use the enlightened VMCS.  Read only when
        # the hypervisor is Hyper-V and its maximum leaf (EAX of 0x40000000) covers them.
        if hv.ok and vmx.hypervisor_name(hv.value) == HV_SIGNATURE_HYPERV:
            for leaf in (caps.HV_CPUID_ENLIGHTMENT_INFO, caps.HV_CPUID_NESTED_FEATURES):
                if hv.value[0] >= leaf:
                    p.cpuid[leaf] = source.read_cpuid(cpu, leaf)
    # Both MSRs are read on every CPU, whatever CPUID says: the msr driver reads with
    # rdmsr_safe_on_cpu(), so a register the CPU lacks costs an EIO, not a crash, and
    # the EIO is itself evidence (a hypervisor hiding VMX, an AMD CPU).
    p.msr[vmx.MSR_IA32_FEAT_CTL] = source.read_msr(cpu, vmx.MSR_IA32_FEAT_CTL)
    p.msr[vmx.MSR_IA32_VMX_BASIC] = source.read_msr(cpu, vmx.MSR_IA32_VMX_BASIC)
    read_capabilities(source, p)
    return p


def read_capabilities(source, p: CpuProbe) -> None:
    """Read the VMX capability MSRs (0x481-0x493) that exist on this CPU, in rounds.

    Only after IA32_VMX_BASIC reads non-zero (a CPU with VMX always reports a VMCS size):
    SDM Vol. 3D Appendix A makes some MSRs conditional on others (0x48B on the primary
    controls' bit 63, 0x48C and 0x491 on secondary controls, 0x492 on bit 49, 0x493 on
    the exit controls' bit 63, 0x48D-0x490 on VMX_BASIC bit 55), so each round reads what
    caps.readable_msrs() says exists given the values read so far, until nothing new
    appears.  An MSR that is not architecturally there is never read; one that is there
    and still faults is kept as EIO, for the verdict to report.
    """
    basic = p.msr.get(vmx.MSR_IA32_VMX_BASIC)
    if basic is None or not basic.ok or not basic.value:
        return
    values: dict[int, int] = {}
    while True:
        todo = [i for i in caps.readable_msrs(values, basic.value) if i not in p.msr]
        if not todo:
            return
        for index in todo:
            r = source.read_msr(p.cpu, index)
            p.msr[index] = r
            if r.ok:
                values[index] = r.value


def parse_cpuinfo(text: Optional[str]) -> dict[int, dict]:
    cpus: dict[int, dict] = {}
    if not text:
        return cpus
    for block in text.split("\n\n"):
        entry: dict = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                entry[key.strip()] = value.strip()
        proc = entry.get("processor", "")
        if not proc.isdigit():
            continue
        entry["flags"] = set(entry.get("flags", "").split())
        # show_cpuinfo() prints "vmx flags" only when VMX capability word 0 is non-zero
        # (and only kernels >= 5.6 built with CONFIG_X86_VMX_FEATURE_NAMES): keep whether
        # the line was there at all, apart from what it held.
        entry["vmx flags line"] = "vmx flags" in entry
        entry["vmx flags"] = set(entry.get("vmx flags", "").split())
        entry["bugs"] = set(entry.get("bugs", "").split())
        cpus[int(proc)] = entry
    return cpus


KVM_INTEL_PARAMS = "sys/module/kvm_intel/parameters"


def read_kvm_params(source) -> dict[str, str]:
    """kvm_intel parameters that change which MSRs its per-CPU check compares; absent
    when the module is not loaded (then the defaults apply)."""
    out = {}
    for name in ("nested", "error_on_inconsistent_vmcs_config"):
        text = source.read_text(f"{KVM_INTEL_PARAMS}/{name}")
        if text is not None and text.strip():
            out[name] = text.strip()
    return out


def collect(source) -> HostScan:
    topo = read_topology(source)
    probes = {}
    try:
        for cpu in topo.online:
            probes[cpu] = probe_cpu(source, cpu)
    finally:
        source.close()
    release = source.read_text(OSRELEASE)
    params = read_kvm_params(source)
    return HostScan(source_kind=source.kind, source_name=source.name, topology=topo,
                    probes=probes, cpuinfo=parse_cpuinfo(source.read_text(CPUINFO)),
                    kernel=release.strip() if release else None,
                    file_errors=dict(source.file_errors), kvm_params=params)
