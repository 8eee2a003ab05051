"""The readings of one scan: everything a verdict needs, read once from one source.

Topology and the kernel's own view in /proc/cpuinfo first, then each online CPU's CPUID
leaves and MSRs (IA32_FEATURE_CONTROL, IA32_VMX_BASIC and, where VMX_BASIC shows VMX, the
capability MSRs the architecture says exist; on AMD and Hygon CPUs also VM_CR and, where
the CPU offers memory encryption, SEV_STATUS), then the kvm_intel parameters that change
what KVM compares."""

from __future__ import annotations

import functools
import gc
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from vmxprobe.arch.capabilities import readable_msrs
from vmxprobe.arch.cpuid import (
    AMD_VENDORS,
    CPUID_HV_LEAF,
    CPUID_HYPERVISOR_BIT,
    EAX,
    ECX,
    HV_CPUID_ENLIGHTMENT_INFO,
    HV_CPUID_NESTED_FEATURES,
    HV_SIGNATURE_HYPERV,
    LEAF_EXT_FEATURES,
    LEAF_EXT_MAX,
    LEAF_SGX,
    LEAF_STRUCTURED,
    CpuFeature,
    bit,
    cpuid_vendor,
    hypervisor_name,
)
from vmxprobe.arch.svm import LEAF_MEM_ENCRYPT, MSR_AMD64_SEV, MSR_VM_CR, decode_mem_encrypt
from vmxprobe.arch.vmx import MSR_IA32_FEAT_CTL, MSR_IA32_VMX_BASIC
from vmxprobe.host.sources import CPUINFO, OSRELEASE, CpuidReading, MsrReading, Source
from vmxprobe.host.topology import Topology, read_cpu_sets, read_topology
from vmxprobe.host.workers import FAILED, Forked, usable_cpus

CpuInfo = dict[str, Any]  # one /proc/cpuinfo block: "flags", "vmx flags", "bugs" as frozensets


@dataclass
class CpuReadings:
    """What was read on one online CPU."""

    cpu: int
    cpuid: dict[int, CpuidReading] = field(default_factory=dict)  # leaf (subleaf 0) -> reading
    subleaves: dict[tuple[int, int], CpuidReading] = field(default_factory=dict)  # (leaf, subleaf > 0)
    # index -> reading; after read_host(), CPUs that read alike share one dict: read-only
    msr: dict[int, MsrReading] = field(default_factory=dict)

    def cpuid_bit(self, leaf: int, reg: int, n: int, subleaf: int = 0) -> bool | None:
        r = self.cpuid.get(leaf) if subleaf == 0 else self.subleaves.get((leaf, subleaf))
        return bit(r.value[reg], n) if r is not None and r.value is not None else None

    def has(self, f: CpuFeature) -> bool | None:
        """CPUID's answer for a feature; None when the leaf was not read or is beyond the
        CPU's highest leaf (then the kernel reads it as 0: see read_cpu())."""
        return self.cpuid_bit(f.leaf, f.reg, f.bit, f.subleaf)

    @property
    def vendor(self) -> str | None:
        """The vendor string CPUID leaf 0 gives, or None when it was not read."""
        r = self.cpuid.get(0)
        return cpuid_vendor(r.value) if r is not None and r.value is not None else None


@dataclass
class HostReadings:
    """Everything one scan read from its source."""

    source_kind: str
    source_name: str
    topology: Topology
    cpus: dict[int, CpuReadings]  # online CPUs, each read
    cpuinfo: dict[int, CpuInfo]  # processor -> its /proc/cpuinfo block
    kernel: str | None  # proc/sys/kernel/osrelease
    file_errors: dict[str, str]
    kvm_params: dict[str, str] = field(default_factory=dict)  # kvm_intel module parameters
    boot_params: bytes | None = None  # sys/kernel/boot_params/data: struct boot_params
    debugfs_x86: list[str] | None = None  # sys/kernel/debug/x86 entries the model looks for
    acpi_tables: dict[str, bytes] = field(default_factory=dict)  # ACPI_TABLES read, by path

    def vendor(self, cpu: int) -> str | None:
        """A CPU's vendor: CPUID leaf 0, or /proc/cpuinfo's vendor_id where the cpuid
        device could not be read (the kernel prints what CPUID told it)."""
        p = self.cpus.get(cpu)
        got = p.vendor if p is not None else None
        if got is None:
            text = self.cpuinfo.get(cpu, {}).get("vendor_id")
            got = text if isinstance(text, str) and text else None
        return got

    def is_amd(self, cpu: int) -> bool | None:
        """AMD or Hygon, the vendors with SVM; None when the vendor is not known."""
        vendor = self.vendor(cpu)
        return None if vendor is None else vendor in AMD_VENDORS


def read_cpu(
    source: Source, cpu: int, rounds: Rounds | None = None, vendor_hint: str | None = None
) -> CpuReadings:
    """One CPU's readings. `rounds` is read_capabilities()'s memo, shared by the CPUs of
    one scan. `vendor_hint` is /proc/cpuinfo's vendor_id for this CPU: it decides the AMD
    reads where the cpuid device cannot say."""
    p = CpuReadings(cpu)
    p.cpuid[0] = source.read_cpuid(cpu, 0)
    p.cpuid[1] = source.read_cpuid(cpu, 1)
    if p.cpuid_bit(1, ECX, CPUID_HYPERVISOR_BIT):
        hv = source.read_cpuid(cpu, CPUID_HV_LEAF)
        p.cpuid[CPUID_HV_LEAF] = hv
        # Hyper-V's enlightenment hints and nested features (TLFS; asm/hyperv-tlfs.h):
        # whether kvm_intel in this guest would use the enlightened VMCS.  Read only when
        # the hypervisor is Hyper-V and its maximum leaf (EAX of 0x40000000) covers them.
        if hv.value is not None and hypervisor_name(hv.value) == HV_SIGNATURE_HYPERV:
            for leaf in (HV_CPUID_ENLIGHTMENT_INFO, HV_CPUID_NESTED_FEATURES):
                if hv.value[0] >= leaf:
                    p.cpuid[leaf] = source.read_cpuid(cpu, leaf)
    _read_feature_leaves(source, p)
    # Both MSRs are read on every CPU, whatever CPUID says: the msr driver reads with
    # rdmsr_safe_on_cpu(), so a register the CPU lacks costs an EIO, not a crash, and
    # the EIO is itself evidence (a hypervisor hiding VMX, an AMD CPU).
    p.msr[MSR_IA32_FEAT_CTL], p.msr[MSR_IA32_VMX_BASIC] = source.read_msrs(cpu, _ALWAYS_READ)
    read_capabilities(source, p, rounds)
    if (p.vendor or vendor_hint) in AMD_VENDORS:
        read_svm(source, p)
    return p


_ALWAYS_READ = (MSR_IA32_FEAT_CTL, MSR_IA32_VMX_BASIC)


def read_svm(source: Source, p: CpuReadings) -> None:
    """The AMD registers the SVM verdict rests on, on an AMD or Hygon CPU only.

    VM_CR (0xc0010114) on every CPU: its SVMDIS bit decides SVM there (KVM's checks read
    it per CPU from 6.3, init_amd() from 6.7). SEV_STATUS (0xc0010131) where CPUID
    Fn8000_001F EAX offers SME or SEV, the condition under which sme_enable()
    (arch/x86/mm/mem_encrypt_identity.c) reads it at boot; also where that leaf could not
    be read at all, since the msr driver's rdmsr_safe_on_cpu() turns a missing register
    into EIO rather than a fault, and the kernel's own answer is needed either way.
    """
    cpu = p.cpu
    p.msr[MSR_VM_CR] = source.read_msr(cpu, MSR_VM_CR)
    leaf = p.cpuid.get(LEAF_MEM_ENCRYPT)
    ext = p.cpuid.get(LEAF_EXT_MAX)
    if leaf is not None and leaf.value is not None:
        wanted = decode_mem_encrypt(leaf.value[EAX]).reads_sev_status
    else:
        # Not read: either the CPU's extended range ends below the leaf (then the kernel
        # does not read SEV_STATUS either), or the cpuid device did not answer.
        wanted = not (ext is not None and ext.value is not None and ext.value[EAX] < LEAF_MEM_ENCRYPT)
    if wanted:
        p.msr[MSR_AMD64_SEV] = source.read_msr(cpu, MSR_AMD64_SEV)


def _read_feature_leaves(source: Source, p: CpuReadings) -> None:
    """The leaves the kernel model needs beyond 0 and 1, each only where the CPU's highest
    leaf covers it, as the kernel's get_cpu_cap() reads them (c->cpuid_level >= 7, leaf 7
    subleaf 1 when leaf 7's EAX >= 1): structured features for the CR4 check, SGX1 for
    setup_vmcs_config()'s ENCLS rule, and the extended range (SVM)."""
    leaf0 = p.cpuid[0].value
    if leaf0 is None:
        return
    cpu, read = p.cpu, source.read_cpuid
    top = leaf0[EAX]
    if top >= LEAF_STRUCTURED:
        r = p.cpuid[LEAF_STRUCTURED] = read(cpu, LEAF_STRUCTURED)
        if r.value is not None and r.value[EAX] >= 1:
            p.subleaves[(LEAF_STRUCTURED, 1)] = read(cpu, LEAF_STRUCTURED, 1)
    if top >= LEAF_SGX:
        p.cpuid[LEAF_SGX] = read(cpu, LEAF_SGX)
    if cpuid_vendor(leaf0) not in AMD_VENDORS:
        return  # the extended range holds SVM, which only AMD and Hygon CPUs have
    ext = p.cpuid[LEAF_EXT_MAX] = read(cpu, LEAF_EXT_MAX)
    if ext.value is not None and LEAF_EXT_FEATURES <= ext.value[EAX] <= LEAF_EXT_MAX + 0xFFFF:
        p.cpuid[LEAF_EXT_FEATURES] = read(cpu, LEAF_EXT_FEATURES)
        # Encrypted-memory capabilities: whether the kernel reads SEV_STATUS (read_svm()).
        if ext.value[EAX] >= LEAF_MEM_ENCRYPT:
            p.cpuid[LEAF_MEM_ENCRYPT] = read(cpu, LEAF_MEM_ENCRYPT)


# What each round read, by what decided it: IA32_VMX_BASIC, the MSRs already held, and
# the values read so far in the order read. CPUs that read alike ask alike.
Rounds = dict[tuple[Any, ...], list[int]]


def read_capabilities(source: Source, p: CpuReadings, rounds: Rounds | None = None) -> None:
    """Read the VMX capability MSRs (0x481-0x493) that exist on this CPU, in rounds.

    Only after IA32_VMX_BASIC reads non-zero (a CPU with VMX always reports a VMCS size):
    SDM Vol. 3D Appendix A makes some MSRs conditional on others (0x48B on the primary
    controls' bit 63, 0x48C and 0x491 on secondary controls, 0x492 on bit 49, 0x493 on
    the exit controls' bit 63, 0x48D-0x490 on VMX_BASIC bit 55), so each round reads what
    readable_msrs() says exists given the values read so far, until nothing new
    appears.  An MSR that is not architecturally there is never read; one that is there
    and still faults is kept as EIO, for the verdict to report.
    """
    msr = p.msr
    basic = msr.get(MSR_IA32_VMX_BASIC)
    if basic is None or not basic.value:
        return
    values: dict[int, int] = {}
    if rounds is None:
        rounds = {}
    asked: tuple[Any, ...] = (basic.value, tuple(msr))
    while True:
        todo = rounds.get(asked)
        if todo is None:
            todo = rounds[asked] = [i for i in readable_msrs(values, basic.value) if i not in msr]
        if not todo:
            return
        for index, r in zip(todo, source.read_msrs(p.cpu, todo)):
            msr[index] = r
            if r.value is not None:  # r.ok, without a property call per register
                values[index] = r.value
            asked += (index, r.value)


# A CPU number: ASCII digits (str.isdigit() also takes "²", which int() rejects), and
# few enough that int() cannot meet Python's int-string limit (4300 digits).
_DIGITS = re.compile(r"[0-9]{1,9}")


def parse_cpuinfo(text: str | None) -> dict[int, CpuInfo]:
    """processor -> {key: value}, with "flags", "vmx flags" and "bugs" as frozensets.

    /proc/cpuinfo of an 8192-CPU host is about 25 MiB whose blocks repeat the same lines
    but for a few (processor, APIC ids, MHz): each distinct line is parsed once, its key,
    value and flag set are shared by the CPUs that show it, and the text is walked block
    by block rather than split into a second copy of itself.
    """
    cpus: dict[int, CpuInfo] = {}
    if not text:
        return cpus
    lines: dict[str, tuple[str, ...]] = {}  # a line as read -> (key, value), or () without ":"
    flag_sets: dict[str, frozenset[str]] = {}

    def flag_set(line: str) -> frozenset[str]:
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
        entry: CpuInfo = {}
        # Lines end in "\n" alone (show_cpuinfo()): splitlines() would also cut a model
        # name (the CPU's brand string, any bytes) at a "\r", "\x1c" or "\x85" in it.
        for line in block.split("\n"):
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
# arch/x86/kernel/ksysfs.c: the boot_params the kernel was started with (mode 0444).
BOOT_PARAMS = "sys/kernel/boot_params/data"
# arch/x86/kernel/tboot.c tboot_late_init(): created only when tboot_enabled().
DEBUGFS_X86 = "sys/kernel/debug/x86"
_DEBUGFS_NAMES = re.compile(r"tboot_log")
# The firmware's CPU and NUMA tables (drivers/acpi/sysfs.c, mode 0400: root only): the
# MADT ("APIC"), SRAT and FADT ("FACP") that the kernel's boot-time placement read.
ACPI_TABLES = tuple(f"sys/firmware/acpi/tables/{name}" for name in ("APIC", "SRAT", "FACP"))


def read_kvm_params(source: Source) -> dict[str, str]:
    """kvm_intel parameters that change which MSRs its per-CPU check compares; absent
    when the module is not loaded (then the defaults apply)."""
    out = {}
    for name in ("nested", "error_on_inconsistent_vmcs_config", "ept"):
        text = source.read_text(f"{KVM_INTEL_PARAMS}/{name}")
        if text is not None and text.strip():
            out[name] = text.strip()
    return out


def read_host(source: Source) -> HostReadings:
    # The cyclic collector is paused while reading: the readings hold no cycles
    # (docs/benchmarks.md, "What made the difference").
    paused = gc.isenabled()
    gc.disable()
    try:
        return _read_host(source)
    finally:
        if paused:
            gc.enable()


# Workers for the registers of a live host (host.workers): as many as the CPUs this
# process may use, up to MAX_WORKERS, each with at least MIN_CPUS_PER_WORKER CPUs to
# read; with fewer, the scan reads alone (docs/benchmarks.md has the figures).
MIN_CPUS_PER_WORKER = 128
MAX_WORKERS = 8

_Packed = list[
    tuple[int, dict[int, MsrReading], dict[int, CpuidReading], dict[tuple[int, int], CpuidReading]]
]


class _Alike:
    """The CPUs of a host mostly read the same values: a CPU whose MSR readings equal an
    earlier CPU's shares that CPU's msr dict (read-only from here on), and equal CPUID
    results are one object. 8192 CPUs' registers then take a fraction of the memory, and
    the comparisons that follow (kernel.capabilities.msr_key()) find equal CPUs by
    identity."""

    def __init__(self) -> None:
        self.msrs: dict[tuple[Any, ...], dict[int, MsrReading]] = {}
        self.leaves: dict[CpuidReading, CpuidReading] = {}

    def share(self, p: CpuReadings) -> None:
        try:
            p.msr = self.msrs.setdefault((tuple(p.msr), tuple(p.msr.values())), p.msr)
            same = self.leaves.setdefault
            for leaf, r in p.cpuid.items():
                p.cpuid[leaf] = same(r, r)
            for key, r in p.subleaves.items():
                p.subleaves[key] = same(r, r)
        except TypeError:  # a value that cannot be hashed: kept as it is
            pass


def _read_cpus(
    source: Source, cpus: list[int], alike: _Alike, out: dict[int, CpuReadings], hints: dict[int, str]
) -> None:
    rounds: Rounds = {}
    for cpu in cpus:
        p = out[cpu] = read_cpu(source, cpu, rounds, hints.get(cpu))
        alike.share(p)


def _read_block(source: Source, hints: dict[int, str], cpus: list[int]) -> _Packed:
    """A worker's job: its CPUs' readings as plain tuples (pickled once for each shared
    object)."""
    got: dict[int, CpuReadings] = {}
    try:
        _read_cpus(source, cpus, _Alike(), got, hints)
    finally:
        source.close()
    return [(p.cpu, p.msr, p.cpuid, p.subleaves) for p in got.values()]


def _blocks(source: Source, online: list[int]) -> list[list[int]]:
    """The online CPUs in contiguous blocks, one per worker; [] to read them here."""
    if getattr(source, "parallel", False) is not True:
        return []
    n = min(usable_cpus(), MAX_WORKERS, len(online) // MIN_CPUS_PER_WORKER)
    if n < 2:
        return []
    return [online[len(online) * i // n : len(online) * (i + 1) // n] for i in range(n)]


def _read_host(source: Source) -> HostReadings:
    cpu_sets = read_cpu_sets(source)
    # The kernel's own view first: its vendor_id stands in for CPUID leaf 0 where the
    # cpuid device cannot be read, so that an AMD host without it still gets VM_CR read.
    cpuinfo = parse_cpuinfo(source.read_text(CPUINFO))
    hints = {c: v for c, info in cpuinfo.items() if isinstance(v := info.get("vendor_id"), str)}
    blocks = _blocks(source, cpu_sets.online)
    probes: dict[int, CpuReadings] = {}
    alike = _Alike()
    try:
        # With workers, the registers are read while this process reads the rest of
        # the topology and the files below; without, in the order of the sections.
        with Forked(functools.partial(_read_block, source, hints), blocks) as workers:
            topo = read_topology(source, cpu_sets)
            if not blocks:
                _read_cpus(source, topo.online, alike, probes, hints)
            release = source.read_text(OSRELEASE)
            params = read_kvm_params(source)
            for block, got in zip(blocks, workers.results()):
                if got is FAILED:  # read here instead: the same reads, the same errors
                    _read_cpus(source, block, alike, probes, hints)
                    continue
                for cpu, msr, cpuid, subleaves in got:
                    p = probes[cpu] = CpuReadings(cpu, cpuid, subleaves, msr)
                    alike.share(p)
    finally:
        source.close()
    return HostReadings(
        source_kind=source.kind,
        source_name=source.name,
        topology=topo,
        cpus=probes,
        cpuinfo=cpuinfo,
        kernel=release.strip() if release else None,
        file_errors=dict(source.file_errors),
        kvm_params=params,
        boot_params=source.read_bytes(BOOT_PARAMS),
        debugfs_x86=source.list_dir(DEBUGFS_X86, _DEBUGFS_NAMES),
        acpi_tables={p: data for p in ACPI_TABLES if (data := source.read_bytes(p)) is not None},
    )
