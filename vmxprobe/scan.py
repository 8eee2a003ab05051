"""Read everything a verdict needs from one source: topology, then each online CPU's
CPUID leaves and MSRs, then the kernel's own view in /proc/cpuinfo."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from vmxprobe import vmx
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


ECX = 2


def probe_cpu(source, cpu: int) -> CpuProbe:
    p = CpuProbe(cpu)
    p.cpuid[0] = source.read_cpuid(cpu, 0)
    p.cpuid[1] = source.read_cpuid(cpu, 1)
    if p.cpuid_bit(1, ECX, vmx.CPUID_HYPERVISOR_BIT):
        p.cpuid[vmx.CPUID_HV_LEAF] = source.read_cpuid(cpu, vmx.CPUID_HV_LEAF)
    # Both MSRs are read on every CPU, whatever CPUID says: the msr driver reads with
    # rdmsr_safe_on_cpu(), so a register the CPU lacks costs an EIO, not a crash, and
    # the EIO is itself evidence (a hypervisor hiding VMX, an AMD CPU).
    p.msr[vmx.MSR_IA32_FEAT_CTL] = source.read_msr(cpu, vmx.MSR_IA32_FEAT_CTL)
    p.msr[vmx.MSR_IA32_VMX_BASIC] = source.read_msr(cpu, vmx.MSR_IA32_VMX_BASIC)
    return p


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
        entry["vmx flags"] = set(entry.get("vmx flags", "").split())
        cpus[int(proc)] = entry
    return cpus


def collect(source) -> HostScan:
    topo = read_topology(source)
    probes = {}
    try:
        for cpu in topo.online:
            probes[cpu] = probe_cpu(source, cpu)
    finally:
        source.close()
    release = source.read_text(OSRELEASE)
    return HostScan(source_kind=source.kind, source_name=source.name, topology=topo,
                    probes=probes, cpuinfo=parse_cpuinfo(source.read_text(CPUINFO)),
                    kernel=release.strip() if release else None,
                    file_errors=dict(source.file_errors))
