"""What stops a scan from seeing the registers the kernel would read: one line each,
naming the register, the CPU, the errno, the cause and the fix."""

from __future__ import annotations

from vmxprobe.arch.cpuid import LEAF_EXT_FEATURES
from vmxprobe.arch.svm import MSR_VM_CR
from vmxprobe.arch.vmx import MSR_IA32_FEAT_CTL, MSR_IA32_VMX_BASIC
from vmxprobe.host.readings import CpuReadings
from vmxprobe.host.sources import ACCESS_ERRORS, MEANING, UNRECORDED, CpuidReading, MsrReading

# One-line causes and fixes for what stops a scan from seeing the registers.
HINTS = {
    "ENOENT": "the msr driver is not loaded: run `modprobe msr` (kernel option CONFIG_X86_MSR)",
    "EPERM": "reading MSRs needs CAP_SYS_RAWIO: run as root (sudo vmxprobe scan)",
    "EACCES": "the msr device is not readable by this user: run as root (sudo vmxprobe scan)",
    "ENXIO": "a CPU went offline while it was being read: run the scan again",
    "SHORT": "the msr device returned a short read: check the kernel's msr driver",
    "UNRECORDED": "the fixture does not hold this register: record the host again with this vmxprobe",
}

# The cpuid device fails differently: it has its own driver and no CAP_SYS_RAWIO check
# (arch/x86/kernel/cpuid.c), so only its mode (0600 root) stops a user.
CPUID_HINTS = {
    "ENOENT": "the cpuid driver is not loaded: run `modprobe cpuid` (kernel option CONFIG_X86_CPUID)",
    "EACCES": "the cpuid device is not readable by this user: run as root (sudo vmxprobe scan)",
}

MSR_NAMES = {MSR_IA32_FEAT_CTL: "IA32_FEATURE_CONTROL (0x3a)", MSR_IA32_VMX_BASIC: "IA32_VMX_BASIC (0x480)"}


def unreadable(cpu: int, what: str, r: MsrReading | CpuidReading, hints: dict[str, str] | None = None) -> str:
    """ "cannot read WHAT on CPU N (ERRNO): cause and fix"."""
    errno = r.errno or "?"
    hint = (hints or HINTS).get(errno) or HINTS.get(errno) or MEANING.get(errno, "unexpected error")
    return f"cannot read {what} on CPU {cpu} ({errno}): {hint}"


def unreadable_cpu(p: CpuReadings, cpuinfo_answered: bool = False) -> list[str]:
    """Every read that left this CPU undetermined, the MSRs first: they are what the
    one-line error names. CPUID is listed only when /proc/cpuinfo did not stand in."""
    out = [
        unreadable(p.cpu, MSR_NAMES[index], p.msr[index])
        for index in (MSR_IA32_FEAT_CTL, MSR_IA32_VMX_BASIC)
        if not p.msr[index].ok
    ]
    if not p.cpuid[1].ok and not cpuinfo_answered:
        out.append(unreadable(p.cpu, "CPUID leaf 1", p.cpuid[1], CPUID_HINTS))
    return out


def basic_access_note(p: CpuReadings) -> str | None:
    """Why IA32_VMX_BASIC could not be read, when it says something about our access."""
    r = p.msr[MSR_IA32_VMX_BASIC]
    if not r.ok and r.errno in ACCESS_ERRORS and r.errno != "UNRECORDED":
        return f"IA32_VMX_BASIC could not be read on CPU {p.cpu} ({r.errno}): {HINTS.get(r.errno or '', '')}"
    return None


def unreadable_svm(p: CpuReadings, cpuinfo_answered: bool = False) -> list[str]:
    """What left this AMD CPU's SVM flag or VM_CR unknown: VM_CR first (a read that
    faults is not listed: the kernel reads it as 0), then CPUID Fn8000_0001 where
    /proc/cpuinfo did not stand in."""
    out = []
    r = p.msr.get(MSR_VM_CR) or MsrReading(errno=UNRECORDED)
    if not r.ok and r.errno != "EIO":
        out.append(unreadable(p.cpu, "VM_CR (0xc0010114)", r))
    leaf = p.cpuid.get(LEAF_EXT_FEATURES) or p.cpuid.get(0) or CpuidReading(errno=UNRECORDED)
    if leaf.value is None and not cpuinfo_answered:
        out.append(unreadable(p.cpu, "CPUID Fn8000_0001", leaf, CPUID_HINTS))
    return out


def vm_cr_access_note(p: CpuReadings) -> str | None:
    """Why VM_CR could not be read, when it says something about our access."""
    r = p.msr.get(MSR_VM_CR)
    if r is not None and not r.ok and r.errno in ACCESS_ERRORS and r.errno != "UNRECORDED":
        return (
            f"VM_CR (0xc0010114) could not be read on CPU {p.cpu} ({r.errno}): {HINTS.get(r.errno or '', '')}"
        )
    return None
