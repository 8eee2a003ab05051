"""X86_FEATURE_SVM on each CPU, as identification leaves it, and VM_CR's SVMDIS bit.

get_cpu_cap() (arch/x86/kernel/cpu/common.c) sets X86_FEATURE_SVM from CPUID
Fn8000_0001 ECX[2]. From 6.7, init_amd() (arch/x86/kernel/cpu/amd.c; init_hygon() in
hygon.c) reads VM_CR on every CPU that has the flag and clears it on that CPU when SVMDIS
(bit 4) is set, with the notice "SVM disabled (by BIOS) in MSR_VM_CR" printed once
(commit 7deda2ce5b33, "x86/cpu: Clear SVM feature if disabled by BIOS", pulled for 6.7 in
x86_cpu_for_6.7_rc1). Kernels before 6.7 keep the flag whatever VM_CR says, and leave
VM_CR to kvm_amd. Either way identify_cpu() ANDs each CPU's flags into boot_cpu_data.

The kernel reads VM_CR with an unchecked rdmsrl(): a read that faults gives 0.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from vmxprobe.arch import cpuid
from vmxprobe.arch.cpuid import EAX, LEAF_EXT_FEATURES, LEAF_EXT_MAX
from vmxprobe.arch.svm import MSR_VM_CR, VmCr, decode_vm_cr
from vmxprobe.host.cpulist import format_cpulist
from vmxprobe.host.readings import CpuReadings, HostReadings
from vmxprobe.kernel import flag_view
from vmxprobe.kernel.release import SVMDIS_CLEARS_FLAG, KernelModel

# A host has a handful of distinct VM_CR values at most.
vm_cr = functools.lru_cache(maxsize=64)(decode_vm_cr)

# The notice init_amd() prints once when it clears the flag (no prefix, no CPU number).
SVMDIS_NOTICE = "SVM disabled (by BIOS) in MSR_VM_CR"


@dataclass(frozen=True)
class SvmFlag:
    """X86_FEATURE_SVM on one CPU after identification, and why."""

    has: bool | None  # None: the registers that decide it could not be read
    cpuid: bool | None  # CPUID Fn8000_0001 ECX[2] (or /proc/cpuinfo's svm standing in)
    svmdis: bool | None  # VM_CR bit 4 as the kernel reads it (a fault reads 0)
    why: str | None = None  # one line when the flag is absent


def cpuid_svm(p: CpuReadings, flags: frozenset[str] | None) -> tuple[bool | None, str]:
    """CPUID Fn8000_0001 ECX[2] on this CPU, and where the answer came from.

    A CPU whose extended range ends below Fn8000_0001 has no SVM (get_cpu_cap() leaves the
    word 0). Where the cpuid device did not answer, /proc/cpuinfo's svm flag stands in."""
    ext = p.cpuid.get(LEAF_EXT_MAX)
    if ext is not None and ext.value is not None and ext.value[EAX] < LEAF_EXT_FEATURES:
        return False, "CPUID Fn8000_0000 EAX (no Fn8000_0001 leaf)"
    got = p.has(cpuid.SVM)
    if got is not None:
        return got, "CPUID Fn8000_0001 ECX.SVM[bit 2]"
    if flags is None:
        return None, "CPUID Fn8000_0001 (not read) and /proc/cpuinfo (not read)"
    return "svm" in flags, "the svm flag in /proc/cpuinfo (CPUID device unreadable)"


def vm_cr_of(p: CpuReadings) -> tuple[VmCr | None, str | None]:
    """VM_CR as the kernel reads it: the value, or 0 when the read faults (EIO); (None,
    errno) when it could not be read at all (no driver, not root, not recorded)."""
    r = p.msr.get(MSR_VM_CR)
    if r is None:
        return None, "UNRECORDED"
    if r.value is not None:
        return vm_cr(r.value), None
    if r.errno == "EIO":
        return vm_cr(0), "EIO"
    return None, r.errno


def svm_flag(scan: HostReadings, cpu: int, model: KernelModel) -> SvmFlag:
    """X86_FEATURE_SVM on this CPU after identification, by the host's kernel release."""
    p = scan.cpus[cpu]
    has, how = cpuid_svm(p, scan.cpuinfo.get(cpu, {}).get("flags"))
    reg, errno = vm_cr_of(p)
    svmdis = None if reg is None else reg.svmdis
    if has is None:
        return SvmFlag(None, None, svmdis)
    if not has:
        return SvmFlag(False, False, svmdis, f"CPU {cpu}: {how} = 0: no X86_FEATURE_SVM")
    if not model.has(SVMDIS_CLEARS_FLAG):
        return SvmFlag(True, True, svmdis)
    if reg is None:
        return SvmFlag(None, True, None)
    if not reg.svmdis:
        return SvmFlag(True, True, False)
    return SvmFlag(
        False,
        True,
        True,
        f"CPU {cpu}: VM_CR (0xc0010114) = {reg.raw}: SVMDIS (bit 4) set; init_amd() clears "
        f'X86_FEATURE_SVM ("{SVMDIS_NOTICE}")',
    )


def svmdis_line(cpus: list[int], regs: dict[int, VmCr], release_clears: bool) -> str:
    """Why SVMDIS matters, and what fixes it, for CPUs whose VM_CR has it set: locked by
    firmware, or left unlocked (software could clear it, the kernel never does)."""
    locked = [c for c in cpus if regs[c].lock]
    unlocked = [c for c in cpus if not regs[c].lock]
    parts = []
    if locked:
        parts.append(
            f"CPU(s) {format_cpulist(locked)}: VM_CR.LOCK (bit 3) is set, so firmware fixed SVMDIS "
            'for this boot: enable SVM ("SVM Mode", AMD-V) in the firmware setup and reboot'
        )
    if unlocked:
        after = (
            "but the kernel cleared X86_FEATURE_SVM at boot (init_amd()), so a reboot with SVM enabled "
            "in the firmware setup is still needed"
            if release_clears
            else "which would let kvm_amd load on this kernel; enabling SVM in the firmware setup is "
            "the lasting fix"
        )
        parts.append(
            f"CPU(s) {format_cpulist(unlocked)}: VM_CR.LOCK (bit 3) is clear: firmware left SVMDIS "
            f"writable, so software could clear it (Linux never writes VM_CR), {after}"
        )
    return "; ".join(parts)


def kernel_view(scan: HostReadings, model: KernelModel) -> list[str]:
    """The running kernel's svm flag per CPU (/proc/cpuinfo) against what the registers
    imply on this kernel release."""

    def predict(cpu: int) -> tuple[bool | None, bool]:
        f = svm_flag(scan, cpu, model)
        return f.has, bool(scan.cpus[cpu].has(cpuid.SVM) and f.svmdis)

    view = flag_view.compare(scan, "svm", predict)
    hidden, missing, extra = view.hidden, view.missing, view.extra
    out = []
    if hidden:
        out.append(
            f"kernel view: /proc/cpuinfo shows no svm flag on CPU(s) {format_cpulist(hidden)} although "
            "CPUID reports SVM: since Linux 6.7 the kernel hides the flag when VM_CR.SVMDIS is set, so "
            'tools that read the flag report "no AMD-V" (kvm-ok: "Your CPU does not support KVM '
            'extensions") for what is a firmware setting'
        )
    if missing:
        out.append(
            f"kernel view: /proc/cpuinfo shows no svm flag on CPU(s) {format_cpulist(missing)} although "
            "the registers allow SVM: the running kernel cleared it (clearcpuid=svm, or a kernel whose "
            "amd.c differs), and kvm_amd follows the kernel's flag"
        )
    if extra:
        out.append(
            f"kernel view: /proc/cpuinfo shows the svm flag on CPU(s) {format_cpulist(extra)} although "
            "VM_CR.SVMDIS is set: kernels before 6.7 kept the flag when firmware disabled SVM (the "
            "running kernel is older than the rules applied here)"
        )
    return out
