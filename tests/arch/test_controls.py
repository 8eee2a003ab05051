"""Tests for vmxprobe.arch.controls: the VMX control tables and control_state(). Bit
positions are checked against Linux arch/x86/include/asm/vmxfeatures.h, which numbers
each VMX_FEATURE_* as word*32 + bit with word 0 the pin-based, word 1 the primary and
word 2 the secondary processor-based controls (SDM Vol. 3C 25.6.1 and 25.6.2)."""

import pytest

from vmxprobe.arch import controls

# asm/vmxfeatures.h: the features that sit at their control's own bit (word, bit).
# Word 0 bits 16 and up are synthetic (EPT/VPID, APIC aggregates, VM functions) and left out.
VMXFEATURES = {
    "VMX_FEATURE_INTR_EXITING": (0, 0),
    "VMX_FEATURE_NMI_EXITING": (0, 3),
    "VMX_FEATURE_VIRTUAL_NMIS": (0, 5),
    "VMX_FEATURE_PREEMPTION_TIMER": (0, 6),
    "VMX_FEATURE_POSTED_INTR": (0, 7),
    "VMX_FEATURE_INTR_WINDOW_EXITING": (1, 2),
    "VMX_FEATURE_USE_TSC_OFFSETTING": (1, 3),
    "VMX_FEATURE_HLT_EXITING": (1, 7),
    "VMX_FEATURE_CR3_LOAD_EXITING": (1, 15),
    "VMX_FEATURE_VIRTUAL_TPR": (1, 21),
    "VMX_FEATURE_MONITOR_TRAP_FLAG": (1, 27),
    "VMX_FEATURE_USE_MSR_BITMAPS": (1, 28),
    "VMX_FEATURE_SEC_CONTROLS": (1, 31),
    "VMX_FEATURE_VIRT_APIC_ACCESSES": (2, 0),
    "VMX_FEATURE_EPT": (2, 1),
    "VMX_FEATURE_VPID": (2, 5),
    "VMX_FEATURE_UNRESTRICTED_GUEST": (2, 7),
    "VMX_FEATURE_VIRT_INTR_DELIVERY": (2, 9),
    "VMX_FEATURE_VMFUNC": (2, 13),
    "VMX_FEATURE_SHADOW_VMCS": (2, 14),
    "VMX_FEATURE_PAGE_MOD_LOGGING": (2, 17),
    "VMX_FEATURE_XSAVES": (2, 20),
    "VMX_FEATURE_MODE_BASED_EPT_EXEC": (2, 22),
    "VMX_FEATURE_TSC_SCALING": (2, 25),
    "VMX_FEATURE_ENCLV_EXITING": (2, 28),
    "VMX_FEATURE_BUS_LOCK_DETECTION": (2, 30),
}
WORD = {"pinbased": 0, "procbased": 1, "procbased2": 2}


def by_name(table, name):
    return next(c for c in table.controls if c.name == name)


def test_control_tables_have_unique_bits_and_names():
    for table in controls.CONTROL_TABLES:
        bit_list = [c.bit for c in table.controls]
        names = [c.name for c in table.controls]
        assert len(set(bit_list)) == len(bit_list), table.group
        assert len(set(names)) == len(names), table.group


def test_feature_bits_agree_with_vmxfeatures_h():
    seen = set()
    for table in controls.CONTROL_TABLES:
        for c in table.controls:
            if c.feature in VMXFEATURES:
                assert (WORD.get(table.group), c.bit) == VMXFEATURES[c.feature], c.name
                seen.add(c.feature)
    assert seen == set(VMXFEATURES), "a vmxfeatures.h feature is missing from the tables"


@pytest.mark.parametrize(
    "table,name,bit,kernel",
    [
        # asm/vmx.h: the controls the kernel's vmcs_config and x86_vmx_init path lean on.
        (controls.PROCBASED, "activate_secondary_controls", 31, "CPU_BASED_ACTIVATE_SECONDARY_CONTROLS"),
        (controls.PROCBASED, "activate_tertiary_controls", 17, "CPU_BASED_ACTIVATE_TERTIARY_CONTROLS"),
        (controls.PROCBASED2, "enable_ept", 1, "SECONDARY_EXEC_ENABLE_EPT"),
        (controls.PROCBASED2, "enable_vpid", 5, "SECONDARY_EXEC_ENABLE_VPID"),
        (controls.PROCBASED2, "enable_vm_functions", 13, "SECONDARY_EXEC_ENABLE_VMFUNC"),
        (controls.PROCBASED3, "ipi_virtualization", 4, "TERTIARY_EXEC_IPI_VIRT"),
        (controls.EXIT, "host_address_space_size", 9, "VM_EXIT_HOST_ADDR_SPACE_SIZE"),
        (controls.EXIT, "load_ia32_efer", 21, "VM_EXIT_LOAD_IA32_EFER"),
        (controls.EXIT, "activate_secondary_controls", 31, "VM_EXIT_ACTIVATE_SECONDARY_CONTROLS"),
        (controls.ENTRY, "ia32e_mode_guest", 9, "VM_ENTRY_IA32E_MODE"),
        (controls.ENTRY, "load_ia32_efer", 15, "VM_ENTRY_LOAD_IA32_EFER"),
        (controls.VMFUNC, "eptp_switching", 0, "VMX_VMFUNC_EPTP_SWITCHING"),
    ],
)
def test_named_controls_sit_at_their_sdm_bit(table, name, bit, kernel):
    c = by_name(table, name)
    assert (c.bit, c.kernel) == (bit, kernel)


def test_control_bits_fit_their_field():
    # The pin-based, primary, VM-exit and VM-entry controls are 32-bit fields (A.3-A.5);
    # the tertiary, secondary VM-exit and VM-function controls are 64-bit.
    wide = {"procbased3", "exit2", "vmfunc"}
    for table in controls.CONTROL_TABLES:
        width = 64 if table.group in wide else 32
        assert all(0 <= c.bit < width for c in table.controls), table.group


def test_every_table_is_listed_once_with_its_group():
    groups = [t.group for t in controls.CONTROL_TABLES]
    assert groups == ["pinbased", "procbased", "procbased2", "procbased3", "exit", "exit2", "entry", "vmfunc"]


@pytest.mark.parametrize(
    "allowed0,allowed1,state",
    [
        # SDM A.3.1: allowed-0 bit set = VM entry fails if the control is 0 (must be 1);
        # allowed-1 bit clear = VM entry fails if the control is 1 (must be 0).
        (True, True, controls.ALWAYS_ON),
        (False, False, controls.ALWAYS_OFF),
        (False, True, controls.EITHER),
        (True, False, controls.INCONSISTENT),
    ],
)
def test_control_state(allowed0, allowed1, state):
    assert controls.control_state(allowed0, allowed1) == state
