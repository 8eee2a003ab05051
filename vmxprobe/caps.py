"""Decoders for the VMX capability MSRs other than IA32_VMX_BASIC (0x481-0x493).

Tables are data, near the top; small functions below. Every table row names where the
SDM defines it and what Linux calls it, so a reader can check one against the other:

* Intel SDM Vol. 3D Appendix A "VMX Capability Reporting Facility" (A.2-A.11) for what
  each capability MSR reports, and Vol. 3C chapter 25 "Virtual Machine Control
  Structures" for the control bits (section 25.6.1 Table 25-5 pin-based, 25.6.2
  Tables 25-6/25-7/25-8 primary/secondary/tertiary processor-based, 25.6.14 VM-function,
  25.7.1 primary and secondary VM-exit, 25.8.1 VM-entry).  SDM editions before 2023
  number that chapter 24 (Table 24-5 ...); the section structure is the same.
* Linux arch/x86/include/asm/msr-index.h (MSR_IA32_VMX_*), asm/vmx.h (PIN_BASED_*,
  CPU_BASED_*, SECONDARY_EXEC_*, TERTIARY_EXEC_*, VM_EXIT_*, SECONDARY_VM_EXIT_*,
  VM_ENTRY_*, VMX_MISC_*, VMX_EPT_*, VMX_VPID_*), asm/vmxfeatures.h (VMX_FEATURE_*) and
  arch/x86/kernel/cpu/feat_ctl.c init_vmx_capabilities() for the "vmx flags" line.

A control that the SDM defines but Linux does not name has kernel=None.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Set, Tuple

from vmxprobe.vmx import Field, field_bits

IA32_VMX_BASIC = 0x480          # decoded by vmxprobe.vmx; accepted here by resolve_msr()
VMX_BASIC_TRUE_CTLS = 1 << 55   # asm/vmx.h VMX_BASIC_TRUE_CTLS; SDM A.1 bit 55

_M64 = (1 << 64) - 1
_M32 = (1 << 32) - 1

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
    name: str                 # report key: the SDM name, snake_case
    kernel: Optional[str]     # asm/vmx.h macro for the bit, None if Linux has none
    feature: Optional[str]    # asm/vmxfeatures.h VMX_FEATURE_* name, if any


class ControlTable(NamedTuple):
    group: str                # key used by effective_controls()
    title: str
    sdm: str
    controls: Tuple[Control, ...]


C = Control

# SDM Vol. 3C 25.6.1, Table 25-5 "Definitions of Pin-Based VM-Execution Controls".
PINBASED = ControlTable("pinbased", "pin-based VM-execution controls", "SDM Vol. 3C 25.6.1 Table 25-5", (
    C(0, "external_interrupt_exiting", "PIN_BASED_EXT_INTR_MASK", "VMX_FEATURE_INTR_EXITING"),
    C(3, "nmi_exiting", "PIN_BASED_NMI_EXITING", "VMX_FEATURE_NMI_EXITING"),
    C(5, "virtual_nmis", "PIN_BASED_VIRTUAL_NMIS", "VMX_FEATURE_VIRTUAL_NMIS"),
    C(6, "activate_vmx_preemption_timer", "PIN_BASED_VMX_PREEMPTION_TIMER", "VMX_FEATURE_PREEMPTION_TIMER"),
    C(7, "process_posted_interrupts", "PIN_BASED_POSTED_INTR", "VMX_FEATURE_POSTED_INTR"),
))

# SDM Vol. 3C 25.6.2, Table 25-6 "Definitions of Primary Processor-Based VM-Execution Controls".
PROCBASED = ControlTable("procbased", "primary processor-based VM-execution controls", "SDM Vol. 3C 25.6.2 Table 25-6", (
    C(2, "interrupt_window_exiting", "CPU_BASED_INTR_WINDOW_EXITING", "VMX_FEATURE_INTR_WINDOW_EXITING"),
    C(3, "use_tsc_offsetting", "CPU_BASED_USE_TSC_OFFSETTING", "VMX_FEATURE_USE_TSC_OFFSETTING"),
    C(7, "hlt_exiting", "CPU_BASED_HLT_EXITING", "VMX_FEATURE_HLT_EXITING"),
    C(9, "invlpg_exiting", "CPU_BASED_INVLPG_EXITING", "VMX_FEATURE_INVLPG_EXITING"),
    C(10, "mwait_exiting", "CPU_BASED_MWAIT_EXITING", "VMX_FEATURE_MWAIT_EXITING"),
    C(11, "rdpmc_exiting", "CPU_BASED_RDPMC_EXITING", "VMX_FEATURE_RDPMC_EXITING"),
    C(12, "rdtsc_exiting", "CPU_BASED_RDTSC_EXITING", "VMX_FEATURE_RDTSC_EXITING"),
    C(15, "cr3_load_exiting", "CPU_BASED_CR3_LOAD_EXITING", "VMX_FEATURE_CR3_LOAD_EXITING"),
    C(16, "cr3_store_exiting", "CPU_BASED_CR3_STORE_EXITING", "VMX_FEATURE_CR3_STORE_EXITING"),
    C(17, "activate_tertiary_controls", "CPU_BASED_ACTIVATE_TERTIARY_CONTROLS", "VMX_FEATURE_TERTIARY_CONTROLS"),
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
    C(31, "activate_secondary_controls", "CPU_BASED_ACTIVATE_SECONDARY_CONTROLS", "VMX_FEATURE_SEC_CONTROLS"),
))

# SDM Vol. 3C 25.6.2, Table 25-7 "Definitions of Secondary Processor-Based VM-Execution Controls".
PROCBASED2 = ControlTable("procbased2", "secondary processor-based VM-execution controls", "SDM Vol. 3C 25.6.2 Table 25-7", (
    C(0, "virtualize_apic_accesses", "SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES", "VMX_FEATURE_VIRT_APIC_ACCESSES"),
    C(1, "enable_ept", "SECONDARY_EXEC_ENABLE_EPT", "VMX_FEATURE_EPT"),
    C(2, "descriptor_table_exiting", "SECONDARY_EXEC_DESC", "VMX_FEATURE_DESC_EXITING"),
    C(3, "enable_rdtscp", "SECONDARY_EXEC_ENABLE_RDTSCP", "VMX_FEATURE_RDTSCP"),
    C(4, "virtualize_x2apic_mode", "SECONDARY_EXEC_VIRTUALIZE_X2APIC_MODE", "VMX_FEATURE_VIRTUAL_X2APIC"),
    C(5, "enable_vpid", "SECONDARY_EXEC_ENABLE_VPID", "VMX_FEATURE_VPID"),
    C(6, "wbinvd_exiting", "SECONDARY_EXEC_WBINVD_EXITING", "VMX_FEATURE_WBINVD_EXITING"),
    C(7, "unrestricted_guest", "SECONDARY_EXEC_UNRESTRICTED_GUEST", "VMX_FEATURE_UNRESTRICTED_GUEST"),
    C(8, "apic_register_virtualization", "SECONDARY_EXEC_APIC_REGISTER_VIRT", "VMX_FEATURE_APIC_REGISTER_VIRT"),
    C(9, "virtual_interrupt_delivery", "SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY", "VMX_FEATURE_VIRT_INTR_DELIVERY"),
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
    C(22, "mode_based_execute_control_for_ept", "SECONDARY_EXEC_MODE_BASED_EPT_EXEC", "VMX_FEATURE_MODE_BASED_EPT_EXEC"),
    C(23, "sub_page_write_permissions_for_ept", None, None),
    C(24, "pt_uses_guest_physical_addresses", "SECONDARY_EXEC_PT_USE_GPA", "VMX_FEATURE_PT_USE_GPA"),
    C(25, "use_tsc_scaling", "SECONDARY_EXEC_TSC_SCALING", "VMX_FEATURE_TSC_SCALING"),
    C(26, "enable_user_wait_and_pause", "SECONDARY_EXEC_ENABLE_USR_WAIT_PAUSE", "VMX_FEATURE_USR_WAIT_PAUSE"),
    C(27, "enable_pconfig", None, None),
    C(28, "enable_enclv_exiting", None, "VMX_FEATURE_ENCLV_EXITING"),
    C(30, "vmm_bus_lock_detection", "SECONDARY_EXEC_BUS_LOCK_DETECTION", "VMX_FEATURE_BUS_LOCK_DETECTION"),
    C(31, "instruction_timeout", "SECONDARY_EXEC_NOTIFY_VM_EXITING", "VMX_FEATURE_NOTIFY_VM_EXITING"),
))

# SDM Vol. 3C 25.6.2, Table 25-8 "Definitions of Tertiary Processor-Based VM-Execution
# Controls" (a 64-bit field).  Linux names only IPI virtualization.
PROCBASED3 = ControlTable("procbased3", "tertiary processor-based VM-execution controls", "SDM Vol. 3C 25.6.2 Table 25-8", (
    C(0, "loadiwkey_exiting", None, None),
    C(1, "enable_hlat", None, None),
    C(2, "ept_paging_write_control", None, None),
    C(3, "guest_paging_verification", None, None),
    C(4, "ipi_virtualization", "TERTIARY_EXEC_IPI_VIRT", "VMX_FEATURE_IPI_VIRT"),
    C(7, "virtualize_ia32_spec_ctrl", None, None),
))

# SDM Vol. 3C 25.7.1, table "Definitions of Primary VM-Exit Controls".
# Bits 28 and 31 carry the names of the KVM CET and FRED series (VM_EXIT_LOAD_CET_STATE,
# VM_EXIT_ACTIVATE_SECONDARY_CONTROLS), newer than some kernels' vmx.h.
EXIT = ControlTable("exit", "primary VM-exit controls", "SDM Vol. 3C 25.7.1 (Definitions of Primary VM-Exit Controls)", (
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
))

# SDM Vol. 3C 25.7.1, table "Definitions of Secondary VM-Exit Controls" (a 64-bit field).
EXIT2 = ControlTable("exit2", "secondary VM-exit controls", "SDM Vol. 3C 25.7.1 (Definitions of Secondary VM-Exit Controls)", (
    C(0, "save_ia32_fred", "SECONDARY_VM_EXIT_SAVE_IA32_FRED", None),
    C(1, "load_ia32_fred", "SECONDARY_VM_EXIT_LOAD_IA32_FRED", None),
))

# SDM Vol. 3C 25.8.1, table "Definitions of VM-Entry Controls".
ENTRY = ControlTable("entry", "VM-entry controls", "SDM Vol. 3C 25.8.1 (Definitions of VM-Entry Controls)", (
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
))

# SDM Vol. 3C 25.6.14, table "Definitions of VM-Function Controls" (64-bit).
VMFUNC = ControlTable("vmfunc", "VM-function controls", "SDM Vol. 3C 25.6.14 (Definitions of VM-Function Controls)", (
    C(0, "eptp_switching", "VMX_VMFUNC_EPTP_SWITCHING", "VMX_FEATURE_EPTP_SWITCHING"),
))

CONTROL_TABLES = (PINBASED, PROCBASED, PROCBASED2, PROCBASED3, EXIT, EXIT2, ENTRY, VMFUNC)


F = Field  # vmx.Field: one field of a register, with its kernel and SDM names

# IA32_VMX_MISC, SDM Vol. 3D A.6.  max_msr_list_size and activity_states are derived.
MISC_FIELDS = (
    F("preemption_timer_rate", 0, 4, "vmx_misc_preemption_timer_rate()",
      "A.6 bits 4:0: the timer counts down by 1 each time this TSC bit changes"),
    F("store_efer_lma", 5, 5, "VMX_MISC_SAVE_EFER_LMA",
      "A.6 bit 5: VM exits store IA32_EFER.LMA into the IA-32e mode guest control"),
    F("activity_hlt", 6, 6, "VMX_MISC_ACTIVITY_HLT", "A.6 bit 6: HLT activity state"),
    F("activity_shutdown", 7, 7, "VMX_MISC_ACTIVITY_SHUTDOWN", "A.6 bit 7: shutdown activity state"),
    F("activity_wait_for_sipi", 8, 8, "VMX_MISC_ACTIVITY_WAIT_SIPI", "A.6 bit 8: wait-for-SIPI activity state"),
    F("intel_pt_in_vmx", 14, 14, "VMX_MISC_INTEL_PT", "A.6 bit 14: Intel PT can be used in VMX operation"),
    F("rdmsr_smbase_in_smm", 15, 15, "VMX_MISC_RDMSR_IN_SMM", "A.6 bit 15: RDMSR can read IA32_SMBASE in SMM"),
    F("cr3_target_count", 16, 24, "vmx_misc_cr3_count()", "A.6 bits 24:16: number of CR3-target values"),
    F("msr_list_size_code", 25, 27, "vmx_misc_max_msr()",
      "A.6 bits 27:25: N; 512 * (N + 1) is the recommended maximum MSRs per list"),
    F("smm_monitor_ctl_bit2", 28, 28, "VMX_MISC_VMXOFF_BLOCK_SMI",
      "A.6 bit 28: IA32_SMM_MONITOR_CTL bit 2 can be set (VMXOFF leaves SMIs blocked)"),
    F("vmwrite_any_field", 29, 29, "VMX_MISC_VMWRITE_SHADOW_RO_FIELDS",
      "A.6 bit 29: VMWRITE can write any supported VMCS field, VM-exit information included"),
    F("inject_zero_length", 30, 30, "VMX_MISC_ZERO_LEN_INS",
      "A.6 bit 30: VM entry may inject software interrupts/exceptions with instruction length 0"),
    F("mseg_revision", 32, 63, "vmx_misc_mseg_revid()", "A.6 bits 63:32: MSEG revision identifier"),
)
MISC_MSR_LIST_MULTIPLIER = 512  # asm/vmx.h VMX_MISC_MSR_LIST_MULTIPLIER; SDM A.6 bits 27:25

# IA32_VMX_EPT_VPID_CAP, SDM Vol. 3D A.10.  Low dword EPT, high dword VPID (feat_ctl.c
# reads it as "low for EPT, high for VPID").  Bits 22 and 23 have no Linux name.
EPT_VPID_FIELDS = (
    F("ept_execute_only", 0, 0, "VMX_EPT_EXECUTE_ONLY_BIT", "A.10 bit 0: execute-only EPT translations"),
    F("ept_page_walk_length_4", 6, 6, "VMX_EPT_PAGE_WALK_4_BIT", "A.10 bit 6: page-walk length of 4"),
    F("ept_page_walk_length_5", 7, 7, "VMX_EPT_PAGE_WALK_5_BIT", "A.10 bit 7: page-walk length of 5"),
    F("ept_memory_type_uc", 8, 8, "VMX_EPTP_UC_BIT", "A.10 bit 8: EPT paging structures may be UC"),
    F("ept_memory_type_wb", 14, 14, "VMX_EPTP_WB_BIT", "A.10 bit 14: EPT paging structures may be WB"),
    F("ept_2mb_pages", 16, 16, "VMX_EPT_2MB_PAGE_BIT", "A.10 bit 16: EPT PDE may map a 2-MByte page"),
    F("ept_1gb_pages", 17, 17, "VMX_EPT_1GB_PAGE_BIT", "A.10 bit 17: EPT PDPTE may map a 1-GByte page"),
    F("invept", 20, 20, "VMX_EPT_INVEPT_BIT", "A.10 bit 20: INVEPT is supported"),
    F("ept_accessed_dirty", 21, 21, "VMX_EPT_AD_BIT", "A.10 bit 21: accessed and dirty flags for EPT"),
    F("ept_advanced_exit_info", 22, 22, None, "A.10 bit 22: advanced VM-exit information for EPT violations"),
    F("ept_supervisor_shadow_stack", 23, 23, None, "A.10 bit 23: supervisor shadow-stack control (EPTP bit 7)"),
    F("invept_single_context", 25, 25, "VMX_EPT_EXTENT_CONTEXT_BIT", "A.10 bit 25: single-context INVEPT"),
    F("invept_all_context", 26, 26, "VMX_EPT_EXTENT_GLOBAL_BIT", "A.10 bit 26: all-context INVEPT"),
    F("invvpid", 32, 32, "VMX_VPID_INVVPID_BIT", "A.10 bit 32: INVVPID is supported"),
    F("invvpid_individual_address", 40, 40, "VMX_VPID_EXTENT_INDIVIDUAL_ADDR_BIT",
      "A.10 bit 40: individual-address INVVPID"),
    F("invvpid_single_context", 41, 41, "VMX_VPID_EXTENT_SINGLE_CONTEXT_BIT", "A.10 bit 41: single-context INVVPID"),
    F("invvpid_all_context", 42, 42, "VMX_VPID_EXTENT_GLOBAL_CONTEXT_BIT", "A.10 bit 42: all-context INVVPID"),
    F("invvpid_single_context_retaining_globals", 43, 43, "VMX_VPID_EXTENT_SINGLE_NON_GLOBAL_BIT",
      "A.10 bit 43: single-context-retaining-globals INVVPID"),
)

# IA32_VMX_VMCS_ENUM, SDM Vol. 3D A.9.  Bit 0 and bits 63:10 are reserved.
VMCS_ENUM_FIELDS = (
    F("highest_index", 1, 9, None, "A.9 bits 9:1: highest index value used in any VMCS encoding"),
)

# Control-register bits named for the CR fixed MSRs (A.7, A.8): (bit, SDM name, Linux
# uapi/asm/processor-flags.h name or None).
CR0_BITS = (
    (0, "PE", "X86_CR0_PE"), (1, "MP", "X86_CR0_MP"), (2, "EM", "X86_CR0_EM"), (3, "TS", "X86_CR0_TS"),
    (4, "ET", "X86_CR0_ET"), (5, "NE", "X86_CR0_NE"), (16, "WP", "X86_CR0_WP"), (18, "AM", "X86_CR0_AM"),
    (29, "NW", "X86_CR0_NW"), (30, "CD", "X86_CR0_CD"), (31, "PG", "X86_CR0_PG"),
)
CR4_BITS = (
    (0, "VME", "X86_CR4_VME"), (1, "PVI", "X86_CR4_PVI"), (2, "TSD", "X86_CR4_TSD"), (3, "DE", "X86_CR4_DE"),
    (4, "PSE", "X86_CR4_PSE"), (5, "PAE", "X86_CR4_PAE"), (6, "MCE", "X86_CR4_MCE"), (7, "PGE", "X86_CR4_PGE"),
    (8, "PCE", "X86_CR4_PCE"), (9, "OSFXSR", "X86_CR4_OSFXSR"), (10, "OSXMMEXCPT", "X86_CR4_OSXMMEXCPT"),
    (11, "UMIP", "X86_CR4_UMIP"), (12, "LA57", "X86_CR4_LA57"), (13, "VMXE", "X86_CR4_VMXE"),
    (14, "SMXE", "X86_CR4_SMXE"), (16, "FSGSBASE", "X86_CR4_FSGSBASE"), (17, "PCIDE", "X86_CR4_PCIDE"),
    (18, "OSXSAVE", "X86_CR4_OSXSAVE"), (19, "KL", None), (20, "SMEP", "X86_CR4_SMEP"),
    (21, "SMAP", "X86_CR4_SMAP"), (22, "PKE", "X86_CR4_PKE"), (23, "CET", "X86_CR4_CET"),
    (24, "PKS", None), (25, "UINTR", None), (27, "LASS", "X86_CR4_LASS"), (28, "LAM_SUP", "X86_CR4_LAM_SUP"),
    (32, "FRED", "X86_CR4_FRED"),
)
CR_BITS = {"CR0": CR0_BITS, "CR4": CR4_BITS}

# Kinds of capability MSR.
KIND_CTLS = "controls"              # 32-bit controls: low dword allowed-0, high dword allowed-1
KIND_ALLOWED1 = "allowed1_64"       # 64-bit field: every bit an allowed-1 setting
KIND_MISC = "misc"
KIND_FIXED0 = "cr_fixed0"
KIND_FIXED1 = "cr_fixed1"
KIND_VMCS_ENUM = "vmcs_enum"
KIND_EPT_VPID = "ept_vpid_cap"


class Msr(NamedTuple):
    index: int
    name: str                         # SDM name
    kernel: str                       # msr-index.h macro
    kind: str
    sdm: str
    table: Optional[ControlTable] = None
    register: Optional[str] = None    # CR0/CR4 for the fixed MSRs
    true_of: Optional[int] = None     # TRUE_* MSR: the plain MSR it replaces


def _m(index, name, kind, sdm, **kw):
    return Msr(index, name, "MSR_" + name, kind, sdm, **kw)


MSRS: Dict[int, Msr] = {m.index: m for m in (
    _m(0x481, "IA32_VMX_PINBASED_CTLS", KIND_CTLS, "SDM Vol. 3D A.3.1", table=PINBASED),
    _m(0x482, "IA32_VMX_PROCBASED_CTLS", KIND_CTLS, "SDM Vol. 3D A.3.2", table=PROCBASED),
    _m(0x483, "IA32_VMX_EXIT_CTLS", KIND_CTLS, "SDM Vol. 3D A.4.1", table=EXIT),
    _m(0x484, "IA32_VMX_ENTRY_CTLS", KIND_CTLS, "SDM Vol. 3D A.5", table=ENTRY),
    _m(0x485, "IA32_VMX_MISC", KIND_MISC, "SDM Vol. 3D A.6"),
    _m(0x486, "IA32_VMX_CR0_FIXED0", KIND_FIXED0, "SDM Vol. 3D A.7", register="CR0"),
    _m(0x487, "IA32_VMX_CR0_FIXED1", KIND_FIXED1, "SDM Vol. 3D A.7", register="CR0"),
    _m(0x488, "IA32_VMX_CR4_FIXED0", KIND_FIXED0, "SDM Vol. 3D A.8", register="CR4"),
    _m(0x489, "IA32_VMX_CR4_FIXED1", KIND_FIXED1, "SDM Vol. 3D A.8", register="CR4"),
    _m(0x48A, "IA32_VMX_VMCS_ENUM", KIND_VMCS_ENUM, "SDM Vol. 3D A.9"),
    _m(0x48B, "IA32_VMX_PROCBASED_CTLS2", KIND_CTLS, "SDM Vol. 3D A.3.3", table=PROCBASED2),
    _m(0x48C, "IA32_VMX_EPT_VPID_CAP", KIND_EPT_VPID, "SDM Vol. 3D A.10"),
    _m(0x48D, "IA32_VMX_TRUE_PINBASED_CTLS", KIND_CTLS, "SDM Vol. 3D A.3.1", table=PINBASED, true_of=0x481),
    _m(0x48E, "IA32_VMX_TRUE_PROCBASED_CTLS", KIND_CTLS, "SDM Vol. 3D A.3.2", table=PROCBASED, true_of=0x482),
    _m(0x48F, "IA32_VMX_TRUE_EXIT_CTLS", KIND_CTLS, "SDM Vol. 3D A.4.1", table=EXIT, true_of=0x483),
    _m(0x490, "IA32_VMX_TRUE_ENTRY_CTLS", KIND_CTLS, "SDM Vol. 3D A.5", table=ENTRY, true_of=0x484),
    _m(0x491, "IA32_VMX_VMFUNC", KIND_ALLOWED1, "SDM Vol. 3D A.11", table=VMFUNC),
    _m(0x492, "IA32_VMX_PROCBASED_CTLS3", KIND_ALLOWED1, "SDM Vol. 3D A.3.4", table=PROCBASED3),
    _m(0x493, "IA32_VMX_EXIT_CTLS2", KIND_ALLOWED1, "SDM Vol. 3D A.4.2", table=EXIT2),
)}

# The MSRs that exist on every processor with VMX (A.1-A.9 state no condition for them).
ALWAYS_PRESENT = (0x481, 0x482, 0x483, 0x484, 0x485, 0x486, 0x487, 0x488, 0x489, 0x48A)
TRUE_MSRS = (0x48D, 0x48E, 0x48F, 0x490)

# /proc/cpuinfo "vmx flags" names: (capability word, bit) -> name.  Words as in
# feat_ctl.c enum vmx_feature_leafs: 0 MISC_FEATURES, 1 PRIMARY_CTLS, 2 SECONDARY_CTLS,
# 3 TERTIARY_CTLS_LOW, 4 TERTIARY_CTLS_HIGH.  Only the VMX_FEATURE_* whose comment starts
# with a quoted name are printed (mkcapflags.sh skips the rest), per the mainline
# vmxfeatures.h with NVMXINTS 5.
VMX_FLAG_NAMES: Dict[Tuple[int, int], str] = {
    (0, 5): "vnmi", (0, 6): "preemption_timer", (0, 7): "posted_intr",
    (0, 16): "invvpid", (0, 17): "ept_x_only", (0, 18): "ept_ad", (0, 19): "ept_1gb", (0, 20): "ept_5level",
    (0, 24): "flexpriority", (0, 25): "apicv", (0, 28): "eptp_switching",
    (1, 3): "tsc_offset", (1, 21): "vtpr", (1, 27): "mtf",
    (2, 0): "vapic", (2, 1): "ept", (2, 5): "vpid", (2, 7): "unrestricted_guest", (2, 8): "vapic_reg",
    (2, 9): "vid", (2, 10): "ple", (2, 14): "shadow_vmcs", (2, 17): "pml", (2, 18): "ept_violation_ve",
    (2, 22): "ept_mode_based_exec", (2, 25): "tsc_scaling", (2, 26): "usr_wait_pause",
    (2, 31): "notify_vm_exiting",
    (3, 4): "ipi_virt",
}


# ---------------------------------------------------------------------------------------




def _set_bits(value: int) -> List[int]:
    return [b for b in range(64) if value >> b & 1]


def _header(m: Msr, value: int) -> dict:
    return {"msr": m.name, "index": "0x%x" % m.index, "kind": m.kind, "raw": "0x%016x" % value}


def control_state(allowed0: bool, allowed1: bool) -> str:
    """One control from its allowed-0 bit (set: must be 1) and allowed-1 bit (clear: must be 0)."""
    if allowed0:
        return ALWAYS_ON if allowed1 else INCONSISTENT
    return EITHER if allowed1 else ALWAYS_OFF


def _decode_ctls(m: Msr, value: int) -> dict:
    # A.3.1 (and alike for A.3.2, A.4.1, A.5): "Bits 31:0 indicate the allowed
    # 0-settings ... Bits 63:32 indicate the allowed 1-settings".
    out = _header(m, value)
    lo, hi = value & _M32, value >> 32
    known = {c.bit for c in m.table.controls}
    out["allowed0"] = "0x%08x" % lo
    out["allowed1"] = "0x%08x" % hi
    out["controls"] = {c.name: control_state(bool(lo >> c.bit & 1), bool(hi >> c.bit & 1))
                       for c in m.table.controls}
    # Unknown control bits are kept: on the plain (non-TRUE) MSRs the default1 bits of
    # A.2 show up here as always_on, which is expected, not an error.
    out["reserved"] = [b for b in _set_bits(value) if b % 32 not in known]
    out["reserved_controls"] = {"bit%d" % b: control_state(bool(lo >> b & 1), bool(hi >> b & 1))
                                for b in range(32) if b not in known and (lo | hi) >> b & 1}
    names = {c.bit: c.name for c in m.table.controls}
    out["errors"] = ["bit %d (%s): allowed-0 says must be 1 but allowed-1 says must be 0"
                     % (b, names.get(b, "reserved")) for b in range(32) if lo >> b & 1 and not hi >> b & 1]
    return out


def _decode_allowed1(m: Msr, value: int) -> dict:
    # A.3.4, A.4.2, A.11: a 64-bit MSR of allowed-1 settings only; a 0-setting is always
    # allowed, so a control is either flexible or must stay 0.
    out = _header(m, value)
    known = {c.bit for c in m.table.controls}
    out["controls"] = {c.name: EITHER if value >> c.bit & 1 else ALWAYS_OFF for c in m.table.controls}
    out["reserved"] = [b for b in _set_bits(value) if b not in known]
    out["errors"] = []
    return out


def _decode_fields(m: Msr, value: int, fields: Tuple[Field, ...]) -> dict:
    out = _header(m, value)
    known = 0
    decoded: dict = {}
    for f in fields:
        v = field_bits(value, f.lo, f.hi)
        decoded[f.name] = bool(v) if f.lo == f.hi else v
        known |= ((1 << (f.hi - f.lo + 1)) - 1) << f.lo
    out["fields"] = decoded
    out["reserved"] = _set_bits(value & ~known & _M64)
    out["errors"] = []
    return out


def _cr_names(register: str, mask: int) -> List[str]:
    named = {b: n for b, n, _ in CR_BITS[register]}
    return [named[b] for b in sorted(named) if mask >> b & 1]


def _cr_known_mask(register: str) -> int:
    mask = 0
    for b, _, _ in CR_BITS[register]:
        mask |= 1 << b
    return mask


def decode(index: int, value: int) -> dict:
    """Decode one VMX capability MSR value into a JSON-ready dict.

    Always present: msr, index, kind, raw ("0x%016x"), reserved (set bits the tables do
    not define, as bit numbers 0-63) and errors (strings).  Control MSRs add controls
    ({name: state}); the others add fields.
    """
    m = MSRS.get(index)
    if m is None:
        raise ValueError("0x%x is not a VMX capability MSR decoded here (0x481-0x493)" % index)
    if not isinstance(value, int):
        raise TypeError("a register value is an int, not %s" % type(value).__name__)
    if not 0 <= value <= _M64:
        raise ValueError("%#x is not a 64-bit register value" % value)
    if m.kind == KIND_CTLS:
        return _decode_ctls(m, value)
    if m.kind == KIND_ALLOWED1:
        return _decode_allowed1(m, value)
    if m.kind == KIND_MISC:
        out = _decode_fields(m, value, MISC_FIELDS)
        f = out["fields"]
        f["max_msr_list_size"] = MISC_MSR_LIST_MULTIPLIER * (f["msr_list_size_code"] + 1)
        # Activity-state numbers of SDM 25.4.2 (asm/vmx.h GUEST_ACTIVITY_*): 0 active is
        # always supported, bits 6-8 report states 1-3.
        f["activity_states"] = ["active"] + [n for n, k in (("hlt", "activity_hlt"),
                                ("shutdown", "activity_shutdown"), ("wait_for_sipi", "activity_wait_for_sipi")) if f[k]]
        return out
    if m.kind == KIND_EPT_VPID:
        return _decode_fields(m, value, EPT_VPID_FIELDS)
    if m.kind == KIND_VMCS_ENUM:
        return _decode_fields(m, value, VMCS_ENUM_FIELDS)
    # A.7/A.8: "If bit X is 1 in IA32_VMX_CRn_FIXED0, then that bit of CRn is fixed to 1
    # in VMX operation.  Similarly, if bit X is 0 in IA32_VMX_CRn_FIXED1, then that bit
    # of CRn is fixed to 0 in VMX operation."
    out = _header(m, value)
    known = _cr_known_mask(m.register)
    out["fields"] = {"register": m.register}
    if m.kind == KIND_FIXED0:
        out["fields"]["fixed_to_1"] = _cr_names(m.register, value)
    else:
        fixed0 = ~value & _M64
        out["fields"]["fixed_to_0"] = _cr_names(m.register, fixed0)
        out["fields"]["fixed_to_0_mask"] = "0x%016x" % fixed0
        out["fields"]["may_be_1"] = _cr_names(m.register, value)
    out["reserved"] = _set_bits(value & ~known)
    out["errors"] = []
    return out


def cr_fixed_summary(register: str, fixed0: int, fixed1: int) -> dict:
    """Combine a FIXED0/FIXED1 pair (A.7, A.8) into fixed_to_1 / fixed_to_0 / flexible names."""
    errors = ["bit %d: fixed to 1 by FIXED0 and to 0 by FIXED1" % b for b in _set_bits(fixed0 & ~fixed1 & _M64)]
    return {
        "register": register,
        "fixed_to_1": _cr_names(register, fixed0),
        "fixed_to_0": _cr_names(register, ~fixed1 & _M64),
        "flexible": _cr_names(register, fixed1 & ~fixed0 & _M64),
        "errors": errors,
    }


IA32_FEATURE_CONTROL = 0x3A    # decoded by vmxprobe.vmx; accepted by resolve_msr() for `decode`
# Names accepted for IA32_FEATURE_CONTROL besides its index: the SDM's and Linux's
# (msr-index.h MSR_IA32_FEAT_CTL, formerly MSR_IA32_FEATURE_CONTROL).
_FEATURE_CONTROL_NAMES = {"IA32_FEATURE_CONTROL", "FEATURE_CONTROL", "IA32_FEAT_CTL", "FEAT_CTL"}


def resolve_msr(name_or_index: str) -> int:
    """Index of a VMX capability MSR from "0x48b", "1163", "IA32_VMX_PROCBASED_CTLS2",
    "MSR_IA32_VMX_PROCBASED_CTLS2" or "PROCBASED_CTLS2" (any case).  IA32_FEATURE_CONTROL
    (0x3a, "FEATURE_CONTROL", "FEAT_CTL") is accepted too: it decides whether VMX is on."""
    s = str(name_or_index).strip()
    known = dict(MSRS)
    names = {"IA32_VMX_BASIC": IA32_VMX_BASIC}
    names.update({m.name: i for i, m in known.items()})
    index: Optional[int] = None
    try:
        if s.lower().startswith("0x"):
            index = int(s[2:], 16)
        elif s.isdigit():
            index = int(s, 10)
    except ValueError:
        index = None
    if index is not None and (index in known or index in (IA32_VMX_BASIC, IA32_FEATURE_CONTROL)):
        return index
    if index is None:
        key = s.upper()
        if key.startswith("MSR_"):
            key = key[4:]
        if key in _FEATURE_CONTROL_NAMES:
            return IA32_FEATURE_CONTROL
        if not key.startswith("IA32_VMX_"):
            key = "IA32_VMX_" + key
        if key in names:
            return names[key]
    short = ", ".join(n[len("IA32_VMX_"):] for n, _ in sorted(names.items(), key=lambda kv: kv[1]))
    raise ValueError("unknown MSR %r: give an index (0x3a, 0x480-0x493) or a name, optionally "
                     "prefixed IA32_VMX_ or MSR_IA32_VMX_: FEATURE_CONTROL, %s" % (s, short))


def effective_controls(msrs: Dict[int, int], true_ctls: bool) -> dict:
    """Decoded controls per group, reading each from the MSR that holds the whole answer.

    A.3.1/A.3.2/A.4.1/A.5: "If bit 55 in the IA32_VMX_BASIC MSR is read as 1, all
    information about the allowed settings of the ... controls is contained in the
    IA32_VMX_TRUE_..._CTLS MSR", otherwise in the plain MSR.  Pass true_ctls = bit 55 of
    IA32_VMX_BASIC.  Groups whose MSR is absent from msrs are left out; a missing TRUE
    MSR falls back to the plain one (the result's "index" says which was used).
    """
    use: Dict[str, int] = {}
    for index, m in MSRS.items():
        if m.table is None or m.true_of is not None:
            continue
        use[m.table.group] = index
    if true_ctls:
        for index in TRUE_MSRS:
            if index in msrs:
                use[MSRS[index].table.group] = index
    return {group: decode(index, msrs[index]) for group, index in use.items() if index in msrs}


def readable_msrs(msrs_so_far: Dict[int, int], basic: int) -> List[int]:
    """The capability MSRs (other than IA32_VMX_BASIC) that exist, as far as the values
    read so far can tell.  A dependent MSR is listed once the MSR that announces it is in
    msrs_so_far and says so; call again after reading more to reach the full list.
    basic == 0 means no VMX (a real IA32_VMX_BASIC reports a non-zero VMCS size): [].
    """
    if not basic:
        return []
    out = set(ALWAYS_PRESENT)
    # A.1: bit 55 "also reports support for the VMX capability MSRs
    # IA32_VMX_TRUE_PINBASED_CTLS, IA32_VMX_TRUE_PROCBASED_CTLS, IA32_VMX_TRUE_EXIT_CTLS,
    # and IA32_VMX_TRUE_ENTRY_CTLS".
    if basic & VMX_BASIC_TRUE_CTLS:
        out.update(TRUE_MSRS)
    proc = msrs_so_far.get(0x482)
    # A.3.3: IA32_VMX_PROCBASED_CTLS2 "exists only on processors that support the
    # 1-setting of the 'activate secondary controls' VM-execution control (only if bit 63
    # of the IA32_VMX_PROCBASED_CTLS MSR is 1)".
    if proc is not None and proc >> 63 & 1:
        out.add(0x48B)
    # A.3.4: IA32_VMX_PROCBASED_CTLS3 "exists only on processors that support the
    # 1-setting of the 'activate tertiary controls' VM-execution control (only if bit 49
    # of the IA32_VMX_PROCBASED_CTLS MSR is 1)".
    if proc is not None and proc >> 49 & 1:
        out.add(0x492)
    proc2 = msrs_so_far.get(0x48B) if 0x48B in out else None
    # A.10: IA32_VMX_EPT_VPID_CAP exists only if "activate secondary controls" can be 1
    # "and that support either the 1-setting of the 'enable EPT' VM-execution control
    # (only if bit 33 of the IA32_VMX_PROCBASED_CTLS2 MSR is 1) or the 1-setting of the
    # 'enable VPID' VM-execution control (only if bit 37 ...)".
    if proc2 is not None and (proc2 >> 33 & 1 or proc2 >> 37 & 1):
        out.add(0x48C)
    # A.11: IA32_VMX_VMFUNC exists only if "activate secondary controls" can be 1 "and
    # the 'enable VM functions' VM-execution control (only if bit 45 of the
    # IA32_VMX_PROCBASED_CTLS2 MSR is 1)".
    if proc2 is not None and proc2 >> 45 & 1:
        out.add(0x491)
    # A.4.2: IA32_VMX_EXIT_CTLS2 "exists only on processors that support the 1-setting
    # of the 'activate secondary controls' VM-exit control (only if bit 63 of the
    # IA32_VMX_EXIT_CTLS MSR is 1)".
    exit_ctls = msrs_so_far.get(0x483)
    if exit_ctls is not None and exit_ctls >> 63 & 1:
        out.add(0x493)
    return sorted(out)


def vmx_capability_words(msrs: Dict[int, int]) -> List[int]:
    """c->vmx_capability[] as init_vmx_capabilities() (feat_ctl.c) fills it.

    The kernel takes the allowed-1 (high) dword of the plain, not TRUE, MSRs; an MSR
    that is absent reads as 0 (rdmsr_safe() fails and the fixup zeroes the output).
    """
    def hi(i: int) -> int:
        return msrs.get(i, 0) >> 32 & _M32

    def lo(i: int) -> int:
        return msrs.get(i, 0) & _M32

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


def implied_vmx_flags(msrs: Dict[int, int]) -> Set[str]:
    """Names Linux prints on the /proc/cpuinfo "vmx flags" line for these MSR values.

    show_cpuinfo() (arch/x86/kernel/cpu/proc.c) prints the line only when word 0 is
    non-zero.  The synthetic X86_FEATURE_{TPR_SHADOW,FLEXPRIORITY,VNMI,EPT,EPT_AD,VPID}
    flags that init_vmx_capabilities() also sets belong to the "flags" line, not this one.
    """
    words = vmx_capability_words(msrs)
    if not words[0]:
        return set()
    return {name for (word, bit), name in VMX_FLAG_NAMES.items() if words[word] >> bit & 1}


# ---------------------------------------------------------------------------------------
# Values pasted by people: `vmxprobe decode`.


def parse_value(text: str) -> int:
    """An MSR value as people paste it: hex, with or without "0x", with "_" or spaces
    between digit groups, or with the SDM's trailing "h" ("00DA040000000004h").  rdmsr(8)
    and vmxcap print hex without a prefix, so digits alone are read as hex too.
    Raises ValueError with a one-line message."""
    raw = str(text)
    s = "".join(raw.split()).replace("_", "")
    if s[:2].lower() == "0x":
        s = s[2:]
    elif s[-1:].lower() == "h" and len(s) > 1:
        s = s[:-1]
    if not s or any(c not in "0123456789abcdefABCDEF" for c in s):
        raise ValueError("bad value %r: give the register as hex, e.g. 0x00da040000000004 "
                         "(0x, '_' and spaces optional)" % raw.strip())
    value = int(s, 16)
    if value > _M64:
        raise ValueError("bad value %r: more than 64 bits (%d hex digits)" % (raw.strip(), len(s.lstrip("0"))))
    return value


def msr_label(index: int) -> str:
    """"IA32_VMX_PROCBASED_CTLS2 (0x48b)" for any MSR this tool reads."""
    if index == IA32_VMX_BASIC:
        name = "IA32_VMX_BASIC"
    elif index == IA32_FEATURE_CONTROL:
        name = "IA32_FEATURE_CONTROL"
    else:
        m = MSRS.get(index)
        name = m.name if m else "MSR"
    return "%s (0x%x)" % (name, index)


# ---------------------------------------------------------------------------------------
# What a single bit of a capability MSR means: used to name differences bit by bit.


def describe_bit(index: int, bit: int) -> str:
    """Name what bit `bit` (0-63) of MSR `index` reports, in words a reader can check
    against the SDM table the MSR's decoder cites."""
    from vmxprobe import vmx  # local: vmx has no dependency on caps
    if index == IA32_VMX_BASIC:
        for f in vmx.VMX_BASIC_FIELDS:
            if f.lo <= bit <= f.hi:
                return f.name if f.lo == f.hi else "%s (bits %d:%d)" % (f.name, f.hi, f.lo)
        return "reserved"
    if index == IA32_FEATURE_CONTROL:
        for f in vmx.FEATURE_CONTROL_FIELDS:
            if f.lo <= bit <= f.hi:
                return f.name
        return "reserved"
    m = MSRS.get(index)
    if m is None:
        return "bit %d" % bit
    if m.kind == KIND_CTLS:
        names = {c.bit: c.name for c in m.table.controls}
        b = bit % 32
        what = names.get(b, "bit %d (no control defined)" % b)
        return "%s of %s" % ("allowed-1" if bit >= 32 else "allowed-0", what)
    if m.kind == KIND_ALLOWED1:
        names = {c.bit: c.name for c in m.table.controls}
        return "allowed-1 of %s" % names.get(bit, "bit %d (no control defined)" % bit)
    fields = {KIND_MISC: MISC_FIELDS, KIND_EPT_VPID: EPT_VPID_FIELDS, KIND_VMCS_ENUM: VMCS_ENUM_FIELDS}.get(m.kind)
    if fields is not None:
        for f in fields:
            if f.lo <= bit <= f.hi:
                return f.name if f.lo == f.hi else "%s (bits %d:%d)" % (f.name, f.hi, f.lo)
        return "reserved"
    named = {b: n for b, n, _ in CR_BITS[m.register]}
    return "%s.%s" % (m.register, named.get(bit, "bit%d" % bit))


def differing_bits(index: int, a: int, b: int) -> List[dict]:
    """Bits where a and b differ: [{"bit", "what", "a", "b"}], lowest first."""
    return [{"bit": n, "what": describe_bit(index, n), "a": int(a >> n & 1), "b": int(b >> n & 1)}
            for n in _set_bits((a ^ b) & _M64)]


# ---------------------------------------------------------------------------------------
# vmxcap's "default" state.  A.2: on the plain control MSRs the "default1" controls read
# as must-be-1; when IA32_VMX_BASIC bit 55 is set the TRUE MSR says whether they may be 0.
# QEMU's scripts/kvm/vmxcap prints such a control as "default".


def default1_controls(plain: int, true: int) -> List[int]:
    """Control bits (0-31) that the plain MSR forces to 1 but its TRUE MSR lets be 0."""
    p_lo, p_hi, t_lo, t_hi = plain & _M32, plain >> 32, true & _M32, true >> 32
    return [b for b in range(32) if p_lo >> b & 1 and p_hi >> b & 1
            and not t_lo >> b & 1 and t_hi >> b & 1]


# ---------------------------------------------------------------------------------------
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
FEEDS_NESTED = "nested"     # only while kvm_intel.nested=1

KVM_FEEDS: Dict[int, Tuple[str, int, str]] = {
    0x480: (FEEDS_ALWAYS, _M64, "setup_vmcs_config(): vmcs_conf->basic"),
    0x481: (FEEDS_ALWAYS, _M64, "adjust_vmx_controls(): vmcs_conf->pin_based_exec_ctrl"),
    0x482: (FEEDS_ALWAYS, _M64, "adjust_vmx_controls(): vmcs_conf->cpu_based_exec_ctrl"),
    0x483: (FEEDS_ALWAYS, _M64, "adjust_vmx_controls(): vmcs_conf->vmexit_ctrl"),
    0x484: (FEEDS_ALWAYS, _M64, "adjust_vmx_controls(): vmcs_conf->vmentry_ctrl"),
    0x485: (FEEDS_ALWAYS, _M64, "setup_vmcs_config(): vmcs_conf->misc"),
    0x48B: (FEEDS_ALWAYS, _M64, "adjust_vmx_controls(): vmcs_conf->cpu_based_2nd_exec_ctrl"),
    0x492: (FEEDS_ALWAYS, _M64, "adjust_vmx_controls64(): vmcs_conf->cpu_based_3rd_exec_ctrl"),
    0x493: (FEEDS_ALWAYS, _M64, "adjust_vmx_controls64(): vmcs_conf->vmexit_2nd_ctrl (kernels with KVM FRED support)"),
    0x48C: (FEEDS_NESTED, _M32, "nested_vmx_setup_secondary_ctls(): vmcs_conf->nested.ept_caps (EPT half only)"),
    0x487: (FEEDS_NESTED, _M64, "nested_vmx_setup_cr_fixed(): rdmsrl() into vmcs_conf->nested.cr0_fixed1"),
    0x489: (FEEDS_NESTED, _M64, "nested_vmx_setup_cr_fixed(): rdmsrl() into vmcs_conf->nested.cr4_fixed1"),
}
KVM_IGNORES: Dict[int, str] = {
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
KVM_REQUIRED_CONTROLS: Dict[int, Tuple[int, ...]] = {
    0x481: (0, 3),                                      # EXT_INTR_MASK, NMI_EXITING
    0x482: (2, 3, 7, 9, 10, 11, 15, 16, 19, 20, 23, 24, 29),  # INTR_WINDOW .. MONITOR, CR8 load/store
    0x483: (2, 9, 15),                                  # SAVE_DEBUG_CONTROLS, HOST_ADDR_SPACE_SIZE, ACK_INTR_ON_EXIT
    0x484: (2, 9),                                      # LOAD_DEBUG_CONTROLS, IA32E_MODE
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


def kvm_setup_problems(msrs: Dict[int, int], strict: bool = True) -> List[str]:
    """Why setup_vmcs_config() would return -EIO for these plain MSR values, one string
    per cause ([] when it would succeed).  An MSR that faults must be passed as 0: the
    kernel's rdmsr() fixup reads 0 for it.  strict=False is
    kvm_intel.error_on_inconsistent_vmcs_config=N: the pair and EPT/VPID checks then only
    warn and KVM drops the odd controls."""
    out: List[str] = []
    for index, required in KVM_REQUIRED_CONTROLS.items():
        if index not in msrs:
            continue
        high = msrs[index] >> 32
        names = {c.bit: c.name for c in MSRS[index].table.controls}
        missing = [b for b in required if not high >> b & 1]
        if missing:
            out.append("%s cannot set control(s) KVM requires: %s" % (
                msr_label(index), ", ".join("bit %d %s" % (b, names.get(b, "")) for b in missing)))
    if not strict:
        return out
    if 0x483 in msrs and 0x484 in msrs:
        entry, exit_ = msrs[0x484], msrs[0x483]
        for n, x, what in KVM_ENTRY_EXIT_PAIRS:
            # KVM asks for both as optional: each ends up set when allowed-1 (or forced).
            has_n = bool(((entry >> 32) | (entry & _M32)) >> n & 1)
            has_x = bool(((exit_ >> 32) | (exit_ & _M32)) >> x & 1)
            if has_n != has_x:
                out.append("inconsistent VM-entry/VM-exit pair (%s): entry control bit %d %s, exit "
                           "control bit %d %s (\"Inconsistent VM-Entry/VM-Exit pair\")" % (
                               what, n, "available" if has_n else "unavailable",
                               x, "available" if has_x else "unavailable"))
    proc2 = msrs.get(0x48B, 0) if (msrs.get(0x482, 0) >> 63 & 1) else 0
    cap = msrs.get(0x48C, 0)
    if cap & _M32 and not proc2 >> 33 & 1:
        out.append("IA32_VMX_EPT_VPID_CAP (0x48c) reports EPT capabilities but 'enable EPT' cannot "
                   "be set (\"EPT CAP should not exist if not support 1-setting enable EPT\")")
    if cap >> 32 and not proc2 >> 37 & 1:
        out.append("IA32_VMX_EPT_VPID_CAP (0x48c) reports VPID capabilities but 'enable VPID' cannot "
                   "be set (\"VPID CAP should not exist if not support 1-setting enable VPID\")")
    return out


# ---------------------------------------------------------------------------------------
# Who made the values up.  A hypervisor that offers VMX to its guest presents capability
# MSRs of its own choosing; some are recognisable by value.

KVM_VMCS12_REVISION = 0x11E57ED0   # arch/x86/kvm/vmx/vmcs12.h VMCS12_REVISION
KVM_EVMCS_VERSION = 1              # arch/x86/kvm/vmx/hyperv_evmcs.h KVM_EVMCS_VERSION

# Hyper-V TLFS (asm/hyperv-tlfs.h): CPUID 0x40000004 EAX bit 14 recommends the
# enlightened VMCS; CPUID 0x4000000A EAX bits 7:0 / 15:8 give the highest / lowest
# eVMCS version the hypervisor supports.
HV_CPUID_ENLIGHTMENT_INFO = 0x40000004
HV_CPUID_NESTED_FEATURES = 0x4000000A
HV_ENLIGHTENED_VMCS_RECOMMENDED = 1 << 14

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


def synthetic_vmx(basic: Optional[int], hypervisor: Optional[str],
                  hv_leaves: Optional[Dict[int, Tuple[int, int, int, int]]] = None) -> Optional[dict]:
    """Recognise VMX capabilities a hypervisor made up.  Returns None on bare metal (no
    hypervisor and no known synthetic revision), else {"by", "how", "evmcs": {...}|None}."""
    hv_leaves = hv_leaves or {}
    out: Optional[dict] = None
    if basic is not None and basic & 0x7FFFFFFF == KVM_VMCS12_REVISION:
        out = {"by": "KVM", "how": "IA32_VMX_BASIC revision 0x%x is KVM's VMCS12_REVISION: "
               "%s" % (KVM_VMCS12_REVISION, HYPERVISOR_VMX["KVM"]), "evmcs": None}
    elif hypervisor:
        out = {"by": hypervisor, "how": HYPERVISOR_VMX.get(
            hypervisor, "values presented by %s, not the hardware's" % hypervisor), "evmcs": None}
    if out is None:
        return None
    hint = hv_leaves.get(HV_CPUID_ENLIGHTMENT_INFO)
    nested = hv_leaves.get(HV_CPUID_NESTED_FEATURES)
    if hint is not None:
        recommended = bool(hint[0] & HV_ENLIGHTENED_VMCS_RECOMMENDED)
        high = nested[0] & 0xFF if nested is not None else None
        low = nested[0] >> 8 & 0xFF if nested is not None else None
        # hv_init_evmcs(): KVM uses eVMCS when it is recommended and the highest
        # version offered is at least the one KVM implements.
        usable = recommended and high is not None and high >= KVM_EVMCS_VERSION
        out["evmcs"] = {"recommended": recommended, "version_low": low, "version_high": high,
                        "kvm_uses_evmcs": usable}
    return out


# ---------------------------------------------------------------------------------------
# TDX: the seamret_invd_vmcs erratum.  arch/x86/virt/vmx/tdx/tdx.c check_tdx_erratum()
# reads IA32_VMX_BASIC on a TDX host and, when bit 60 (VMX_BASIC_NO_SEAMRET_INVD_VMCS)
# is clear, sets X86_BUG_SEAMRET_INVD_VMCS ("seamret_invd_vmcs" in /proc/cpuinfo bugs):
# SEAMRET from the P-SEAMLDR clears the current VMCS, so the tdx-host driver hides the
# P-SEAMLDR sysfs files and TDX module runtime updates.

VMX_BASIC_NO_SEAMRET_INVD_VMCS = 1 << 60


def seamret_erratum(basic: int) -> dict:
    keeps = bool(basic & VMX_BASIC_NO_SEAMRET_INVD_VMCS)
    return {
        "bit60": keeps,
        "seamret_keeps_current_vmcs": keeps,
        "kernel_bug": None if keeps else "X86_BUG_SEAMRET_INVD_VMCS",
        "meaning": ("IA32_VMX_BASIC bit 60 set: SEAMRET from the P-SEAMLDR keeps the current "
                    "VMCS; a TDX host may call the P-SEAMLDR (TDX module runtime update)"
                    if keeps else
                    "IA32_VMX_BASIC bit 60 clear: SEAMRET from the P-SEAMLDR clears the "
                    "current VMCS; on a TDX host the kernel sets X86_BUG_SEAMRET_INVD_VMCS "
                    "(\"seamret_invd_vmcs\") and hides the P-SEAMLDR (no TDX module runtime "
                    "update); it means nothing on a CPU without TDX"),
    }


# ---------------------------------------------------------------------------------------
# Any MSR `vmxprobe decode` accepts.


def decode_any(index: int, value: int) -> dict:
    """Decode IA32_FEATURE_CONTROL, IA32_VMX_BASIC or a capability MSR value; the result
    always carries msr, index, kind and raw."""
    from vmxprobe import vmx
    value &= _M64
    if index == IA32_FEATURE_CONTROL:
        out = {"msr": "IA32_FEATURE_CONTROL", "index": "0x3a", "kind": "feature_control"}
        out.update(vmx.decode_feature_control(value))
        known = 0
        for f in vmx.FEATURE_CONTROL_FIELDS:
            known |= ((1 << (f.hi - f.lo + 1)) - 1) << f.lo
        out["reserved"] = _set_bits(value & ~known & _M64)
        out["errors"] = []
        return out
    if index == IA32_VMX_BASIC:
        out = {"msr": "IA32_VMX_BASIC", "index": "0x480", "kind": "basic"}
        out.update(vmx.decode_vmx_basic(value))
        out["errors"] = []
        if value and not out["vmcs_size"]:
            out["errors"].append("VMCS size (bits 44:32) is 0: no real CPU reports that")
        if out["vmcs_size"] > 4096:
            out["errors"].append("VMCS size %d is above 4096: the SDM bounds it by 4 KiB" % out["vmcs_size"])
        out["seamret"] = seamret_erratum(value)
        syn = synthetic_vmx(value, None)
        out["synthetic"] = syn["how"] if syn else None
        return out
    return decode(index, value)
