"""The fields of the VMX capability MSRs that are not control tables: IA32_VMX_MISC (A.6),
IA32_VMX_EPT_VPID_CAP (A.10), IA32_VMX_VMCS_ENUM (A.9), and the CR0/CR4 bits the CR fixed
MSRs (A.7, A.8) name. Each row names where the SDM defines it and what Linux calls it
(asm/vmx.h VMX_MISC_*, VMX_EPT_*, VMX_VPID_*; uapi/asm/processor-flags.h X86_CR*_*)."""

from __future__ import annotations

from vmxprobe.arch.vmx import Field

F = Field  # vmx.Field: one field of a register, with its kernel and SDM names

# IA32_VMX_MISC, SDM Vol. 3D A.6.  max_msr_list_size and activity_states are derived.
MISC_FIELDS = (
    F(
        "preemption_timer_rate",
        0,
        4,
        "vmx_misc_preemption_timer_rate()",
        "A.6 bits 4:0: the timer counts down by 1 each time this TSC bit changes",
    ),
    F(
        "store_efer_lma",
        5,
        5,
        "VMX_MISC_SAVE_EFER_LMA",
        "A.6 bit 5: VM exits store IA32_EFER.LMA into the IA-32e mode guest control",
    ),
    F("activity_hlt", 6, 6, "VMX_MISC_ACTIVITY_HLT", "A.6 bit 6: HLT activity state"),
    F("activity_shutdown", 7, 7, "VMX_MISC_ACTIVITY_SHUTDOWN", "A.6 bit 7: shutdown activity state"),
    F(
        "activity_wait_for_sipi",
        8,
        8,
        "VMX_MISC_ACTIVITY_WAIT_SIPI",
        "A.6 bit 8: wait-for-SIPI activity state",
    ),
    F("intel_pt_in_vmx", 14, 14, "VMX_MISC_INTEL_PT", "A.6 bit 14: Intel PT can be used in VMX operation"),
    F(
        "rdmsr_smbase_in_smm",
        15,
        15,
        "VMX_MISC_RDMSR_IN_SMM",
        "A.6 bit 15: RDMSR can read IA32_SMBASE in SMM",
    ),
    F("cr3_target_count", 16, 24, "vmx_misc_cr3_count()", "A.6 bits 24:16: number of CR3-target values"),
    F(
        "msr_list_size_code",
        25,
        27,
        "vmx_misc_max_msr()",
        "A.6 bits 27:25: N; 512 * (N + 1) is the recommended maximum MSRs per list",
    ),
    F(
        "smm_monitor_ctl_bit2",
        28,
        28,
        "VMX_MISC_VMXOFF_BLOCK_SMI",
        "A.6 bit 28: IA32_SMM_MONITOR_CTL bit 2 can be set (VMXOFF leaves SMIs blocked)",
    ),
    F(
        "vmwrite_any_field",
        29,
        29,
        "VMX_MISC_VMWRITE_SHADOW_RO_FIELDS",
        "A.6 bit 29: VMWRITE can write any supported VMCS field, VM-exit information included",
    ),
    F(
        "inject_zero_length",
        30,
        30,
        "VMX_MISC_ZERO_LEN_INS",
        "A.6 bit 30: VM entry may inject software interrupts/exceptions with instruction length 0",
    ),
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
    F(
        "ept_supervisor_shadow_stack",
        23,
        23,
        None,
        "A.10 bit 23: supervisor shadow-stack control (EPTP bit 7)",
    ),
    F("invept_single_context", 25, 25, "VMX_EPT_EXTENT_CONTEXT_BIT", "A.10 bit 25: single-context INVEPT"),
    F("invept_all_context", 26, 26, "VMX_EPT_EXTENT_GLOBAL_BIT", "A.10 bit 26: all-context INVEPT"),
    F("invvpid", 32, 32, "VMX_VPID_INVVPID_BIT", "A.10 bit 32: INVVPID is supported"),
    F(
        "invvpid_individual_address",
        40,
        40,
        "VMX_VPID_EXTENT_INDIVIDUAL_ADDR_BIT",
        "A.10 bit 40: individual-address INVVPID",
    ),
    F(
        "invvpid_single_context",
        41,
        41,
        "VMX_VPID_EXTENT_SINGLE_CONTEXT_BIT",
        "A.10 bit 41: single-context INVVPID",
    ),
    F(
        "invvpid_all_context",
        42,
        42,
        "VMX_VPID_EXTENT_GLOBAL_CONTEXT_BIT",
        "A.10 bit 42: all-context INVVPID",
    ),
    F(
        "invvpid_single_context_retaining_globals",
        43,
        43,
        "VMX_VPID_EXTENT_SINGLE_NON_GLOBAL_BIT",
        "A.10 bit 43: single-context-retaining-globals INVVPID",
    ),
)

# IA32_VMX_VMCS_ENUM, SDM Vol. 3D A.9.  Bit 0 and bits 63:10 are reserved.
VMCS_ENUM_FIELDS = (
    F("highest_index", 1, 9, None, "A.9 bits 9:1: highest index value used in any VMCS encoding"),
)

# Control-register bits named for the CR fixed MSRs (A.7, A.8): (bit, SDM name, Linux
# uapi/asm/processor-flags.h name or None).
CR0_BITS = (
    (0, "PE", "X86_CR0_PE"),
    (1, "MP", "X86_CR0_MP"),
    (2, "EM", "X86_CR0_EM"),
    (3, "TS", "X86_CR0_TS"),
    (4, "ET", "X86_CR0_ET"),
    (5, "NE", "X86_CR0_NE"),
    (16, "WP", "X86_CR0_WP"),
    (18, "AM", "X86_CR0_AM"),
    (29, "NW", "X86_CR0_NW"),
    (30, "CD", "X86_CR0_CD"),
    (31, "PG", "X86_CR0_PG"),
)
CR4_BITS = (
    (0, "VME", "X86_CR4_VME"),
    (1, "PVI", "X86_CR4_PVI"),
    (2, "TSD", "X86_CR4_TSD"),
    (3, "DE", "X86_CR4_DE"),
    (4, "PSE", "X86_CR4_PSE"),
    (5, "PAE", "X86_CR4_PAE"),
    (6, "MCE", "X86_CR4_MCE"),
    (7, "PGE", "X86_CR4_PGE"),
    (8, "PCE", "X86_CR4_PCE"),
    (9, "OSFXSR", "X86_CR4_OSFXSR"),
    (10, "OSXMMEXCPT", "X86_CR4_OSXMMEXCPT"),
    (11, "UMIP", "X86_CR4_UMIP"),
    (12, "LA57", "X86_CR4_LA57"),
    (13, "VMXE", "X86_CR4_VMXE"),
    (14, "SMXE", "X86_CR4_SMXE"),
    (16, "FSGSBASE", "X86_CR4_FSGSBASE"),
    (17, "PCIDE", "X86_CR4_PCIDE"),
    (18, "OSXSAVE", "X86_CR4_OSXSAVE"),
    (19, "KL", None),
    (20, "SMEP", "X86_CR4_SMEP"),
    (21, "SMAP", "X86_CR4_SMAP"),
    (22, "PKE", "X86_CR4_PKE"),
    (23, "CET", "X86_CR4_CET"),
    (24, "PKS", None),
    (25, "UINTR", None),
    (27, "LASS", "X86_CR4_LASS"),
    (28, "LAM_SUP", "X86_CR4_LAM_SUP"),
    (32, "FRED", "X86_CR4_FRED"),
)
CR_BITS = {"CR0": CR0_BITS, "CR4": CR4_BITS}
