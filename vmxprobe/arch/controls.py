"""The VMX controls, as the SDM defines them: one table per control field, each row with
its bit, its SDM name and what Linux calls it.

* Intel SDM Vol. 3C chapter 25 "Virtual Machine Control Structures": section 25.6.1
  Table 25-5 pin-based, 25.6.2 Tables 25-6/25-7/25-8 primary/secondary/tertiary
  processor-based, 25.6.14 VM-function, 25.7.1 primary and secondary VM-exit, 25.8.1
  VM-entry.  SDM editions before 2023 number that chapter 24 (Table 24-5 ...); the
  section structure is the same.
* Linux arch/x86/include/asm/vmx.h (PIN_BASED_*, CPU_BASED_*, SECONDARY_EXEC_*,
  TERTIARY_EXEC_*, VM_EXIT_*, SECONDARY_VM_EXIT_*, VM_ENTRY_*) and asm/vmxfeatures.h
  (VMX_FEATURE_*).

A control that the SDM defines but Linux does not name has kernel=None.
"""

from __future__ import annotations

from typing import NamedTuple

# Control states.  A.3-A.5: the low dword is the allowed-0 settings (a set bit means VM
# entry fails if the control is 0), the high dword the allowed-1 settings (a clear bit
# means VM entry fails if the control is 1).  "inconsistent" is the impossible pair
# (must be 1 and must be 0): decode() also lists it under "errors".
ALWAYS_ON = "always_on"
ALWAYS_OFF = "always_off"
EITHER = "either"
INCONSISTENT = "inconsistent"


class Control(NamedTuple):
    bit: int
    name: str  # report key: the SDM name, snake_case
    kernel: str | None  # asm/vmx.h macro for the bit, None if Linux has none
    feature: str | None  # asm/vmxfeatures.h VMX_FEATURE_* name, if any


class ControlTable(NamedTuple):
    group: str  # key used by effective_controls()
    title: str
    sdm: str
    controls: tuple[Control, ...]


C = Control

# SDM Vol. 3C 25.6.1, Table 25-5 "Definitions of Pin-Based VM-Execution Controls".
PINBASED = ControlTable(
    "pinbased",
    "pin-based VM-execution controls",
    "SDM Vol. 3C 25.6.1 Table 25-5",
    (
        C(0, "external_interrupt_exiting", "PIN_BASED_EXT_INTR_MASK", "VMX_FEATURE_INTR_EXITING"),
        C(3, "nmi_exiting", "PIN_BASED_NMI_EXITING", "VMX_FEATURE_NMI_EXITING"),
        C(5, "virtual_nmis", "PIN_BASED_VIRTUAL_NMIS", "VMX_FEATURE_VIRTUAL_NMIS"),
        C(
            6,
            "activate_vmx_preemption_timer",
            "PIN_BASED_VMX_PREEMPTION_TIMER",
            "VMX_FEATURE_PREEMPTION_TIMER",
        ),
        C(7, "process_posted_interrupts", "PIN_BASED_POSTED_INTR", "VMX_FEATURE_POSTED_INTR"),
    ),
)

# SDM Vol. 3C 25.6.2, Table 25-6 "Definitions of Primary Processor-Based VM-Execution Controls".
PROCBASED = ControlTable(
    "procbased",
    "primary processor-based VM-execution controls",
    "SDM Vol. 3C 25.6.2 Table 25-6",
    (
        C(2, "interrupt_window_exiting", "CPU_BASED_INTR_WINDOW_EXITING", "VMX_FEATURE_INTR_WINDOW_EXITING"),
        C(3, "use_tsc_offsetting", "CPU_BASED_USE_TSC_OFFSETTING", "VMX_FEATURE_USE_TSC_OFFSETTING"),
        C(7, "hlt_exiting", "CPU_BASED_HLT_EXITING", "VMX_FEATURE_HLT_EXITING"),
        C(9, "invlpg_exiting", "CPU_BASED_INVLPG_EXITING", "VMX_FEATURE_INVLPG_EXITING"),
        C(10, "mwait_exiting", "CPU_BASED_MWAIT_EXITING", "VMX_FEATURE_MWAIT_EXITING"),
        C(11, "rdpmc_exiting", "CPU_BASED_RDPMC_EXITING", "VMX_FEATURE_RDPMC_EXITING"),
        C(12, "rdtsc_exiting", "CPU_BASED_RDTSC_EXITING", "VMX_FEATURE_RDTSC_EXITING"),
        C(15, "cr3_load_exiting", "CPU_BASED_CR3_LOAD_EXITING", "VMX_FEATURE_CR3_LOAD_EXITING"),
        C(16, "cr3_store_exiting", "CPU_BASED_CR3_STORE_EXITING", "VMX_FEATURE_CR3_STORE_EXITING"),
        C(
            17,
            "activate_tertiary_controls",
            "CPU_BASED_ACTIVATE_TERTIARY_CONTROLS",
            "VMX_FEATURE_TERTIARY_CONTROLS",
        ),
        C(19, "cr8_load_exiting", "CPU_BASED_CR8_LOAD_EXITING", "VMX_FEATURE_CR8_LOAD_EXITING"),
        C(20, "cr8_store_exiting", "CPU_BASED_CR8_STORE_EXITING", "VMX_FEATURE_CR8_STORE_EXITING"),
        C(21, "use_tpr_shadow", "CPU_BASED_TPR_SHADOW", "VMX_FEATURE_VIRTUAL_TPR"),
        C(22, "nmi_window_exiting", "CPU_BASED_NMI_WINDOW_EXITING", "VMX_FEATURE_NMI_WINDOW_EXITING"),
        C(23, "mov_dr_exiting", "CPU_BASED_MOV_DR_EXITING", "VMX_FEATURE_MOV_DR_EXITING"),
        C(24, "unconditional_io_exiting", "CPU_BASED_UNCOND_IO_EXITING", "VMX_FEATURE_UNCOND_IO_EXITING"),
        C(25, "use_io_bitmaps", "CPU_BASED_USE_IO_BITMAPS", "VMX_FEATURE_USE_IO_BITMAPS"),
        C(27, "monitor_trap_flag", "CPU_BASED_MONITOR_TRAP_FLAG", "VMX_FEATURE_MONITOR_TRAP_FLAG"),
        C(28, "use_msr_bitmaps", "CPU_BASED_USE_MSR_BITMAPS", "VMX_FEATURE_USE_MSR_BITMAPS"),
        C(29, "monitor_exiting", "CPU_BASED_MONITOR_EXITING", "VMX_FEATURE_MONITOR_EXITING"),
        C(30, "pause_exiting", "CPU_BASED_PAUSE_EXITING", "VMX_FEATURE_PAUSE_EXITING"),
        C(
            31,
            "activate_secondary_controls",
            "CPU_BASED_ACTIVATE_SECONDARY_CONTROLS",
            "VMX_FEATURE_SEC_CONTROLS",
        ),
    ),
)

# SDM Vol. 3C 25.6.2, Table 25-7 "Definitions of Secondary Processor-Based VM-Execution Controls".
PROCBASED2 = ControlTable(
    "procbased2",
    "secondary processor-based VM-execution controls",
    "SDM Vol. 3C 25.6.2 Table 25-7",
    (
        C(
            0,
            "virtualize_apic_accesses",
            "SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES",
            "VMX_FEATURE_VIRT_APIC_ACCESSES",
        ),
        C(1, "enable_ept", "SECONDARY_EXEC_ENABLE_EPT", "VMX_FEATURE_EPT"),
        C(2, "descriptor_table_exiting", "SECONDARY_EXEC_DESC", "VMX_FEATURE_DESC_EXITING"),
        C(3, "enable_rdtscp", "SECONDARY_EXEC_ENABLE_RDTSCP", "VMX_FEATURE_RDTSCP"),
        C(4, "virtualize_x2apic_mode", "SECONDARY_EXEC_VIRTUALIZE_X2APIC_MODE", "VMX_FEATURE_VIRTUAL_X2APIC"),
        C(5, "enable_vpid", "SECONDARY_EXEC_ENABLE_VPID", "VMX_FEATURE_VPID"),
        C(6, "wbinvd_exiting", "SECONDARY_EXEC_WBINVD_EXITING", "VMX_FEATURE_WBINVD_EXITING"),
        C(7, "unrestricted_guest", "SECONDARY_EXEC_UNRESTRICTED_GUEST", "VMX_FEATURE_UNRESTRICTED_GUEST"),
        C(
            8,
            "apic_register_virtualization",
            "SECONDARY_EXEC_APIC_REGISTER_VIRT",
            "VMX_FEATURE_APIC_REGISTER_VIRT",
        ),
        C(
            9,
            "virtual_interrupt_delivery",
            "SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY",
            "VMX_FEATURE_VIRT_INTR_DELIVERY",
        ),
        C(10, "pause_loop_exiting", "SECONDARY_EXEC_PAUSE_LOOP_EXITING", "VMX_FEATURE_PAUSE_LOOP_EXITING"),
        C(11, "rdrand_exiting", "SECONDARY_EXEC_RDRAND_EXITING", "VMX_FEATURE_RDRAND_EXITING"),
        C(12, "enable_invpcid", "SECONDARY_EXEC_ENABLE_INVPCID", "VMX_FEATURE_INVPCID"),
        C(13, "enable_vm_functions", "SECONDARY_EXEC_ENABLE_VMFUNC", "VMX_FEATURE_VMFUNC"),
        C(14, "vmcs_shadowing", "SECONDARY_EXEC_SHADOW_VMCS", "VMX_FEATURE_SHADOW_VMCS"),
        C(15, "enable_encls_exiting", "SECONDARY_EXEC_ENCLS_EXITING", "VMX_FEATURE_ENCLS_EXITING"),
        C(16, "rdseed_exiting", "SECONDARY_EXEC_RDSEED_EXITING", "VMX_FEATURE_RDSEED_EXITING"),
        C(17, "enable_pml", "SECONDARY_EXEC_ENABLE_PML", "VMX_FEATURE_PAGE_MOD_LOGGING"),
        C(18, "ept_violation_ve", "SECONDARY_EXEC_EPT_VIOLATION_VE", "VMX_FEATURE_EPT_VIOLATION_VE"),
        C(19, "conceal_vmx_from_pt", "SECONDARY_EXEC_PT_CONCEAL_VMX", "VMX_FEATURE_PT_CONCEAL_VMX"),
        C(20, "enable_xsaves_xrstors", "SECONDARY_EXEC_ENABLE_XSAVES", "VMX_FEATURE_XSAVES"),
        C(21, "enable_pasid_translation", None, None),
        C(
            22,
            "mode_based_execute_control_for_ept",
            "SECONDARY_EXEC_MODE_BASED_EPT_EXEC",
            "VMX_FEATURE_MODE_BASED_EPT_EXEC",
        ),
        C(23, "sub_page_write_permissions_for_ept", None, None),
        C(24, "pt_uses_guest_physical_addresses", "SECONDARY_EXEC_PT_USE_GPA", "VMX_FEATURE_PT_USE_GPA"),
        C(25, "use_tsc_scaling", "SECONDARY_EXEC_TSC_SCALING", "VMX_FEATURE_TSC_SCALING"),
        C(
            26,
            "enable_user_wait_and_pause",
            "SECONDARY_EXEC_ENABLE_USR_WAIT_PAUSE",
            "VMX_FEATURE_USR_WAIT_PAUSE",
        ),
        C(27, "enable_pconfig", None, None),
        C(28, "enable_enclv_exiting", None, "VMX_FEATURE_ENCLV_EXITING"),
        C(
            30,
            "vmm_bus_lock_detection",
            "SECONDARY_EXEC_BUS_LOCK_DETECTION",
            "VMX_FEATURE_BUS_LOCK_DETECTION",
        ),
        C(31, "instruction_timeout", "SECONDARY_EXEC_NOTIFY_VM_EXITING", "VMX_FEATURE_NOTIFY_VM_EXITING"),
    ),
)

# SDM Vol. 3C 25.6.2, Table 25-8 "Definitions of Tertiary Processor-Based VM-Execution
# Controls" (a 64-bit field).  Linux names only IPI virtualization.
PROCBASED3 = ControlTable(
    "procbased3",
    "tertiary processor-based VM-execution controls",
    "SDM Vol. 3C 25.6.2 Table 25-8",
    (
        C(0, "loadiwkey_exiting", None, None),
        C(1, "enable_hlat", None, None),
        C(2, "ept_paging_write_control", None, None),
        C(3, "guest_paging_verification", None, None),
        C(4, "ipi_virtualization", "TERTIARY_EXEC_IPI_VIRT", "VMX_FEATURE_IPI_VIRT"),
        C(7, "virtualize_ia32_spec_ctrl", None, None),
    ),
)

# SDM Vol. 3C 25.7.1, table "Definitions of Primary VM-Exit Controls".
# Bits 28 and 31 carry the names of the KVM CET and FRED series (VM_EXIT_LOAD_CET_STATE,
# VM_EXIT_ACTIVATE_SECONDARY_CONTROLS), newer than some kernels' vmx.h.
EXIT = ControlTable(
    "exit",
    "primary VM-exit controls",
    "SDM Vol. 3C 25.7.1 (Definitions of Primary VM-Exit Controls)",
    (
        C(2, "save_debug_controls", "VM_EXIT_SAVE_DEBUG_CONTROLS", None),
        C(9, "host_address_space_size", "VM_EXIT_HOST_ADDR_SPACE_SIZE", None),
        C(12, "load_ia32_perf_global_ctrl", "VM_EXIT_LOAD_IA32_PERF_GLOBAL_CTRL", None),
        C(15, "acknowledge_interrupt_on_exit", "VM_EXIT_ACK_INTR_ON_EXIT", None),
        C(18, "save_ia32_pat", "VM_EXIT_SAVE_IA32_PAT", None),
        C(19, "load_ia32_pat", "VM_EXIT_LOAD_IA32_PAT", None),
        C(20, "save_ia32_efer", "VM_EXIT_SAVE_IA32_EFER", None),
        C(21, "load_ia32_efer", "VM_EXIT_LOAD_IA32_EFER", None),
        C(22, "save_vmx_preemption_timer_value", "VM_EXIT_SAVE_VMX_PREEMPTION_TIMER", None),
        C(23, "clear_ia32_bndcfgs", "VM_EXIT_CLEAR_BNDCFGS", None),
        C(24, "conceal_vmx_from_pt", "VM_EXIT_PT_CONCEAL_PIP", None),
        C(25, "clear_ia32_rtit_ctl", "VM_EXIT_CLEAR_IA32_RTIT_CTL", None),
        C(26, "clear_ia32_lbr_ctl", None, None),
        C(27, "clear_uinv", None, None),
        C(28, "load_cet_state", "VM_EXIT_LOAD_CET_STATE", None),
        C(29, "load_pkrs", None, None),
        C(30, "save_ia32_perf_global_ctl", None, None),
        C(31, "activate_secondary_controls", "VM_EXIT_ACTIVATE_SECONDARY_CONTROLS", None),
    ),
)

# SDM Vol. 3C 25.7.1, table "Definitions of Secondary VM-Exit Controls" (a 64-bit field).
EXIT2 = ControlTable(
    "exit2",
    "secondary VM-exit controls",
    "SDM Vol. 3C 25.7.1 (Definitions of Secondary VM-Exit Controls)",
    (
        C(0, "save_ia32_fred", "SECONDARY_VM_EXIT_SAVE_IA32_FRED", None),
        C(1, "load_ia32_fred", "SECONDARY_VM_EXIT_LOAD_IA32_FRED", None),
    ),
)

# SDM Vol. 3C 25.8.1, table "Definitions of VM-Entry Controls".
ENTRY = ControlTable(
    "entry",
    "VM-entry controls",
    "SDM Vol. 3C 25.8.1 (Definitions of VM-Entry Controls)",
    (
        C(2, "load_debug_controls", "VM_ENTRY_LOAD_DEBUG_CONTROLS", None),
        C(9, "ia32e_mode_guest", "VM_ENTRY_IA32E_MODE", None),
        C(10, "entry_to_smm", "VM_ENTRY_SMM", None),
        C(11, "deactivate_dual_monitor_treatment", "VM_ENTRY_DEACT_DUAL_MONITOR", None),
        C(13, "load_ia32_perf_global_ctrl", "VM_ENTRY_LOAD_IA32_PERF_GLOBAL_CTRL", None),
        C(14, "load_ia32_pat", "VM_ENTRY_LOAD_IA32_PAT", None),
        C(15, "load_ia32_efer", "VM_ENTRY_LOAD_IA32_EFER", None),
        C(16, "load_ia32_bndcfgs", "VM_ENTRY_LOAD_BNDCFGS", None),
        C(17, "conceal_vmx_from_pt", "VM_ENTRY_PT_CONCEAL_PIP", None),
        C(18, "load_ia32_rtit_ctl", "VM_ENTRY_LOAD_IA32_RTIT_CTL", None),
        C(19, "load_uinv", None, None),
        C(20, "load_cet_state", "VM_ENTRY_LOAD_CET_STATE", None),
        C(21, "load_guest_ia32_lbr_ctl", None, None),
        C(22, "load_pkrs", None, None),
        C(23, "load_ia32_fred", "VM_ENTRY_LOAD_IA32_FRED", None),
    ),
)

# SDM Vol. 3C 25.6.14, table "Definitions of VM-Function Controls" (64-bit).
VMFUNC = ControlTable(
    "vmfunc",
    "VM-function controls",
    "SDM Vol. 3C 25.6.14 (Definitions of VM-Function Controls)",
    (C(0, "eptp_switching", "VMX_VMFUNC_EPTP_SWITCHING", "VMX_FEATURE_EPTP_SWITCHING"),),
)

CONTROL_TABLES = (PINBASED, PROCBASED, PROCBASED2, PROCBASED3, EXIT, EXIT2, ENTRY, VMFUNC)


def control_state(allowed0: bool, allowed1: bool) -> str:
    """One control from its allowed-0 bit (set: must be 1) and allowed-1 bit (clear: must be 0)."""
    if allowed0:
        return ALWAYS_ON if allowed1 else INCONSISTENT
    return EITHER if allowed1 else ALWAYS_OFF
