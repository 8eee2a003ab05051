"""arch/x86/kernel/cpu/feat_ctl.c: init_ia32_feat_ctl(), which decides on every CPU
whether X86_FEATURE_VMX survives identification, and init_vmx_capabilities(), which fills
the words behind the /proc/cpuinfo "vmx flags" line (asm/vmxfeatures.h names)."""

from __future__ import annotations

import functools

from vmxprobe.arch.cpuid import CPUID_VMX_BIT, ECX
from vmxprobe.arch.vmx import M32, MSR_IA32_FEAT_CTL, FeatureControl, decode_feature_control
from vmxprobe.host.readings import HostReadings

# The state of IA32_FEATURE_CONTROL is asked for on every CPU, and a host has a handful
# of distinct values at most.
feature_control = functools.lru_cache(maxsize=64)(decode_feature_control)


def vmx_feature(scan: HostReadings, cpu: int, tboot: bool = False) -> tuple[bool | None, str | None]:
    """Does X86_FEATURE_VMX survive identification on this CPU?

    The refusal quotes the line feat_ctl.c's pr_err_once() logs, with the file's pr_fmt
    "x86/cpu: ".

    Returns (True|False|None, reason). Mirrors init_ia32_feat_ctl(): VMX needs
    CPUID.01H:ECX[5]; then a faulting IA32_FEATURE_CONTROL read, or a locked MSR whose
    deciding bit is clear, clears the feature. The deciding bit is bit 1 (VMX inside
    SMX) when the kernel was launched by tboot (tboot_enabled()), bit 2 (VMX outside SMX)
    otherwise. An unlocked MSR is locked by the kernel itself, with VMX on (and bit 1 too
    under tboot) when it is built with KVM_INTEL.
    """
    p = scan.cpus[cpu]
    has = p.cpuid_bit(1, ECX, CPUID_VMX_BIT)
    how = "CPUID.01H:ECX.VMX[bit 5]"
    if has is None:
        flags = scan.cpuinfo.get(cpu, {}).get("flags")
        if flags is None:
            return None, f"CPU {cpu}: neither CPUID ({p.cpuid[1].errno}) nor /proc/cpuinfo is readable"
        # Since Linux 5.6 the vmx flag is shown only when VMX survived feat_ctl.
        has, how = "vmx" in flags, "the vmx flag in /proc/cpuinfo (CPUID device unreadable)"
    if not has:
        return False, f"CPU {cpu}: {how} = 0: no X86_FEATURE_VMX"
    r = p.msr[MSR_IA32_FEAT_CTL]
    if r.value is None:
        if r.errno == "EIO":
            return False, (
                f"CPU {cpu}: reading IA32_FEATURE_CONTROL (0x3a) faults (EIO); "
                "init_ia32_feat_ctl() then clears X86_FEATURE_VMX"
            )
        return None, None
    fc: FeatureControl = feature_control(r.value)
    if not fc.locked:
        return True, None
    if tboot:
        if fc.vmx_inside_smx:
            return True, None
        why = (
            f"CPU {cpu}: IA32_FEATURE_CONTROL (0x3a) = {fc.raw}: locked (bit 0) with VMX inside "
            "SMX (bit 1) clear under tboot; init_ia32_feat_ctl() clears X86_FEATURE_VMX "
            '(logged once: "x86/cpu: VMX (inside TXT) disabled by BIOS")'
        )
        if fc.vmx_outside_smx:
            why += "; VMX outside SMX (bit 2) is on, which does not count under tboot"
        return False, why
    if fc.vmx_outside_smx:
        return True, None
    why = (
        f"CPU {cpu}: IA32_FEATURE_CONTROL (0x3a) = {fc.raw}: locked (bit 0) with "
        "VMX outside SMX (bit 2) clear; init_ia32_feat_ctl() clears X86_FEATURE_VMX "
        '(logged once: "x86/cpu: VMX (outside TXT) disabled by BIOS")'
    )
    if fc.vmx_inside_smx:
        why += "; only VMX inside SMX (bit 1) is on, which counts only under tboot"
    return False, why


def tboot_decides(scan: HostReadings) -> list[int]:
    """The CPUs whose VMX depends on whether tboot launched the kernel: CPUID VMX, a
    locked IA32_FEATURE_CONTROL, and bits 1 and 2 unequal."""
    out = []
    for cpu, p in sorted(scan.cpus.items()):
        r = p.msr.get(MSR_IA32_FEAT_CTL)
        if r is None or r.value is None or p.cpuid_bit(1, ECX, CPUID_VMX_BIT) is False:
            continue
        fc = feature_control(r.value)
        if fc.locked and fc.vmx_inside_smx != fc.vmx_outside_smx:
            out.append(cpu)
    return out


# /proc/cpuinfo "vmx flags" names: (capability word, bit) -> name.  Words as in
# feat_ctl.c enum vmx_feature_leafs: 0 MISC_FEATURES, 1 PRIMARY_CTLS, 2 SECONDARY_CTLS,
# 3 TERTIARY_CTLS_LOW, 4 TERTIARY_CTLS_HIGH.  Only the VMX_FEATURE_* whose comment starts
# with a quoted name are printed (mkcapflags.sh skips the rest), per the mainline
# vmxfeatures.h with NVMXINTS 5.
VMX_FLAG_NAMES: dict[tuple[int, int], str] = {
    (0, 5): "vnmi",
    (0, 6): "preemption_timer",
    (0, 7): "posted_intr",
    (0, 16): "invvpid",
    (0, 17): "ept_x_only",
    (0, 18): "ept_ad",
    (0, 19): "ept_1gb",
    (0, 20): "ept_5level",
    (0, 24): "flexpriority",
    (0, 25): "apicv",
    (0, 28): "eptp_switching",
    (1, 3): "tsc_offset",
    (1, 21): "vtpr",
    (1, 27): "mtf",
    (2, 0): "vapic",
    (2, 1): "ept",
    (2, 5): "vpid",
    (2, 7): "unrestricted_guest",
    (2, 8): "vapic_reg",
    (2, 9): "vid",
    (2, 10): "ple",
    (2, 14): "shadow_vmcs",
    (2, 17): "pml",
    (2, 18): "ept_violation_ve",
    (2, 22): "ept_mode_based_exec",
    (2, 25): "tsc_scaling",
    (2, 26): "usr_wait_pause",
    (2, 31): "notify_vm_exiting",
    (3, 4): "ipi_virt",
}


def vmx_capability_words(msrs: dict[int, int]) -> list[int]:
    """c->vmx_capability[] as init_vmx_capabilities() (feat_ctl.c) fills it.

    The kernel takes the allowed-1 (high) dword of the plain, not TRUE, MSRs; an MSR
    that is absent reads as 0 (rdmsr_safe() fails and the fixup zeroes the output).
    """

    def hi(i: int) -> int:
        return msrs.get(i, 0) >> 32 & M32

    def lo(i: int) -> int:
        return msrs.get(i, 0) & M32

    primary, secondary, pin = hi(0x482), hi(0x48B), hi(0x481)
    ept, vpid = lo(0x48C), hi(0x48C)
    # rdmsr_safe(MSR_IA32_VMX_VMFUNC, &ign, &funcs): the kernel keeps the HIGH dword,
    # while A.11 puts EPTP switching at bit 0, so "eptp_switching" needs bit 32 set.
    funcs = hi(0x491)
    # "Pin, EPT, VPID and VM-Func are merged into a single word."
    misc = (pin & 0xFFFF) | ((vpid & 1) << 16) | ((funcs & 0xF) << 28)
    # "EPT bits are full on scattered and must be manually handled."
    for ept_bit, word_bit in ((0, 17), (21, 18), (17, 19), (7, 20)):  # x_only, AD, 1GB, 5-level
        if ept >> ept_bit & 1:
            misc |= 1 << word_bit
    # Synthetic APIC features: flexpriority = TPR shadow + virtualize APIC accesses;
    # apicv = TPR shadow + APIC-register virtualization + virtual-interrupt delivery +
    # posted interrupts.
    if primary >> 21 & 1 and secondary & 1:
        misc |= 1 << 24
    if primary >> 21 & 1 and secondary >> 8 & 1 and secondary >> 9 & 1 and misc >> 7 & 1:
        misc |= 1 << 25
    return [misc, primary, secondary, lo(0x492), hi(0x492)]


def implied_vmx_flags(msrs: dict[int, int]) -> set[str]:
    """Names Linux prints on the /proc/cpuinfo "vmx flags" line for these MSR values.

    show_cpuinfo() (arch/x86/kernel/cpu/proc.c) prints the line only when word 0 is
    non-zero.  The synthetic X86_FEATURE_{TPR_SHADOW,FLEXPRIORITY,VNMI,EPT,EPT_AD,VPID}
    flags that init_vmx_capabilities() also sets belong to the "flags" line, not this one.
    """
    words = vmx_capability_words(msrs)
    if not words[0]:
        return set()
    return {name for (word, bit), name in VMX_FLAG_NAMES.items() if words[word] >> bit & 1}
