"""Tests for vmxprobe.arch.fields: the IA32_VMX_MISC, IA32_VMX_EPT_VPID_CAP and
IA32_VMX_VMCS_ENUM field tables and the CR0/CR4 bit names. Positions are checked
against Linux arch/x86/include/asm/vmx.h and uapi/asm/processor-flags.h."""

import pytest

from vmxprobe.arch import fields
from vmxprobe.arch.vmx import field_bits


def by_name(table, name):
    return next(f for f in table if f.name == name)


@pytest.mark.parametrize("table", [fields.MISC_FIELDS, fields.EPT_VPID_FIELDS, fields.VMCS_ENUM_FIELDS])
def test_fields_do_not_overlap_and_fit_64_bits(table):
    taken: set[int] = set()
    for f in table:
        assert 0 <= f.lo <= f.hi < 64, f.name
        span = set(range(f.lo, f.hi + 1))
        assert not span & taken, f.name
        taken |= span


@pytest.mark.parametrize(
    "name,bit,kernel",
    [
        # asm/vmx.h: VMX_MISC_SAVE_EFER_LMA BIT_ULL(5) ... VMX_MISC_ZERO_LEN_INS BIT_ULL(30)
        ("store_efer_lma", 5, "VMX_MISC_SAVE_EFER_LMA"),
        ("activity_hlt", 6, "VMX_MISC_ACTIVITY_HLT"),
        ("activity_wait_for_sipi", 8, "VMX_MISC_ACTIVITY_WAIT_SIPI"),
        ("intel_pt_in_vmx", 14, "VMX_MISC_INTEL_PT"),
        ("vmwrite_any_field", 29, "VMX_MISC_VMWRITE_SHADOW_RO_FIELDS"),
        ("inject_zero_length", 30, "VMX_MISC_ZERO_LEN_INS"),
    ],
)
def test_misc_bits(name, bit, kernel):
    f = by_name(fields.MISC_FIELDS, name)
    assert (f.lo, f.hi, f.kernel) == (bit, bit, kernel)


def test_misc_multi_bit_fields_read_their_sdm_ranges():
    # A.6: bits 4:0 timer rate, 24:16 CR3-target count, 27:25 MSR-list code, 63:32 MSEG id.
    value = 0x12345678_00000000 | (3 << 25) | (4 << 16) | 5
    got = {f.name: field_bits(value, f.lo, f.hi) for f in fields.MISC_FIELDS if f.hi > f.lo}
    assert got == {
        "preemption_timer_rate": 5,
        "cr3_target_count": 4,
        "msr_list_size_code": 3,
        "mseg_revision": 0x12345678,
    }
    assert fields.MISC_MSR_LIST_MULTIPLIER == 512  # 512 * (N + 1) MSRs


@pytest.mark.parametrize(
    "name,bit",
    [
        # asm/vmx.h: VMX_EPT_EXECUTE_ONLY_BIT (1ull), VMX_EPT_PAGE_WALK_4_BIT (1ull << 6),
        # VMX_EPTP_WB_BIT (1ull << 14), VMX_EPT_1GB_PAGE_BIT (1ull << 17),
        # VMX_EPT_INVEPT_BIT (1ull << 20), VMX_EPT_AD_BIT (1ull << 21),
        # VMX_EPT_EXTENT_GLOBAL_BIT (1ull << 26).
        ("ept_execute_only", 0),
        ("ept_page_walk_length_4", 6),
        ("ept_memory_type_wb", 14),
        ("ept_1gb_pages", 17),
        ("invept", 20),
        ("ept_accessed_dirty", 21),
        ("invept_all_context", 26),
    ],
)
def test_ept_bits_in_the_low_dword(name, bit):
    f = by_name(fields.EPT_VPID_FIELDS, name)
    assert f.lo == f.hi == bit


@pytest.mark.parametrize(
    "name,kernel_shift",
    [
        # asm/vmx.h numbers the VPID bits within the high dword: VMX_VPID_INVVPID_BIT
        # (1ull << 0) /* (32 - 32) */ ... VMX_VPID_EXTENT_GLOBAL_CONTEXT_BIT (1ull << 10).
        ("invvpid", 0),
        ("invvpid_individual_address", 8),
        ("invvpid_single_context", 9),
        ("invvpid_all_context", 10),
        ("invvpid_single_context_retaining_globals", 11),
    ],
)
def test_vpid_bits_in_the_high_dword(name, kernel_shift):
    f = by_name(fields.EPT_VPID_FIELDS, name)
    assert f.lo == f.hi == 32 + kernel_shift


def test_vmcs_enum_highest_index_is_bits_9_to_1():
    (f,) = fields.VMCS_ENUM_FIELDS
    assert field_bits(0x2E, f.lo, f.hi) == 0x17  # 0x2e: index 0x17 (bit 0 reserved)


@pytest.mark.parametrize(
    "reg,bit,name",
    [
        # uapi/asm/processor-flags.h: X86_CR0_PE_BIT 0, X86_CR0_NE_BIT 5, X86_CR0_PG_BIT 31,
        # X86_CR4_VMXE_BIT 13, X86_CR4_SMXE_BIT 14, X86_CR4_LA57_BIT 12, X86_CR4_FRED_BIT 32.
        ("CR0", 0, "PE"),
        ("CR0", 5, "NE"),
        ("CR0", 31, "PG"),
        ("CR4", 12, "LA57"),
        ("CR4", 13, "VMXE"),
        ("CR4", 14, "SMXE"),
        ("CR4", 32, "FRED"),
    ],
)
def test_cr_bits(reg, bit, name):
    rows = {b: (n, k) for b, n, k in fields.CR_BITS[reg]}
    assert rows[bit] == (name, f"X86_{reg}_{name}")


def test_cr_bit_tables_are_unique_and_ordered():
    for reg, rows in fields.CR_BITS.items():
        bits = [b for b, _, _ in rows]
        assert bits == sorted(set(bits)), reg
