"""Tests for vmxprobe.arch.capabilities.  Values are built from SDM
bit positions (Vol. 3D Appendix A, Vol. 3C chapter 25 control tables), not copied from any
machine."""

import json

import pytest

from vmxprobe.arch import capabilities as caps


def ctl(allowed0=(), allowed1=()):
    """A 32/32 control-MSR value: low dword allowed-0 bits, high dword allowed-1 bits."""
    lo = sum(1 << b for b in allowed0)
    hi = sum(1 << b for b in allowed1)
    return hi << 32 | lo


def bits(*positions):
    return sum(1 << b for b in positions)


BASIC = (1 << 32) * 0x1000 | 0x4  # VMCS size 4096, revision 4, no TRUE controls
BASIC_TRUE = BASIC | caps.VMX_BASIC_TRUE_CTLS


# --- tables ---------------------------------------------------------------------------


def test_msr_table_covers_0x481_to_0x493_with_kernel_names():
    assert sorted(caps.MSRS) == list(range(0x481, 0x494))
    for _index, m in caps.MSRS.items():
        assert m.kernel == "MSR_" + m.name
        assert m.name.startswith("IA32_VMX_")
    assert caps.MSRS[0x492].kind == caps.KIND_ALLOWED1
    assert caps.MSRS[0x493].kind == caps.KIND_ALLOWED1
    assert caps.MSRS[0x48E].true_of == 0x482


# --- 32-bit control MSRs ----------------------------------------------------------------


def test_pinbased_states_from_allowed0_and_allowed1():
    # bit 0 must be 1, bit 3 must be 0, bit 5 flexible, bit 7 flexible.
    value = ctl(allowed0=[0], allowed1=[0, 5, 7])
    d = caps.decode(0x481, value)
    assert d["raw"] == f"0x{value:016x}"
    assert d["controls"]["external_interrupt_exiting"] == "always_on"
    assert d["controls"]["nmi_exiting"] == "always_off"
    assert d["controls"]["virtual_nmis"] == "either"
    assert d["controls"]["activate_vmx_preemption_timer"] == "always_off"
    assert d["controls"]["process_posted_interrupts"] == "either"
    assert d["allowed0"] == "0x00000001"
    assert d["allowed1"] == "0x000000a1"
    assert d["errors"] == []
    assert d["reserved"] == []


def test_inconsistent_control_is_an_error():
    # Allowed-0 says bit 6 must be 1, allowed-1 says it must be 0.
    d = caps.decode(0x481, ctl(allowed0=[6], allowed1=[0]))
    assert d["controls"]["activate_vmx_preemption_timer"] == "inconsistent"
    assert len(d["errors"]) == 1
    assert "bit 6" in d["errors"][0]
    assert "activate_vmx_preemption_timer" in d["errors"][0]


def test_default1_bits_of_plain_msr_reported_as_reserved():
    # SDM A.2: the pin-based default1 class is bits 1, 2 and 4.
    value = ctl(allowed0=[1, 2, 4], allowed1=[0, 1, 2, 3, 4, 5, 6, 7])
    d = caps.decode(0x481, value)
    assert d["reserved"] == [1, 2, 4, 33, 34, 36]
    assert d["reserved_controls"] == {"bit1": "always_on", "bit2": "always_on", "bit4": "always_on"}
    assert all(state == "either" for state in d["controls"].values())


def test_primary_and_secondary_named_bits():
    d = caps.decode(0x482, ctl(allowed1=[17, 21, 31]))
    assert d["controls"]["activate_tertiary_controls"] == "either"
    assert d["controls"]["use_tpr_shadow"] == "either"
    assert d["controls"]["activate_secondary_controls"] == "either"
    assert d["controls"]["hlt_exiting"] == "always_off"
    d2 = caps.decode(0x48B, ctl(allowed1=[1, 5, 13]))
    assert d2["controls"]["enable_ept"] == "either"
    assert d2["controls"]["enable_vpid"] == "either"
    assert d2["controls"]["enable_vm_functions"] == "either"
    assert d2["controls"]["unrestricted_guest"] == "always_off"


def test_reserved_control_bit_in_secondary_not_dropped():
    # Bit 29 of the secondary controls is not defined (SDM Table 25-7).
    d = caps.decode(0x48B, ctl(allowed1=[29]))
    assert d["reserved"] == [61]
    assert d["reserved_controls"] == {"bit29": "either"}


def test_exit_and_entry_controls():
    d = caps.decode(0x483, ctl(allowed0=[2], allowed1=[2, 9, 31]))
    assert d["controls"]["save_debug_controls"] == "always_on"
    assert d["controls"]["host_address_space_size"] == "either"
    assert d["controls"]["activate_secondary_controls"] == "either"
    e = caps.decode(0x484, ctl(allowed1=[9, 23]))
    assert e["controls"]["ia32e_mode_guest"] == "either"
    assert e["controls"]["load_ia32_fred"] == "either"
    assert e["controls"]["entry_to_smm"] == "always_off"


# --- 64-bit allowed-1 MSRs --------------------------------------------------------------


def test_tertiary_controls_are_allowed1_only():
    d = caps.decode(0x492, bits(4, 40))
    assert d["controls"]["ipi_virtualization"] == "either"
    assert d["controls"]["loadiwkey_exiting"] == "always_off"
    assert set(d["controls"].values()) <= {"either", "always_off"}
    assert d["reserved"] == [40]
    assert "allowed0" not in d


def test_secondary_exit_controls_and_vmfunc():
    d = caps.decode(0x493, bits(0, 1))
    assert d["controls"] == {"save_ia32_fred": "either", "load_ia32_fred": "either"}
    v = caps.decode(0x491, bits(0, 1))
    assert v["controls"]["eptp_switching"] == "either"
    assert v["reserved"] == [1]


# --- MISC, EPT/VPID, VMCS_ENUM, CR fixed --------------------------------------------------


def test_misc_fields():
    value = 5 | bits(5, 6, 8, 14, 28, 29) | 4 << 16 | 2 << 25 | 0x12345678 << 32
    f = caps.decode(0x485, value)["fields"]
    assert f["preemption_timer_rate"] == 5
    assert f["store_efer_lma"] is True
    assert f["activity_hlt"] is True
    assert f["activity_shutdown"] is False
    assert f["activity_wait_for_sipi"] is True
    assert f["activity_states"] == ["active", "hlt", "wait_for_sipi"]
    assert f["intel_pt_in_vmx"] is True
    assert f["rdmsr_smbase_in_smm"] is False
    assert f["cr3_target_count"] == 4
    assert f["max_msr_list_size"] == 1536
    assert f["smm_monitor_ctl_bit2"] is True
    assert f["vmwrite_any_field"] is True
    assert f["inject_zero_length"] is False
    assert f["mseg_revision"] == 0x12345678


def test_misc_field_boundaries():
    # CR3-target count is 9 bits wide (24:16); the MSR-list code is 3 bits (27:25).
    d = caps.decode(0x485, 0x100 << 16 | 7 << 25 | 0x1F)
    assert d["fields"]["cr3_target_count"] == 256
    assert d["fields"]["max_msr_list_size"] == 4096
    assert d["fields"]["preemption_timer_rate"] == 31
    assert d["reserved"] == []


def test_misc_reserved_bits_reported():
    d = caps.decode(0x485, bits(9, 13, 31))
    assert d["reserved"] == [9, 13, 31]
    assert d["fields"]["max_msr_list_size"] == 512


def test_ept_vpid_fields():
    value = bits(0, 6, 7, 8, 14, 16, 17, 20, 21, 22, 23, 25, 26, 32, 40, 41, 42, 43)
    d = caps.decode(0x48C, value)
    f = d["fields"]
    for name in (
        "ept_execute_only",
        "ept_page_walk_length_4",
        "ept_page_walk_length_5",
        "ept_memory_type_uc",
        "ept_memory_type_wb",
        "ept_2mb_pages",
        "ept_1gb_pages",
        "invept",
        "ept_accessed_dirty",
        "ept_advanced_exit_info",
        "ept_supervisor_shadow_stack",
        "invept_single_context",
        "invept_all_context",
        "invvpid",
        "invvpid_individual_address",
        "invvpid_single_context",
        "invvpid_all_context",
        "invvpid_single_context_retaining_globals",
    ):
        assert f[name] is True, name
    assert d["reserved"] == []
    g = caps.decode(0x48C, bits(1, 33))
    assert g["fields"]["invvpid"] is False
    assert g["fields"]["ept_execute_only"] is False
    assert g["reserved"] == [1, 33]


def test_vmcs_enum_highest_index():
    d = caps.decode(0x48A, 0x2E)
    assert d["fields"]["highest_index"] == 0x17
    assert d["reserved"] == []
    assert caps.decode(0x48A, 0x2F | 1 << 10)["reserved"] == [0, 10]


def test_cr0_fixed():
    d0 = caps.decode(0x486, 0x80000021)
    assert d0["fields"] == {"register": "CR0", "fixed_to_1": ["PE", "NE", "PG"]}
    d1 = caps.decode(0x487, 0xFFFFFFFF)
    assert d1["fields"]["fixed_to_0"] == []
    assert d1["fields"]["fixed_to_0_mask"] == "0xffffffff00000000"
    assert "CD" in d1["fields"]["may_be_1"]
    assert 6 in d1["reserved"] and 16 not in d1["reserved"]


def test_cr4_fixed_and_summary():
    fixed0 = bits(13)
    fixed1 = bits(*range(0, 11), 13, 14, 16, 17, 18, 20, 21, 22)
    assert caps.decode(0x488, fixed0)["fields"]["fixed_to_1"] == ["VMXE"]
    d1 = caps.decode(0x489, fixed1)
    assert "LA57" in d1["fields"]["fixed_to_0"]
    assert "FRED" in d1["fields"]["fixed_to_0"]
    assert "SMEP" not in d1["fields"]["fixed_to_0"]
    s = caps.cr_fixed_summary("CR4", fixed0, fixed1)
    assert s["fixed_to_1"] == ["VMXE"]
    assert "VMXE" not in s["flexible"] and "PAE" in s["flexible"]
    assert s["errors"] == []
    assert caps.cr_fixed_summary("CR4", bits(5), 0)["errors"] != []


def test_decode_is_json_ready_for_every_msr():
    for index in caps.MSRS:
        d = caps.decode(index, 0xFFFFFFFFFFFFFFFF)
        assert json.loads(json.dumps(d)) == d
        assert d["raw"] == "0xffffffffffffffff"


def test_decode_rejects_unknown_index():
    with pytest.raises(ValueError):
        caps.decode(0x480, 0)
    with pytest.raises(ValueError):
        caps.decode(0x494, 0)


# --- resolve_msr ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "0x48b",
        "0X48B",
        "1163",
        "IA32_VMX_PROCBASED_CTLS2",
        "MSR_IA32_VMX_PROCBASED_CTLS2",
        "PROCBASED_CTLS2",
        "procbased_ctls2",
        " msr_ia32_vmx_procbased_ctls2 ",
    ],
)
def test_resolve_msr_variants(text):
    assert caps.resolve_msr(text) == 0x48B


def test_resolve_msr_other_names():
    assert caps.resolve_msr("true_entry_ctls") == 0x490
    assert caps.resolve_msr("EXIT_CTLS2") == 0x493
    assert caps.resolve_msr("basic") == 0x480


@pytest.mark.parametrize("text", ["bogus", "0x10", "1000", "", "0x", "PROCBASED_CTLS9"])
def test_resolve_msr_errors(text):
    with pytest.raises(ValueError) as exc:
        caps.resolve_msr(text)
    msg = str(exc.value)
    assert "\n" not in msg
    assert "PROCBASED_CTLS2" in msg


# --- readable_msrs ----------------------------------------------------------------------


def test_readable_base_set_without_true_ctls():
    assert caps.readable_msrs({}, BASIC) == list(range(0x481, 0x48B))


def test_readable_true_msrs_follow_basic_bit55():
    assert set(range(0x48D, 0x491)) <= set(caps.readable_msrs({}, BASIC_TRUE))
    assert not set(range(0x48D, 0x491)) & set(caps.readable_msrs({}, BASIC))


def test_readable_no_vmx():
    assert caps.readable_msrs({0x482: ctl(allowed1=[31])}, 0) == []


def test_readable_procbased2_needs_activate_secondary():
    assert 0x48B in caps.readable_msrs({0x482: ctl(allowed1=[31])}, BASIC)
    assert 0x48B not in caps.readable_msrs({0x482: ctl(allowed1=[30])}, BASIC)
    assert 0x48B not in caps.readable_msrs({}, BASIC)


def test_readable_procbased3_needs_activate_tertiary():
    assert 0x492 in caps.readable_msrs({0x482: ctl(allowed1=[17])}, BASIC)
    assert 0x492 not in caps.readable_msrs({0x482: ctl(allowed1=[31])}, BASIC)


@pytest.mark.parametrize("sec_bit", [1, 5])
def test_readable_ept_vpid_cap_needs_ept_or_vpid(sec_bit):
    msrs = {0x482: ctl(allowed1=[31]), 0x48B: ctl(allowed1=[sec_bit])}
    assert 0x48C in caps.readable_msrs(msrs, BASIC)


def test_readable_ept_vpid_cap_absent_without_ept_and_vpid():
    msrs = {0x482: ctl(allowed1=[31]), 0x48B: ctl(allowed1=[0, 7, 13])}
    assert 0x48C not in caps.readable_msrs(msrs, BASIC)
    # An allowed-0 (low dword) EPT bit is not the allowed-1 setting the rule asks for.
    assert 0x48C not in caps.readable_msrs({0x482: ctl(allowed1=[31]), 0x48B: ctl(allowed0=[1])}, BASIC)


def test_readable_dependent_msrs_need_procbased2_to_exist():
    # A stray 0x48B value is ignored when 0x482 says there are no secondary controls.
    msrs = {0x482: ctl(allowed1=[30]), 0x48B: ctl(allowed1=[1, 5, 13])}
    out = caps.readable_msrs(msrs, BASIC)
    assert 0x48C not in out and 0x491 not in out


def test_readable_vmfunc_needs_enable_vm_functions():
    yes = {0x482: ctl(allowed1=[31]), 0x48B: ctl(allowed1=[13])}
    no = {0x482: ctl(allowed1=[31]), 0x48B: ctl(allowed1=[1])}
    assert 0x491 in caps.readable_msrs(yes, BASIC)
    assert 0x491 not in caps.readable_msrs(no, BASIC)


def test_readable_exit_ctls2_needs_activate_secondary_exit():
    assert 0x493 in caps.readable_msrs({0x483: ctl(allowed1=[31])}, BASIC)
    assert 0x493 not in caps.readable_msrs({0x483: ctl(allowed1=[30])}, BASIC)


# --- effective_controls -----------------------------------------------------------------

PROC_PLAIN = ctl(allowed0=[1, 4, 5, 6, 8, 13, 14, 15, 16, 26], allowed1=range(32))
PROC_TRUE = ctl(allowed0=[1, 4, 5, 6, 8, 13, 14, 26], allowed1=range(32))


def test_effective_controls_uses_true_msr_when_bit55():
    msrs = {0x482: PROC_PLAIN, 0x48E: PROC_TRUE, 0x481: ctl(allowed1=[0])}
    eff = caps.effective_controls(msrs, True)
    assert eff["procbased"]["index"] == "0x48e"
    assert eff["procbased"]["controls"]["cr3_load_exiting"] == "either"
    # No TRUE pin-based MSR was read: falls back to the plain one.
    assert eff["pinbased"]["index"] == "0x481"
    assert "exit" not in eff


def test_effective_controls_uses_plain_msr_without_bit55():
    msrs = {0x482: PROC_PLAIN, 0x48E: PROC_TRUE}
    eff = caps.effective_controls(msrs, False)
    assert eff["procbased"]["index"] == "0x482"
    assert eff["procbased"]["controls"]["cr3_load_exiting"] == "always_on"


def test_effective_controls_includes_allowed1_groups():
    eff = caps.effective_controls({0x492: bits(4), 0x493: bits(0)}, True)
    assert eff["procbased3"]["controls"]["ipi_virtualization"] == "either"
    assert eff["exit2"]["controls"]["save_ia32_fred"] == "either"
