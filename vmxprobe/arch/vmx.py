"""IA32_VMX_BASIC and IA32_FEATURE_CONTROL: indexes, fields and decoders. Tables are data;
each field names its source (Intel SDM Vol. 3D Appendix A.1 and Vol. 4 MSR tables; Linux
asm/vmx.h, msr-index.h)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

MSR_IA32_FEAT_CTL = 0x3A  # SDM Vol. 4 Table 2-2 "IA32_FEATURE_CONTROL"
MSR_IA32_VMX_BASIC = 0x480  # SDM Vol. 3D A.1 "Basic VMX Information"

M32 = (1 << 32) - 1  # a register's low or high dword
M64 = (1 << 64) - 1  # a 64-bit MSR
PAGE_SIZE = 4096  # x86 PAGE_SIZE: the root VMCS is one order-0 page
VMX_BASIC_MEM_TYPE_WB = 6  # asm/vmx.h VMX_BASIC_MEM_TYPE_WB (SDM Vol. 3A Table 12-8 / A.1)


class Field(NamedTuple):
    name: str  # report key
    lo: int
    hi: int
    kernel: str | None  # Linux name (None where Linux has none)
    sdm: str  # where the SDM defines it


def field_bits(value: int, lo: int, hi: int) -> int:
    """Bits hi:lo of value, as an int."""
    return (value >> lo) & ((1 << (hi - lo + 1)) - 1)


# IA32_VMX_BASIC, SDM Vol. 3D A.1. Bit 31 is always 0; 45-47, 57, 59, 61-63 reserved.
VMX_BASIC_FIELDS = (
    Field("revision_id", 0, 30, "vmx_basic_vmcs_revision_id()", "A.1 bits 30:0 VMCS revision identifier"),
    Field(
        "vmcs_size", 32, 44, "vmx_basic_vmcs_size()", "A.1 bits 44:32 bytes for the VMXON region and a VMCS"
    ),
    Field(
        "phys_addr_32bit",
        48,
        48,
        "VMX_BASIC_32BIT_PHYS_ADDR_ONLY",
        "A.1 bit 48 VMXON/VMCS addresses limited to 32 bits",
    ),
    Field(
        "dual_monitor",
        49,
        49,
        "VMX_BASIC_DUAL_MONITOR_TREATMENT",
        "A.1 bit 49 dual-monitor treatment of SMI and SMM",
    ),
    Field("memory_type", 50, 53, "vmx_basic_vmcs_mem_type()", "A.1 bits 53:50 memory type for VMCS access"),
    Field("ins_outs", 54, 54, "VMX_BASIC_INOUT", "A.1 bit 54 VM-exit information for INS/OUTS"),
    Field("true_controls", 55, 55, "VMX_BASIC_TRUE_CTLS", "A.1 bit 55 IA32_VMX_TRUE_*_CTLS exist"),
    Field(
        "no_hw_error_code_cc",
        56,
        56,
        "VMX_BASIC_NO_HW_ERROR_CODE_CC",
        "A.1 bit 56 VM entry may deliver a HW exception without error code",
    ),
    Field(
        "nested_exception", 58, 58, "VMX_BASIC_NESTED_EXCEPTION", "A.1 bit 58 nested-exception support (FRED)"
    ),
    Field(
        "no_seamret_invd_vmcs",
        60,
        60,
        "(TDX: seamret_invd_vmcs erratum when clear)",
        "A.1 bit 60 SEAMRET from P-SEAMLDR keeps the current VMCS",
    ),
)
_BOOL_FIELDS = {
    "phys_addr_32bit",
    "dual_monitor",
    "ins_outs",
    "true_controls",
    "no_hw_error_code_cc",
    "nested_exception",
    "no_seamret_invd_vmcs",
}
VMX_BASIC_RESERVED_MASK = (1 << 31) | (0x7 << 45) | (1 << 57) | (1 << 59) | (0x7 << 61)

MEMORY_TYPES = {0: "UC", 6: "WB"}  # SDM A.1: "The values 1-5 and 7-15 are not used"


def _u64(value: int) -> int:
    """A register value: an int in 0 .. 2**64 - 1, else TypeError or ValueError."""
    if not isinstance(value, int):
        raise TypeError(f"a register value is an int, not {type(value).__name__}")
    if not 0 <= value < 1 << 64:
        raise ValueError(f"{value:#x} is not a 64-bit register value")
    return value


@dataclass(frozen=True)
class VmxBasic:
    """IA32_VMX_BASIC decoded: one attribute per field of VMX_BASIC_FIELDS."""

    value: int
    revision_id: int
    vmcs_size: int
    phys_addr_32bit: bool
    dual_monitor: bool
    memory_type: int
    ins_outs: bool
    true_controls: bool
    no_hw_error_code_cc: bool
    nested_exception: bool
    no_seamret_invd_vmcs: bool

    @property
    def raw(self) -> str:
        return f"0x{self.value:016x}"

    @property
    def memory_type_name(self) -> str:
        return MEMORY_TYPES.get(self.memory_type, "reserved")

    @property
    def reserved(self) -> list[int]:
        """Reserved bits that are set (reported, never dropped)."""
        return [b for b in range(64) if VMX_BASIC_RESERVED_MASK >> b & 1 and self.value >> b & 1]

    def fields(self) -> dict[str, Any]:
        """raw, every field by its report key, memory_type_name and reserved, in that order."""
        out: dict[str, Any] = {"raw": self.raw}
        out.update((f.name, getattr(self, f.name)) for f in VMX_BASIC_FIELDS)
        out["memory_type_name"] = self.memory_type_name
        out["reserved"] = self.reserved
        return out


def decode_vmx_basic(value: int) -> VmxBasic:
    value = _u64(value)
    fields: dict[str, Any] = {
        f.name: (bool if f.name in _BOOL_FIELDS else int)(field_bits(value, f.lo, f.hi))
        for f in VMX_BASIC_FIELDS
    }
    return VmxBasic(
        value,
        **fields,
    )


# IA32_FEATURE_CONTROL, SDM Vol. 4 Table 2-2; Linux FEAT_CTL_* in msr-index.h.
FEAT_CTL_LOCKED = 1 << 0
FEAT_CTL_VMX_ENABLED_INSIDE_SMX = 1 << 1
FEAT_CTL_VMX_ENABLED_OUTSIDE_SMX = 1 << 2
FEATURE_CONTROL_FIELDS = (
    Field("locked", 0, 0, "FEAT_CTL_LOCKED", "bit 0 lock"),
    Field("vmx_inside_smx", 1, 1, "FEAT_CTL_VMX_ENABLED_INSIDE_SMX", "bit 1 enable VMX inside SMX operation"),
    Field(
        "vmx_outside_smx", 2, 2, "FEAT_CTL_VMX_ENABLED_OUTSIDE_SMX", "bit 2 enable VMX outside SMX operation"
    ),
    Field("senter_local_functions", 8, 14, "(none)", "bits 14:8 SENTER local function enables"),
    Field("senter_global_enable", 15, 15, "(none)", "bit 15 SENTER global enable"),
    Field("sgx_launch_control", 17, 17, "FEAT_CTL_SGX_LC_ENABLED", "bit 17 SGX launch control enable"),
    Field("sgx_enabled", 18, 18, "FEAT_CTL_SGX_ENABLED", "bit 18 SGX global enable"),
    Field("lmce_enabled", 20, 20, "FEAT_CTL_LMCE_ENABLED", "bit 20 LMCE on"),
)

# States of the VMX enable as init_ia32_feat_ctl() (arch/x86/kernel/cpu/feat_ctl.c) sees it.
FC_ENABLED = "enabled_locked"  # locked with VMX on outside SMX
FC_DISABLED = "disabled_locked"  # locked with VMX off: firmware, or a kernel without KVM_INTEL
FC_UNLOCKED = "unlocked"  # the kernel locks it at boot, with VMX on if built with KVM_INTEL


@dataclass(frozen=True)
class FeatureControl:
    """IA32_FEATURE_CONTROL decoded: one attribute per field of FEATURE_CONTROL_FIELDS."""

    value: int
    locked: bool
    vmx_inside_smx: bool
    vmx_outside_smx: bool
    senter_local_functions: int
    senter_global_enable: bool
    sgx_launch_control: bool
    sgx_enabled: bool
    lmce_enabled: bool

    @property
    def raw(self) -> str:
        return f"0x{self.value:016x}"

    @property
    def state(self) -> str:
        if not self.locked:
            return FC_UNLOCKED
        return FC_ENABLED if self.vmx_outside_smx else FC_DISABLED

    def fields(self) -> dict[str, Any]:
        """raw, every field by its report key, and state, in that order."""
        out: dict[str, Any] = {"raw": self.raw}
        out.update((f.name, getattr(self, f.name)) for f in FEATURE_CONTROL_FIELDS)
        out["state"] = self.state
        return out


def decode_feature_control(value: int) -> FeatureControl:
    value = _u64(value)
    fields: dict[str, Any] = {
        f.name: (int if f.hi > f.lo else bool)(field_bits(value, f.lo, f.hi)) for f in FEATURE_CONTROL_FIELDS
    }
    return FeatureControl(value, **fields)
