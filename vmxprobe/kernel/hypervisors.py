"""Who made the VMX values up. A hypervisor that offers VMX to its guest presents
capability MSRs of its own choosing; some are recognisable by value (KVM's nested VMX),
the others by the hypervisor's CPUID signature. And whether kvm_intel in a Hyper-V
guest would use the enlightened VMCS (arch/x86/kvm/vmx/hyperv_evmcs.c hv_init_evmcs())."""

from __future__ import annotations

from dataclasses import dataclass

from vmxprobe.arch.cpuid import (
    EAX,
    HV_CPUID_ENLIGHTMENT_INFO,
    HV_CPUID_NESTED_FEATURES,
    HV_ENLIGHTENED_VMCS_RECOMMENDED,
)
from vmxprobe.host.sources import Regs

KVM_VMCS12_REVISION = 0x11E57ED0  # arch/x86/kvm/vmx/vmcs12.h VMCS12_REVISION: what L1 sees
KVM_EVMCS_VERSION = 1  # arch/x86/kvm/vmx/hyperv_evmcs.h KVM_EVMCS_VERSION
REVISION_MASK = 0x7FFFFFFF  # IA32_VMX_BASIC bits 30:0

# What is known of each hypervisor that can expose VMX to a guest.  Only KVM's revision
# identifier is a published constant; the others are recognised by their CPUID signature.
HYPERVISOR_VMX = {
    "KVM": "KVM nested VMX (kvm_intel.nested=1): nested_vmx_setup_ctls_msrs() builds the "
    "values from the host's own vmcs_config, so they follow the host CPU",
    "Hyper-V": "Hyper-V nested virtualization: the guest sees the host's capabilities as "
    "Hyper-V filters them; with the enlightened VMCS recommended, kvm_intel uses "
    "eVMCS v1 (KVM_EVMCS_VERSION) for its VMCSs and drops the controls eVMCS v1 "
    "lacks (evmcs_sanitize_exec_ctrls())",
    "VMware": "VMware virtualized HV (vhv.enable): values chosen by the VMware VMM; no "
    "published revision identifier to check them against",
    "VirtualBox": "VirtualBox nested VT-x (--nested-hw-virt on): values chosen by "
    "VirtualBox's CPUM; no published revision identifier to check them against",
    "Xen": "Xen nested HVM (nestedhvm=1): values chosen by Xen's vvmx; no published "
    "revision identifier to check them against",
    "ACRN": "ACRN nested VMX: values chosen by the ACRN hypervisor",
}


@dataclass(frozen=True)
class Evmcs:
    """What Hyper-V offers of the enlightened VMCS, and whether kvm_intel takes it."""

    recommended: bool
    version_low: int | None
    version_high: int | None
    kvm_uses_evmcs: bool


@dataclass(frozen=True)
class Synthetic:
    """VMX capabilities a hypervisor presents: by whom, and what that means."""

    by: str
    how: str
    evmcs: Evmcs | None = None


def is_kvm_nested(basic: int | None) -> bool:
    """Does IA32_VMX_BASIC carry KVM's VMCS12_REVISION?"""
    return bool(basic) and (basic or 0) & REVISION_MASK == KVM_VMCS12_REVISION


def synthetic_vmx(
    basic: int | None, hypervisor: str | None, hv_leaves: dict[int, Regs] | None = None
) -> Synthetic | None:
    """Recognise VMX capabilities a hypervisor made up.  None on bare metal (no hypervisor
    and no known synthetic revision)."""
    hv_leaves = hv_leaves or {}
    if basic is not None and basic & REVISION_MASK == KVM_VMCS12_REVISION:
        by, how = (
            "KVM",
            (
                f"IA32_VMX_BASIC revision 0x{KVM_VMCS12_REVISION:x} is KVM's "
                f"VMCS12_REVISION: {HYPERVISOR_VMX['KVM']}"
            ),
        )
    elif hypervisor:
        by, how = (
            hypervisor,
            HYPERVISOR_VMX.get(hypervisor, f"values presented by {hypervisor}, not the hardware's"),
        )
    else:
        return None
    hint = hv_leaves.get(HV_CPUID_ENLIGHTMENT_INFO)
    nested = hv_leaves.get(HV_CPUID_NESTED_FEATURES)
    evmcs = None
    if hint is not None:
        recommended = bool(hint[EAX] & HV_ENLIGHTENED_VMCS_RECOMMENDED)
        low = nested[EAX] & 0xFF if nested is not None else None
        high = nested[EAX] >> 8 & 0xFF if nested is not None else None
        # hv_init_evmcs(): KVM uses eVMCS when it is recommended and the field it masks
        # with HV_X64_ENLIGHTENED_VMCS_VERSION (0xff: bits 7:0, the lowest version
        # offered) is at least KVM_EVMCS_VERSION.
        usable = recommended and low is not None and low >= KVM_EVMCS_VERSION
        evmcs = Evmcs(recommended, low, high, usable)
    return Synthetic(by, how, evmcs)
