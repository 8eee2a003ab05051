"""Tests for vmxprobe.arch.vmx: IA32_VMX_BASIC (SDM Vol. 3D A.1: revision id bits 30:0,
VMCS size bits 44:32, memory type bits 53:50) and IA32_FEATURE_CONTROL (SDM Vol. 4,
MSR 0x3a: lock bit 0, VMX inside SMX bit 1, outside SMX bit 2) decoded from published
and kernel-defined values."""

import pytest

from vmxprobe.arch import vmx
from vmxprobe.kernel.hypervisors import KVM_VMCS12_REVISION


def test_vmx_basic_published_skylake_value():
    d = vmx.decode_vmx_basic(0x00DA040000000004).fields()
    assert d["raw"] == "0x00da040000000004"
    assert d["revision_id"] == 4
    assert d["vmcs_size"] == 1024
    assert d["memory_type"] == 6 and d["memory_type_name"] == "WB"
    assert d["ins_outs"] is True and d["true_controls"] is True
    assert d["phys_addr_32bit"] is False and d["dual_monitor"] is True  # 0xda: bit 49 set
    assert d["no_hw_error_code_cc"] is False and d["no_seamret_invd_vmcs"] is False
    assert d["reserved"] == []


def test_vmx_basic_kvm_nested():
    d = vmx.decode_vmx_basic(0x00D8100011E57ED0).fields()
    assert d["revision_id"] == KVM_VMCS12_REVISION
    assert d["vmcs_size"] == 4096


@pytest.mark.parametrize(
    "bit,field",
    [
        (48, "phys_addr_32bit"),
        (49, "dual_monitor"),
        (54, "ins_outs"),
        (55, "true_controls"),
        (56, "no_hw_error_code_cc"),
        (58, "nested_exception"),
        (60, "no_seamret_invd_vmcs"),
    ],
)
def test_vmx_basic_single_bits(bit, field):
    d = vmx.decode_vmx_basic(1 << bit).fields()
    assert d[field] is True
    others = {
        "phys_addr_32bit",
        "dual_monitor",
        "ins_outs",
        "true_controls",
        "no_hw_error_code_cc",
        "nested_exception",
        "no_seamret_invd_vmcs",
    } - {field}
    assert not any(d[o] for o in others)


def test_vmx_basic_field_widths():
    d = vmx.decode_vmx_basic((0x1FFF << 32) | 0x7FFFFFFF | (0xF << 50)).fields()
    assert d["vmcs_size"] == 8191  # 13-bit field, may exceed a page
    assert d["revision_id"] == 0x7FFFFFFF  # bits 30:0 only
    assert d["memory_type"] == 15 and d["memory_type_name"] == "reserved"


def test_vmx_basic_reserved_bits_reported_not_dropped():
    value = (1 << 31) | (1 << 45) | (1 << 47) | (1 << 57) | (1 << 59) | (1 << 63)
    d = vmx.decode_vmx_basic(value).fields()
    assert d["reserved"] == [31, 45, 47, 57, 59, 63]
    assert d["revision_id"] == 0


@pytest.mark.parametrize(
    "value,state",
    [
        (0x0, "unlocked"),
        (0x4, "unlocked"),
        (0x1, "disabled_locked"),
        (0x3, "disabled_locked"),
        (0x5, "enabled_locked"),
        (0x7, "enabled_locked"),
    ],
)
def test_feature_control_states(value, state):
    assert vmx.decode_feature_control(value).fields()["state"] == state


def test_feature_control_fields():
    d = vmx.decode_feature_control(
        (1 << 0) | (1 << 1) | (0x7F << 8) | (1 << 15) | (1 << 17) | (1 << 18) | (1 << 20)
    ).fields()
    assert d["locked"] and d["vmx_inside_smx"] and not d["vmx_outside_smx"]
    assert d["senter_local_functions"] == 0x7F and d["senter_global_enable"]
    assert d["sgx_launch_control"] and d["sgx_enabled"] and d["lmce_enabled"]
    assert d["raw"] == "0x000000000016ff03"
