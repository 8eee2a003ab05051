"""Read everything a verdict needs from one source: topology, then each online CPU's
CPUID leaves and MSRs (IA32_FEATURE_CONTROL, IA32_VMX_BASIC and, where VMX_BASIC shows
VMX, the capability MSRs the architecture says exist), then the kernel's own view in
/proc/cpuinfo and the kvm_intel parameters that change what KVM compares."""

from __future__ import annotations

import gc
import re
import sys
from dataclasses import dataclass, field
from typing import Optional

from vmxprobe import caps, vmx
from vmxprobe.sources import CPUINFO, OSRELEASE, Reading
from vmxprobe.topology import Topology, read_topology


@dataclass
class CpuProbe:
    cpu: int
    cpuid: dict[int, Reading] = field(default_factory=dict)   # leaf -> [eax, ebx, ecx, edx]
    # index -> value; after collect(), CPUs that read alike share one dict: read-only
    msr: dict[int, Reading] = field(default_factory=dict)

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
    msr = p.msr
    basic = msr.get(vmx.MSR_IA32_VMX_BASIC)
    if basic is None or not basic.ok or not basic.value:
        return
    values: dict[int, int] = {}
    read, cpu = source.read_msr, p.cpu
    while True:
        todo = [i for i in caps.readable_msrs(values, basic.value) if i not in msr]
        if not todo:
            return
        for index in todo:
            r = msr[index] = read(cpu, index)
            if r.errno is None:  # r.ok, without a property call per register
                values[index] = r.value


_DIGITS = re.compile(r"[0-9]+")


def parse_cpuinfo(text: Optional[str]) -> dict[int, dict]:
    """processor -> {key: value}, with "flags", "vmx flags" and "bugs" as frozensets.

    /proc/cpuinfo of an 8192-CPU host is about 25 MiB whose blocks repeat the same lines
    but for a few (processor, APIC ids, MHz): each distinct line is parsed once, its key,
    value and flag set are shared by the CPUs that show it, and the text is walked block
    by block rather than split into a second copy of itself.
    """
    cpus: dict[int, dict] = {}
    if not text:
        return cpus
    lines: dict[str, tuple] = {}  # a line as read -> (key, value), or () without a ":"
    flag_sets: dict[str, frozenset] = {}

    def flag_set(line: str) -> frozenset:
        got = flag_sets.get(line)
        if got is None:
            got = flag_sets[line] = frozenset(line.split())
        return got

    known, find = lines.get, text.find
    start, end_of_text = 0, len(text)
    while start < end_of_text:
        # The blocks text.split("\n\n") would give, one at a time.
        end = find("\n\n", start)
        if end < 0:
            end = end_of_text
        block = text[start:end]
        start = end + 2
        entry: dict = {}
        for line in block.splitlines():
            pair = known(line)
            if pair is None:
                key, sep, value = line.partition(":")
                pair = lines[line] = (sys.intern(key.strip()), value.strip()) if sep else ()
            if pair:
                entry[pair[0]] = pair[1]
        proc = entry.get("processor", "")
        # A block without a flags line is a cut /proc/cpuinfo (or a CPU that went
        # offline while it was read): it says nothing about the flags, so it is not kept.
        # ASCII digits only: str.isdigit() also takes "²", which int() rejects.
        if not _DIGITS.fullmatch(proc) or "flags" not in entry:
            continue
        entry["flags"] = flag_set(entry.get("flags", ""))
        # show_cpuinfo() prints "vmx flags" only when VMX capability word 0 is non-zero
        # (and only kernels >= 5.6 built with CONFIG_X86_VMX_FEATURE_NAMES): keep whether
        # the line was there at all, apart from what it held.
        entry["vmx flags line"] = "vmx flags" in entry
        entry["vmx flags"] = flag_set(entry.get("vmx flags", ""))
        entry["bugs"] = flag_set(entry.get("bugs", ""))
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
    # A scan of 8192 CPUs makes some 10^5 small objects that live until the report is
    # printed and hold no reference cycles: the cyclic collector's passes over them,
    # one every 700 allocations, cost a few per cent of the scan and free nothing.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _collect(source)
    finally:
        if paused:
            gc.enable()


def _collect(source) -> HostScan:
    topo = read_topology(source)
    probes = {}
    # The CPUs of a host mostly read the same values: a CPU whose MSR readings equal an
    # earlier CPU's shares that CPU's msr dict (read-only from here on), and equal CPUID
    # results are one object. 8192 CPUs' registers then take a fraction of the memory,
    # and the comparisons that follow (capview.msr_key()) find equal CPUs by identity.
    same_msrs: dict[tuple, dict] = {}
    same_leaf: dict[Reading, Reading] = {}
    try:
        for cpu in topo.online:
            p = probes[cpu] = probe_cpu(source, cpu)
            try:
                p.msr = same_msrs.setdefault((tuple(p.msr), tuple(p.msr.values())), p.msr)
                for leaf, r in p.cpuid.items():
                    p.cpuid[leaf] = same_leaf.setdefault(r, r)
            except TypeError:  # a value that cannot be hashed: kept as it is
                pass
    finally:
        source.close()
    release = source.read_text(OSRELEASE)
    params = read_kvm_params(source)
    cpuinfo = parse_cpuinfo(source.read_text(CPUINFO))
    return HostScan(source_kind=source.kind, source_name=source.name, topology=topo,
                    probes=probes, cpuinfo=cpuinfo,
                    kernel=release.strip() if release else None,
                    file_errors=dict(source.file_errors), kvm_params=params)
