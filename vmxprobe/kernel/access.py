"""What stops a scan from seeing the registers the kernel would read: one line each,
naming the register, the CPU, the errno, the cause and the fix."""

from __future__ import annotations

from vmxprobe.arch.cpuid import LEAF_EXT_FEATURES
from vmxprobe.arch.svm import MSR_VM_CR
from vmxprobe.arch.vmx import MSR_IA32_FEAT_CTL, MSR_IA32_VMX_BASIC
from vmxprobe.host.readings import CpuReadings, HostReadings
from vmxprobe.host.sources import ACCESS_ERRORS, CPU_DIR, MEANING, UNRECORDED, CpuidReading, MsrReading

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

# Failures that mean a CPU had no device node: none at all (ENOENT), one a CPU that
# went offline lost (ENXIO, as LiveHost reports it), or none in the fixture.
_NO_NODE = frozenset({"ENOENT", "ENXIO", UNRECORDED})


def drivers_loaded(scan: HostReadings) -> frozenset[str]:
    """The device kinds ("msr", "cpuid") some CPU had a node of: then that driver is
    loaded, and a CPU without its node is not a missing driver (msr_device_create()
    makes one per online CPU, in the driver's hotplug callback)."""
    loaded = set()
    for p in scan.cpus.values():
        if "msr" not in loaded and any(r.errno not in _NO_NODE for r in p.msr.values()):
            loaded.add("msr")
        if "cpuid" not in loaded and any(r.errno not in _NO_NODE for r in p.cpuid.values()):
            loaded.add("cpuid")
        if len(loaded) == 2:
            break
    return frozenset(loaded)


def unreadable(
    cpu: int,
    what: str,
    r: MsrReading | CpuidReading,
    hints: dict[str, str] | None = None,
    loaded: frozenset[str] = frozenset(),
) -> str:
    """ "cannot read WHAT on CPU N (ERRNO): cause and fix". `loaded`: drivers_loaded()."""
    errno = r.errno or "?"
    kind = "cpuid" if isinstance(r, CpuidReading) else "msr"
    if errno == "ENOENT" and kind in loaded:
        hint = (
            f"no /dev/cpu/{cpu}/{kind} although the {kind} driver is loaded (other CPUs have "
            "theirs): the CPU went offline after it was listed, or the tree lacks it; run the "
            "scan again"
        )
    else:
        hint = (hints or HINTS).get(errno) or HINTS.get(errno) or MEANING.get(errno, "unexpected error")
    return f"cannot read {what} on CPU {cpu} ({errno}): {hint}"


def unreadable_cpu(
    p: CpuReadings, cpuinfo_answered: bool = False, loaded: frozenset[str] = frozenset()
) -> list[str]:
    """Every read that left this CPU undetermined, the MSRs first: they are what the
    one-line error names. CPUID is listed only when /proc/cpuinfo did not stand in."""
    out = [
        unreadable(p.cpu, MSR_NAMES[index], p.msr[index], loaded=loaded)
        for index in (MSR_IA32_FEAT_CTL, MSR_IA32_VMX_BASIC)
        if not p.msr[index].ok
    ]
    if not p.cpuid[1].ok and not cpuinfo_answered:
        out.append(unreadable(p.cpu, "CPUID leaf 1", p.cpuid[1], CPUID_HINTS, loaded))
    return out


_CPU_LISTS = (CPU_DIR, f"{CPU_DIR}/online", f"{CPU_DIR}/present", f"{CPU_DIR}/possible")


def no_cpus(scan: HostReadings) -> str:
    """Why no CPU was read: the CPU lists could not be read, or they list none."""
    failed = [(path, scan.file_errors[path]) for path in _CPU_LISTS if path in scan.file_errors]
    if not failed:
        return "no online CPU to read: /sys/devices/system/cpu/online lists none (is this a Linux root?)"
    path, errno = failed[0]
    if errno in ("EACCES", "EPERM"):
        return (
            f"cannot read /{path} ({errno}): it lists the CPUs, and this user may not read it: "
            "run as root (sudo vmxprobe scan)"
        )
    return f"cannot read /{path} ({errno}): it lists the CPUs, so no CPU could be read"


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
