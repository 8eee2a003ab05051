"""CPUID: the vendor string, the display family/model/stepping, the feature bits that say
whether a CPU has VMX, and the hypervisor signature leaf (Intel SDM Vol. 2A "CPUID")."""

from __future__ import annotations

from typing import NamedTuple

# CPUID, SDM Vol. 2A "CPUID": leaf 0 vendor; leaf 1 signature and feature bits;
# leaf 0x40000000 the hypervisor's vendor signature (reserved range for hypervisors).
CPUID_VMX_BIT = 5  # CPUID.01H:ECX[5] VMX (X86_FEATURE_VMX)
CPUID_SMX_BIT = 6  # CPUID.01H:ECX[6] SMX
CPUID_HYPERVISOR_BIT = 31  # CPUID.01H:ECX[31] "hypervisor present" (X86_FEATURE_HYPERVISOR)
CPUID_HV_LEAF = 0x40000000
EAX, EBX, ECX, EDX = 0, 1, 2, 3  # positions in a CPUID result
AMD_VENDORS = ("AuthenticAMD", "HygonGenuine")  # the vendors with SVM (AMD-V)

# Hyper-V TLFS (asm/hyperv-tlfs.h): CPUID 0x40000004 EAX bit 14 recommends the
# enlightened VMCS; CPUID 0x4000000A EAX bits 7:0 / 15:8 give the lowest / highest
# eVMCS version the hypervisor supports (the range KVM itself offers as
# (KVM_EVMCS_VERSION << 8) | 1: nested_get_evmcs_version(), arch/x86/kvm/vmx/hyperv.c).
HV_CPUID_ENLIGHTMENT_INFO = 0x40000004
HV_CPUID_NESTED_FEATURES = 0x4000000A
HV_ENLIGHTENED_VMCS_RECOMMENDED = 1 << 14
HV_SIGNATURE_HYPERV = "Hyper-V"

HYPERVISOR_SIGNATURES = {
    "KVMKVMKVM\0\0\0": "KVM",
    "Microsoft Hv": "Hyper-V",
    "VMwareVMware": "VMware",
    "XenVMMXenVMM": "Xen",
    "VBoxVBoxVBox": "VirtualBox",
    "TCGTCGTCGTCG": "QEMU TCG",
    "ACRNACRNACRN": "ACRN",
    "bhyve bhyve ": "bhyve",
    " lrpepyh  vr": "Parallels",
    "QNXQVMBSQG\0\0": "QNX",
    "Jailhouse\0\0\0": "Jailhouse",
}


def _regs_text(*regs: int) -> str:
    return b"".join(r.to_bytes(4, "little") for r in regs).decode("latin-1")


def cpuid_vendor(leaf0: tuple[int, int, int, int]) -> str:
    _, ebx, ecx, edx = leaf0
    return _regs_text(ebx, edx, ecx).rstrip("\0")


def cpuid_signature(eax: int) -> dict[str, int]:
    """Display family/model/stepping from CPUID.01H:EAX (SDM Vol. 2A Figure 3-6)."""
    stepping = eax & 0xF
    model = (eax >> 4) & 0xF
    family = (eax >> 8) & 0xF
    ext_model = (eax >> 16) & 0xF
    ext_family = (eax >> 20) & 0xFF
    display_family = family + ext_family if family == 0xF else family
    display_model = model | (ext_model << 4) if family in (0x6, 0xF) else model
    return {"family": display_family, "model": display_model, "stepping": stepping}


def hypervisor_name(leaf: tuple[int, int, int, int]) -> str | None:
    _, ebx, ecx, edx = leaf
    sig = _regs_text(ebx, ecx, edx)
    return HYPERVISOR_SIGNATURES.get(sig) or (sig.rstrip("\0").strip() or None)


def bit(value: int, n: int) -> bool:
    return bool(value >> n & 1)


# CPUID leaves beyond 0 and 1 that the kernel model needs (SDM Vol. 2A "CPUID"; AMD APM
# Vol. 3 E.4): structured extended features, SGX capabilities, the extended range.
LEAF_STRUCTURED = 0x07  # subleaf 0: EBX/ECX/EDX features; EAX = highest subleaf
LEAF_SGX = 0x12  # subleaf 0: EAX[0] SGX1
LEAF_EXT_MAX = 0x80000000  # EAX = highest extended leaf
LEAF_EXT_FEATURES = 0x80000001  # ECX[2] SVM (AMD)


class CpuFeature(NamedTuple):
    """A CPU feature as the kernel names it (asm/cpufeatures.h X86_FEATURE_*), where CPUID
    reports it, and the name /proc/cpuinfo prints for it (None: not printed)."""

    feature: str
    leaf: int
    subleaf: int
    reg: int
    bit: int
    cpuinfo: str | None


# The features behind the CR4 bits KVM treats as reserved when a CPU lacks them
# (arch/x86/kvm/x86.h __cr4_reserved_bits()).
XSAVE = CpuFeature("XSAVE", 1, 0, ECX, 26, "xsave")
PCID = CpuFeature("PCID", 1, 0, ECX, 17, "pcid")
VMX = CpuFeature("VMX", 1, 0, ECX, 5, "vmx")
FSGSBASE = CpuFeature("FSGSBASE", 7, 0, EBX, 0, "fsgsbase")
SMEP = CpuFeature("SMEP", 7, 0, EBX, 7, "smep")
SMAP = CpuFeature("SMAP", 7, 0, EBX, 20, "smap")
UMIP = CpuFeature("UMIP", 7, 0, ECX, 2, "umip")
PKU = CpuFeature("PKU", 7, 0, ECX, 3, "pku")
SHSTK = CpuFeature("SHSTK", 7, 0, ECX, 7, None)  # not printed ("user_shstk" is another flag)
LA57 = CpuFeature("LA57", 7, 0, ECX, 16, "la57")
IBT = CpuFeature("IBT", 7, 0, EDX, 20, "ibt")
LAM = CpuFeature("LAM", 7, 1, EAX, 26, "lam")
SVM = CpuFeature("SVM", LEAF_EXT_FEATURES, 0, ECX, 2, "svm")
