"""kvm_intel's struct vmcs_config: what setup_vmcs_config() (arch/x86/kvm/vmx/vmx.c)
builds from a CPU's capability MSRs, when it refuses them, and which MSRs reach the
struct that vmx_check_processor_compat() compares on every CPU."""

from __future__ import annotations

from dataclasses import dataclass

from vmxprobe.arch.capabilities import MSRS, msr_label
from vmxprobe.arch.vmx import M32, M64


def _param_on(params: dict[str, str], name: str) -> bool:
    value = params.get(name)
    return value is None or value.strip().upper() not in ("N", "0")


def nested_enabled(params: dict[str, str]) -> bool:
    """kvm_intel.nested as the host has it; 1 (the default since Linux 4.20) if unknown."""
    return _param_on(params, "nested")


def strict_config(params: dict[str, str]) -> bool:
    """kvm_intel.error_on_inconsistent_vmcs_config (default Y)."""
    return _param_on(params, "error_on_inconsistent_vmcs_config")


@dataclass(frozen=True)
class KvmRole:
    """Whether kvm_intel's per-CPU comparison sees an MSR, and why (not)."""

    compared: bool
    why: str


# kvm_intel: which capability MSRs feed the struct vmcs_config that
# vmx_check_processor_compat() memcmp()s on every CPU against the boot CPU's
# ("Inconsistent VMCS config on CPU %d", arch/x86/kvm/vmx/vmx.c).  setup_vmcs_config()
# builds it from the plain control MSRs with adjust_vmx_controls() (allowed-0 bits all
# enter; allowed-1 bits where KVM asks for them), from all of IA32_VMX_BASIC and
# IA32_VMX_MISC; with kvm_intel.nested=1 (the default) nested_vmx_setup_ctls_msrs() adds
# vmcs_conf->nested, which takes the EPT half of IA32_VMX_EPT_VPID_CAP and reads
# IA32_VMX_CR0_FIXED1 / IA32_VMX_CR4_FIXED1 with rdmsrl().  Everything else is either
# computed by KVM (VMCS_ENUM, CR0/CR4 FIXED0, VM functions) or never read by it (TRUE_*):
# a difference there is reported, and KVM loads.

FEEDS_ALWAYS = "always"
FEEDS_NESTED = "nested"  # only while kvm_intel.nested=1

KVM_FEEDS: dict[int, tuple[str, int, str]] = {
    0x480: (FEEDS_ALWAYS, M64, "setup_vmcs_config(): vmcs_conf->basic"),
    0x481: (FEEDS_ALWAYS, M64, "adjust_vmx_controls(): vmcs_conf->pin_based_exec_ctrl"),
    0x482: (FEEDS_ALWAYS, M64, "adjust_vmx_controls(): vmcs_conf->cpu_based_exec_ctrl"),
    0x483: (FEEDS_ALWAYS, M64, "adjust_vmx_controls(): vmcs_conf->vmexit_ctrl"),
    0x484: (FEEDS_ALWAYS, M64, "adjust_vmx_controls(): vmcs_conf->vmentry_ctrl"),
    0x485: (FEEDS_ALWAYS, M64, "setup_vmcs_config(): vmcs_conf->misc"),
    0x48B: (FEEDS_ALWAYS, M64, "adjust_vmx_controls(): vmcs_conf->cpu_based_2nd_exec_ctrl"),
    0x492: (FEEDS_ALWAYS, M64, "adjust_vmx_controls64(): vmcs_conf->cpu_based_3rd_exec_ctrl"),
    0x493: (
        FEEDS_ALWAYS,
        M64,
        "adjust_vmx_controls64(): vmcs_conf->vmexit_2nd_ctrl (kernels with KVM FRED support)",
    ),
    0x48C: (
        FEEDS_NESTED,
        M32,
        "nested_vmx_setup_secondary_ctls(): vmcs_conf->nested.ept_caps (EPT half only)",
    ),
    0x487: (FEEDS_NESTED, M64, "nested_vmx_setup_cr_fixed(): rdmsrl() into vmcs_conf->nested.cr0_fixed1"),
    0x489: (FEEDS_NESTED, M64, "nested_vmx_setup_cr_fixed(): rdmsrl() into vmcs_conf->nested.cr4_fixed1"),
}
KVM_IGNORES: dict[int, str] = {
    0x486: "KVM reports its own VMXON_CR0_ALWAYSON to L1",
    0x488: "KVM reports its own VMXON_CR4_ALWAYSON to L1",
    0x48A: "KVM computes it (nested_vmx_calc_vmcs_enum_msr())",
    0x48D: "KVM reads only the plain control MSRs",
    0x48E: "KVM reads only the plain control MSRs",
    0x48F: "KVM reads only the plain control MSRs",
    0x490: "KVM reads only the plain control MSRs",
    0x491: "KVM derives its VM-function controls from EPT support",
}


def kvm_feed_mask(index: int, nested: bool = True) -> int:
    """The bits of MSR `index` that reach vmcs_config (0: none)."""
    feed = KVM_FEEDS.get(index)
    if feed is None or (feed[0] == FEEDS_NESTED and not nested):
        return 0
    return feed[1]


# Controls setup_vmcs_config() cannot do without on x86_64 (arch/x86/kvm/vmx/vmx.h
# KVM_REQUIRED_VMX_*): adjust_vmx_controls() returns -EIO when one of them cannot be 1.
KVM_REQUIRED_CONTROLS: dict[int, tuple[int, ...]] = {
    0x481: (0, 3),  # EXT_INTR_MASK, NMI_EXITING
    0x482: (2, 3, 7, 9, 10, 11, 15, 16, 19, 20, 23, 24, 29),  # INTR_WINDOW .. MONITOR, CR8 load/store
    0x483: (2, 9, 15),  # SAVE_DEBUG_CONTROLS, HOST_ADDR_SPACE_SIZE, ACK_INTR_ON_EXIT
    0x484: (2, 9),  # LOAD_DEBUG_CONTROLS, IA32E_MODE
}

# vmx.c vmcs_entry_exit_pairs[]: setup_vmcs_config() refuses a CPU on which an entry
# control is available without its exit partner or the other way round (with
# error_on_inconsistent_vmcs_config=Y, the default): (entry bit, exit bit, what).
KVM_ENTRY_EXIT_PAIRS = (
    (13, 12, "IA32_PERF_GLOBAL_CTRL load"),
    (14, 19, "IA32_PAT load"),
    (15, 21, "IA32_EFER load"),
    (16, 23, "IA32_BNDCFGS load/clear"),
    (18, 25, "IA32_RTIT_CTL load/clear"),
)


def kvm_setup_problems(msrs: dict[int, int], strict: bool = True) -> list[str]:
    """Why setup_vmcs_config() would return -EIO for these plain MSR values, one string
    per cause ([] when it would succeed).  An MSR that faults must be passed as 0: the
    kernel's rdmsr() fixup reads 0 for it.  strict=False is
    kvm_intel.error_on_inconsistent_vmcs_config=N: the pair and EPT/VPID checks then only
    warn and KVM drops the odd controls."""
    out: list[str] = []
    for index, required in KVM_REQUIRED_CONTROLS.items():
        if index not in msrs:
            continue
        high = msrs[index] >> 32
        table = MSRS[index].table
        names = {c.bit: c.name for c in table.controls} if table is not None else {}
        missing = [b for b in required if not high >> b & 1]
        if missing:
            wanted = ", ".join(f"bit {b} {names.get(b, '')}" for b in missing)
            out.append(f"{msr_label(index)} cannot set control(s) KVM requires: {wanted}")
    if not strict:
        return out
    if 0x483 in msrs and 0x484 in msrs:
        entry, exit_ = msrs[0x484], msrs[0x483]
        for n, x, what in KVM_ENTRY_EXIT_PAIRS:
            # KVM asks for both as optional: each ends up set when allowed-1 (or forced).
            has_n = bool(((entry >> 32) | (entry & M32)) >> n & 1)
            has_x = bool(((exit_ >> 32) | (exit_ & M32)) >> x & 1)
            if has_n != has_x:
                entry_is = "available" if has_n else "unavailable"
                exit_is = "available" if has_x else "unavailable"
                out.append(
                    f"inconsistent VM-entry/VM-exit pair ({what}): entry control bit {n} {entry_is}, "
                    f'exit control bit {x} {exit_is} ("Inconsistent VM-Entry/VM-Exit pair")'
                )
    proc2 = msrs.get(0x48B, 0) if (msrs.get(0x482, 0) >> 63 & 1) else 0
    cap = msrs.get(0x48C, 0)
    if cap & M32 and not proc2 >> 33 & 1:
        out.append(
            "IA32_VMX_EPT_VPID_CAP (0x48c) reports EPT capabilities but 'enable EPT' cannot "
            'be set ("EPT CAP should not exist if not support 1-setting enable EPT")'
        )
    if cap >> 32 and not proc2 >> 37 & 1:
        out.append(
            "IA32_VMX_EPT_VPID_CAP (0x48c) reports VPID capabilities but 'enable VPID' cannot "
            'be set ("VPID CAP should not exist if not support 1-setting enable VPID")'
        )
    return out


def kvm_role(index: int, nested: bool) -> KvmRole:
    feed = KVM_FEEDS.get(index)
    if feed is None:
        return KvmRole(False, KVM_IGNORES.get(index, "not read by KVM"))
    if feed[0] == FEEDS_NESTED and not nested:
        return KvmRole(False, feed[2] + "; kvm_intel.nested=N on this host")
    return KvmRole(True, feed[2] + (" (kvm_intel.nested=1)" if feed[0] == FEEDS_NESTED else ""))
