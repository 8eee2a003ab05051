"""Tests for vmxprobe.kernel.vmcs_config: setup_vmcs_config() (arch/x86/kvm/vmx/vmx.c) step
by step, held to the kernel's own code: Debian's linux-source-6.1 (6.1.192) for 6.1, and
the torvalds/linux changes after it, each test naming the release its rule belongs to.

The expected control masks are written out here from arch/x86/kvm/vmx/vmx.h, macro by
macro, not taken from the module under test. Register values are built from SDM bit
positions; where a whole published CPU is wanted, tests/published.py gives one."""

import pytest

from tests.published import PUBLISHED
from vmxprobe.kernel import vmcs_config as vc
from vmxprobe.kernel.release import model_for
from vmxprobe.kernel.vmcs_config import CpuidInputs, setup_vmcs_config

PIN, PROC, PROC2, PROC3, EXIT, ENTRY = 0x481, 0x482, 0x48B, 0x492, 0x483, 0x484
BASIC, MISC, EPT_VPID_CAP, CR0_FIXED1, CR4_FIXED1 = 0x480, 0x485, 0x48C, 0x487, 0x489
ALL = 0xFFFFFFFF


def bits(*ns):
    return sum(1 << n for n in ns)


def ctl(lo=0, hi=ALL):
    """A 32/32 control MSR: low dword allowed-0 (must be 1), high dword allowed-1."""
    return hi << 32 | lo


# --- arch/x86/kvm/vmx/vmx.h, 6.1.192, x86_64 build ----------------------------------------
# KVM_REQUIRED_VMX_PIN_BASED_VM_EXEC_CONTROL: PIN_BASED_EXT_INTR_MASK (0), PIN_BASED_NMI_EXITING (3)
REQ_PIN = bits(0, 3)
# KVM_OPTIONAL_VMX_PIN_BASED_VM_EXEC_CONTROL: PIN_BASED_VIRTUAL_NMIS (5),
# PIN_BASED_POSTED_INTR (7), PIN_BASED_VMX_PREEMPTION_TIMER (6)
OPT_PIN = bits(5, 6, 7)
# KVM_REQUIRED_VMX_CPU_BASED_VM_EXEC_CONTROL: HLT_EXITING (7), CR3_LOAD_EXITING (15),
# CR3_STORE_EXITING (16), UNCOND_IO_EXITING (24), MOV_DR_EXITING (23), USE_TSC_OFFSETTING
# (3), MWAIT_EXITING (10), MONITOR_EXITING (29), INVLPG_EXITING (9), RDPMC_EXITING (11),
# INTR_WINDOW_EXITING (2); CONFIG_X86_64 adds CR8_LOAD_EXITING (19), CR8_STORE_EXITING (20)
REQ_PROC = bits(7, 15, 16, 24, 23, 3, 10, 29, 9, 11, 2, 19, 20)
# KVM_OPTIONAL_VMX_CPU_BASED_VM_EXEC_CONTROL: RDTSC_EXITING (12), TPR_SHADOW (21),
# USE_IO_BITMAPS (25), MONITOR_TRAP_FLAG (27), USE_MSR_BITMAPS (28), NMI_WINDOW_EXITING
# (22), PAUSE_EXITING (30), ACTIVATE_SECONDARY_CONTROLS (31), ACTIVATE_TERTIARY_CONTROLS (17)
OPT_PROC = bits(12, 21, 25, 27, 28, 22, 30, 31, 17)
# KVM_REQUIRED_VMX_SECONDARY_VM_EXEC_CONTROL 0. KVM_OPTIONAL_VMX_SECONDARY_VM_EXEC_CONTROL:
# VIRTUALIZE_APIC_ACCESSES (0), VIRTUALIZE_X2APIC_MODE (4), WBINVD_EXITING (6), ENABLE_VPID
# (5), ENABLE_EPT (1), UNRESTRICTED_GUEST (7), PAUSE_LOOP_EXITING (10), DESC (2),
# ENABLE_RDTSCP (3), ENABLE_INVPCID (12), APIC_REGISTER_VIRT (8), VIRTUAL_INTR_DELIVERY (9),
# SHADOW_VMCS (14), XSAVES (20), RDSEED_EXITING (16), RDRAND_EXITING (11), ENABLE_PML (17),
# TSC_SCALING (25), ENABLE_USR_WAIT_PAUSE (26), PT_USE_GPA (24), PT_CONCEAL_VMX (19),
# ENABLE_VMFUNC (13), BUS_LOCK_DETECTION (30), NOTIFY_VM_EXITING (31), ENCLS_EXITING (15)
OPT_PROC2 = bits(0, 4, 6, 5, 1, 7, 10, 2, 3, 12, 8, 9, 14, 20, 16, 11, 17, 25, 26, 24, 19, 13, 30, 31, 15)
# KVM_OPTIONAL_VMX_TERTIARY_VM_EXEC_CONTROL: TERTIARY_EXEC_IPI_VIRT (4)
OPT_PROC3 = bits(4)
# KVM_REQUIRED_VMX_VM_EXIT_CONTROLS: SAVE_DEBUG_CONTROLS (2), ACK_INTR_ON_EXIT (15);
# CONFIG_X86_64 adds HOST_ADDR_SPACE_SIZE (9)
REQ_EXIT = bits(2, 15, 9)
# KVM_OPTIONAL_VMX_VM_EXIT_CONTROLS: LOAD_IA32_PERF_GLOBAL_CTRL (12), SAVE_IA32_PAT (18),
# LOAD_IA32_PAT (19), SAVE_IA32_EFER (20), SAVE_VMX_PREEMPTION_TIMER (22), LOAD_IA32_EFER
# (21), CLEAR_BNDCFGS (23), PT_CONCEAL_PIP (24), CLEAR_IA32_RTIT_CTL (25)
OPT_EXIT = bits(12, 18, 19, 20, 22, 21, 23, 24, 25)
# KVM_REQUIRED_VMX_VM_ENTRY_CONTROLS: LOAD_DEBUG_CONTROLS (2); CONFIG_X86_64 adds IA32E_MODE (9)
REQ_ENTRY = bits(2, 9)
# KVM_OPTIONAL_VMX_VM_ENTRY_CONTROLS: LOAD_IA32_PERF_GLOBAL_CTRL (13), LOAD_IA32_PAT (14),
# LOAD_IA32_EFER (15), LOAD_BNDCFGS (16), PT_CONCEAL_PIP (17), LOAD_IA32_RTIT_CTL (18)
OPT_ENTRY = bits(13, 14, 15, 16, 17, 18)
# Added after 6.1: SECONDARY_EXEC_EPT_VIOLATION_VE (18) in 6.10 ("KVM: VMX: Introduce test
# mode related to EPT violation VE"); VM_ENTRY_LOAD_CET_STATE (20) and
# VM_EXIT_LOAD_CET_STATE (28) with KVM's CET support in 6.18.
EPT_VIOLATION_VE, ENTRY_CET, EXIT_CET = 18, 20, 28

# The published Skylake registers (tests/published.py): a CPU whose every requested
# control is there, used where a realistic BASIC, MISC and EPT/VPID CAP are wanted.
SKYLAKE = PUBLISHED["skylake-u"]["msrs"]
COFFEE_LAKE_SIGNATURE = 0x000906EA  # CPUID.01H:EAX, family 6 model 0x9E: on no errata list
GOOD_CPUID = CpuidInputs(max_leaf=0x16, sgx1=True, signature=COFFEE_LAKE_SIGNATURE)


def capable(**override):
    """Every control allowed as 1 and none forced (low dwords 0), a valid BASIC, EPT and
    VPID capabilities that match the controls."""
    msrs = {
        BASIC: SKYLAKE[BASIC],
        MISC: SKYLAKE[MISC],
        PIN: ctl(),
        PROC: ctl(),
        PROC2: ctl(),
        PROC3: (1 << 64) - 1,
        EXIT: ctl(),
        ENTRY: ctl(),
        EPT_VPID_CAP: SKYLAKE[EPT_VPID_CAP],
        CR0_FIXED1: SKYLAKE[CR0_FIXED1],
        CR4_FIXED1: SKYLAKE[CR4_FIXED1],
    }
    msrs.update(override)
    return msrs


def setup(msrs, release="6.1.0-57-amd64", cpuid=GOOD_CPUID, **kw):
    return setup_vmcs_config(msrs, cpuid, model_for(release), **kw)


def config(msrs, release="6.1.0-57-amd64", cpuid=GOOD_CPUID, **kw):
    s = setup(msrs, release, cpuid, **kw)
    assert s.config is not None, s.refusals
    return s.config


# --- the masks: adjust_vmx_controls() with every bit allowed ------------------------------


@pytest.mark.parametrize(
    "release,proc2,exit_,entry",
    [
        # vmx.c setup_vmcs_config(), 6.1: exactly vmx.h's masks.
        ("6.1.0-57-amd64", OPT_PROC2, REQ_EXIT | OPT_EXIT, REQ_ENTRY | OPT_ENTRY),
        ("6.9.12-generic", OPT_PROC2, REQ_EXIT | OPT_EXIT, REQ_ENTRY | OPT_ENTRY),
        # 6.10: EPT_VIOLATION_VE joins the optional secondary controls.
        ("6.10.0", OPT_PROC2 | bits(EPT_VIOLATION_VE), REQ_EXIT | OPT_EXIT, REQ_ENTRY | OPT_ENTRY),
        ("6.17.3", OPT_PROC2 | bits(EPT_VIOLATION_VE), REQ_EXIT | OPT_EXIT, REQ_ENTRY | OPT_ENTRY),
        # 6.18: the CET pair joins the optional exit and entry controls.
        (
            "6.18.0",
            OPT_PROC2 | bits(EPT_VIOLATION_VE),
            REQ_EXIT | OPT_EXIT | bits(EXIT_CET),
            REQ_ENTRY | OPT_ENTRY | bits(ENTRY_CET),
        ),
        (
            "7.1.0",
            OPT_PROC2 | bits(EPT_VIOLATION_VE),
            REQ_EXIT | OPT_EXIT | bits(EXIT_CET),
            REQ_ENTRY | OPT_ENTRY | bits(ENTRY_CET),
        ),
    ],
)
def test_every_allowed_control_gives_exactly_the_requested_masks(release, proc2, exit_, entry):
    # arch/x86/kvm/vmx/vmx.c adjust_vmx_controls(): ctl = (min | opt) & high, | low. With
    # every allowed-1 bit set and no allowed-0 bit, each field is min | opt, nothing more.
    c = config(capable(), release)
    assert c.pin_based_exec_ctrl == REQ_PIN | OPT_PIN
    assert c.cpu_based_exec_ctrl == REQ_PROC | OPT_PROC
    assert c.cpu_based_2nd_exec_ctrl == proc2
    assert c.cpu_based_3rd_exec_ctrl == OPT_PROC3  # adjust_vmx_controls64(): opt & allowed
    assert c.vmexit_ctrl == exit_
    assert c.vmentry_ctrl == entry


@pytest.mark.parametrize(
    "index,required,optional",
    [
        (PIN, REQ_PIN, OPT_PIN),
        (PROC, REQ_PROC, OPT_PROC),
        (PROC2, 0, OPT_PROC2),
        (PROC3, 0, OPT_PROC3),
        (EXIT, REQ_EXIT, OPT_EXIT),
        (ENTRY, REQ_ENTRY, OPT_ENTRY),
    ],
)
def test_requested_masks_on_6_1_are_vmx_h(index, required, optional):
    # arch/x86/kvm/vmx/vmx.h KVM_REQUIRED_VMX_* / KVM_OPTIONAL_VMX_* (6.1.192, x86_64).
    assert vc.requested(index, model_for("6.1.0-57-amd64")) == (required, optional)


def test_allowed0_bits_always_enter_the_config():
    # adjust_vmx_controls() (6.1): "ctl |= vmx_msr_low": a must-be-1 bit enters whether KVM
    # asked for it or not. The default1 bits (PIN_BASED_ALWAYSON_WITHOUT_TRUE_MSR 0x16,
    # CPU_BASED_ALWAYSON_WITHOUT_TRUE_MSR 0x0401e172, VM_EXIT_... 0x36dff,
    # VM_ENTRY_... 0x11ff, asm/vmx.h) are the usual case: none of them is requested.
    c = config(
        capable()
        | {
            PIN: ctl(lo=0x16),
            PROC: ctl(lo=0x0401E172),
            EXIT: ctl(lo=0x00036DFF),
            ENTRY: ctl(lo=0x000011FF),
            PROC2: ctl(lo=bits(22)),
        }
    )
    assert c.pin_based_exec_ctrl == REQ_PIN | OPT_PIN | 0x16
    assert c.cpu_based_exec_ctrl == REQ_PROC | OPT_PROC | 0x0401E172
    assert c.vmexit_ctrl == REQ_EXIT | OPT_EXIT | 0x00036DFF
    assert c.vmentry_ctrl == REQ_ENTRY | OPT_ENTRY | 0x000011FF
    # An allowed-0 bit KVM never requests (SECONDARY_EXEC_MODE_BASED_EPT_EXEC) enters too.
    assert c.cpu_based_2nd_exec_ctrl >> 22 & 1


def only_required(**extra_hi):
    """A CPU allowing exactly the controls KVM requires, and no EPT/VPID capabilities."""
    msrs = capable() | {
        PIN: ctl(hi=REQ_PIN),
        PROC: ctl(hi=REQ_PROC),
        PROC2: 0,
        EXIT: ctl(hi=REQ_EXIT),
        ENTRY: ctl(hi=REQ_ENTRY),
        EPT_VPID_CAP: 0,
    }
    for index, more in extra_hi.items():
        msrs[int(index, 16)] |= more << 32
    return msrs


@pytest.mark.parametrize(
    "index,field,required,unrequested",
    [
        (PIN, "pin_based_exec_ctrl", REQ_PIN, bits(1, 2, 4, 8, 31)),
        (PROC, "cpu_based_exec_ctrl", REQ_PROC, bits(0, 1, 4, 5, 6, 8, 13, 14, 18, 26)),
        (EXIT, "vmexit_ctrl", REQ_EXIT, bits(0, 1, 3, 10, 11, 13, 14, 16, 17, 26, 27, 29, 30, 31)),
        (ENTRY, "vmentry_ctrl", REQ_ENTRY, bits(0, 1, 3, 10, 11, 12, 19, 21, 22, 23, 31)),
    ],
)
def test_unrequested_allowed1_bits_never_enter(index, field, required, unrequested):
    # adjust_vmx_controls(): "ctl &= vmx_msr_high" on min | opt: an allowed-1 bit that
    # vmx.h does not list stays 0, so a CPU offering more builds the same field.
    assert getattr(config(only_required()), field) == required
    assert getattr(config(only_required(**{hex(index): unrequested})), field) == required


def test_unrequested_secondary_bits_never_enter():
    # MODE_BASED_EPT_EXEC (22), ENCLV_EXITING (28) and bits 21, 23, 27, 29: not in
    # KVM_OPTIONAL_VMX_SECONDARY_VM_EXEC_CONTROL.
    msrs = only_required(**{hex(PROC): bits(31)}) | {PROC2: ctl(hi=bits(21, 22, 23, 27, 28, 29))}
    assert config(msrs).cpu_based_2nd_exec_ctrl == 0


@pytest.mark.parametrize(
    "index,bit,name",
    [
        (PROC, 7, "CPU_BASED_HLT_EXITING"),
        (PROC, 19, "CPU_BASED_CR8_LOAD_EXITING"),  # required on x86_64 only
        (EXIT, 9, "VM_EXIT_HOST_ADDR_SPACE_SIZE"),
        (PIN, 3, "PIN_BASED_NMI_EXITING"),
        (ENTRY, 9, "VM_ENTRY_IA32E_MODE"),
    ],
)
def test_a_required_control_that_cannot_be_1_is_refused_by_name(index, bit, name):
    # adjust_vmx_controls(): "if (ctl_min & ~ctl) return -EIO" (6.1 and mainline).
    s = setup(capable() | {index: ctl(hi=ALL & ~(1 << bit))})
    assert s.config is None
    assert f"bit {bit} {name}" in s.refusals[0]
    assert f"(0x{index:x})" in s.refusals[0]


def test_required_controls_are_checked_in_the_kernels_order():
    # setup_vmcs_config() adjusts primary, (secondary), exit, pin, entry in that order and
    # returns at the first failure: with exit and pin both short, the exit MSR is named.
    s = setup(capable() | {EXIT: ctl(hi=ALL & ~bits(2)), PIN: ctl(hi=ALL & ~bits(0)), PROC: ctl()})
    assert s.config is None and len(s.refusals) == 1 and "(0x483)" in s.refusals[0]
    s = setup(capable() | {PIN: ctl(hi=ALL & ~bits(0)), ENTRY: ctl(hi=ALL & ~bits(2))})
    assert "(0x481)" in s.refusals[0]
    s = setup(capable() | {PROC: ctl(hi=ALL & ~bits(2)), EXIT: ctl(hi=0)})
    assert "(0x482)" in s.refusals[0]


# --- the clears, in the kernel's order ---------------------------------------------------


def test_no_secondary_controls_means_a_zero_secondary_field():
    # setup_vmcs_config(): the secondary MSR is read only "if (_cpu_based_exec_control &
    # CPU_BASED_ACTIVATE_SECONDARY_CONTROLS)". Without it (and without EPT/VPID CAP, which
    # would be refused) the field stays 0 whatever 0x48B holds.
    c = config(capable() | {PROC: ctl(hi=ALL & ~bits(31)), EPT_VPID_CAP: 0})
    assert c.cpu_based_2nd_exec_ctrl == 0
    # ... and with no VIRTUAL_INTR_DELIVERY, no posted interrupts either.
    assert not c.pin_based_exec_ctrl >> 7 & 1


def test_no_tpr_shadow_clears_the_apic_virtualization_controls():
    # setup_vmcs_config() (6.1): !(CPU_BASED_TPR_SHADOW) clears SECONDARY_EXEC_APIC_REGISTER_VIRT
    # (8), _VIRTUALIZE_X2APIC_MODE (4) and _VIRTUAL_INTR_DELIVERY (9) ...
    c = config(capable() | {PROC: ctl(hi=ALL & ~bits(21))})
    assert c.cpu_based_2nd_exec_ctrl == OPT_PROC2 & ~bits(4, 8, 9)
    # ... which in turn takes PIN_BASED_POSTED_INTR away (no virtual-interrupt delivery).
    assert c.pin_based_exec_ctrl == REQ_PIN | bits(5, 6)
    assert not c.cpu_based_exec_ctrl >> 21 & 1


def test_tertiary_controls_only_with_the_activate_bit():
    # setup_vmcs_config(): adjust_vmx_controls64(KVM_OPTIONAL_VMX_TERTIARY_VM_EXEC_CONTROL,
    # MSR_IA32_VMX_PROCBASED_CTLS3) only when CPU_BASED_ACTIVATE_TERTIARY_CONTROLS (17) is set.
    assert config(capable() | {PROC3: bits(4, 5, 7)}).cpu_based_3rd_exec_ctrl == bits(4)
    assert config(capable() | {PROC3: bits(5, 7)}).cpu_based_3rd_exec_ctrl == 0
    assert config(capable() | {PROC: ctl(hi=ALL & ~bits(17))}).cpu_based_3rd_exec_ctrl == 0


EPT_CAP_WARNING = "EPT CAP should not exist if not support 1-setting enable EPT VM-execution control"
VPID_CAP_WARNING = "VPID CAP should not exist if not support 1-setting enable VPID VM-execution control"


def test_ept_capabilities_without_the_ept_control_strict():
    # setup_vmcs_config() (6.0+): rdmsr_safe(MSR_IA32_VMX_EPT_VPID_CAP) whatever the
    # controls say; EPT bits without SECONDARY_EXEC_ENABLE_EPT warn once and, with
    # error_on_inconsistent_vmcs_config (default Y), return -EIO.
    s = setup(capable() | {PROC2: ctl(hi=ALL & ~bits(1))})
    assert s.config is None
    assert EPT_CAP_WARNING in s.warnings
    assert "IA32_VMX_EPT_VPID_CAP (0x48c) reports EPT capabilities" in s.refusals[0]
    # With no secondary controls at all the capability MSR is still read.
    s = setup(capable() | {PROC: ctl(hi=ALL & ~bits(31))})
    assert s.config is None and EPT_CAP_WARNING in s.warnings


@pytest.mark.parametrize("release,ve_kept", [("6.1.0-57-amd64", False), ("6.9.1", False), ("6.10.0", False)])
def test_ept_capabilities_without_the_ept_control_not_strict(release, ve_kept):
    # Without strict: vmx_cap->ept = 0 and the config is built. 6.10 also clears
    # SECONDARY_EXEC_EPT_VIOLATION_VE there (it was never requested before 6.10).
    s = setup(capable() | {PROC2: ctl(hi=ALL & ~bits(1))}, release, strict=False)
    assert s.config is not None and s.ept_cap == 0
    assert s.vpid_cap == SKYLAKE[EPT_VPID_CAP] >> 32
    assert EPT_CAP_WARNING in s.warnings
    assert bool(s.config.cpu_based_2nd_exec_ctrl >> EPT_VIOLATION_VE & 1) == ve_kept


def test_ept_violation_ve_survives_when_ept_is_there_from_6_10():
    assert config(capable(), "6.10.0").cpu_based_2nd_exec_ctrl >> EPT_VIOLATION_VE & 1


def test_vpid_capabilities_without_the_vpid_control():
    # setup_vmcs_config() (6.0+): the high dword of 0x48C without SECONDARY_EXEC_ENABLE_VPID.
    s = setup(capable() | {PROC2: ctl(hi=ALL & ~bits(5))})
    assert s.config is None and VPID_CAP_WARNING in s.warnings
    assert "reports VPID capabilities" in s.refusals[0]
    s = setup(capable() | {PROC2: ctl(hi=ALL & ~bits(5))}, strict=False)
    assert s.config is not None and s.vpid_cap == 0 and s.ept_cap == SKYLAKE[EPT_VPID_CAP] & ALL


def test_a_faulting_ept_vpid_cap_reads_zero_and_is_consistent():
    # rdmsr_safe() zeroes both halves on a fault: a CPU without 0x48C and without EPT/VPID
    # controls passes the checks.
    c = config(capable() | {PROC2: ctl(hi=ALL & ~bits(1, 5)), EPT_VPID_CAP: 0})
    assert c.cpu_based_2nd_exec_ctrl == OPT_PROC2 & ~bits(1, 5)


@pytest.mark.parametrize(
    "cpuid,kept",
    [
        # cpu_has_sgx(): cpuid_eax(0) >= 0x12 && (cpuid_eax(0x12) & BIT(0)), raw CPUID of
        # the CPU setup_vmcs_config() runs on (vmx.c, 6.1 and mainline).
        (CpuidInputs(max_leaf=0x16, sgx1=True, signature=COFFEE_LAKE_SIGNATURE), True),
        (CpuidInputs(max_leaf=0x12, sgx1=True, signature=COFFEE_LAKE_SIGNATURE), True),
        (CpuidInputs(max_leaf=0x16, sgx1=False, signature=COFFEE_LAKE_SIGNATURE), False),
        # The highest leaf below 0x12: leaf 0x12 is never asked, whatever it would say.
        (CpuidInputs(max_leaf=0x11, sgx1=True, signature=COFFEE_LAKE_SIGNATURE), False),
        (CpuidInputs(max_leaf=0x0D, sgx1=None, signature=COFFEE_LAKE_SIGNATURE), False),
    ],
)
def test_encls_exiting_needs_sgx1_in_raw_cpuid(cpuid, kept):
    c = config(capable(), cpuid=cpuid)
    assert bool(c.cpu_based_2nd_exec_ctrl >> 15 & 1) == kept


def test_encls_exiting_with_sgx_not_read_is_kept_and_said():
    s = setup(capable(), cpuid=CpuidInputs(max_leaf=0x16, sgx1=None, signature=COFFEE_LAKE_SIGNATURE))
    assert s.config is not None and s.config.cpu_based_2nd_exec_ctrl >> 15 & 1
    assert any("SGX1" in u and "ENCLS" in u for u in s.unknown)


# vmx.c vmx_preemption_cpu_tfms[] (6.1.192; unchanged in mainline): CPUID.01H:EAX values of
# parts whose VMX preemption timer is broken (Xeon 7500, i7/i5/i3 600/500/400, Xeon 3400,
# i7-800/900, Xeon 3500/5500, Xeon E3-1220 V2).
BROKEN_TIMER = [
    0x000206E6,
    0x00020652,
    0x00020655,
    0x000106E5,
    0x000106A0,
    0x000106A1,
    0x000106A4,
    0x000106A5,
    0x000306A8,
]


@pytest.mark.parametrize("signature", BROKEN_TIMER, ids=hex)
def test_broken_preemption_timer_list_clears_pin_bit_6(signature):
    # cpu_has_broken_vmx_preemption_timer(): "eax &= ~(0x3U << 14 | 0xfU << 28)" then an
    # exact match: the masked bits do not matter, the others do.
    for eax in (signature, signature | 0x3 << 14 | 0xF << 28):
        c = config(capable(), cpuid=CpuidInputs(0x16, True, eax))
        assert c.pin_based_exec_ctrl == REQ_PIN | bits(5, 7)
    c = config(capable(), cpuid=CpuidInputs(0x16, True, signature ^ 8))  # a stepping not listed
    assert c.pin_based_exec_ctrl >> 6 & 1


def test_preemption_timer_not_checked_when_cpuid_1_was_not_read():
    s = setup(capable(), cpuid=CpuidInputs(0x16, True, None))
    assert s.config is not None and s.config.pin_based_exec_ctrl >> 6 & 1
    assert any("preemption-timer" in u for u in s.unknown)


def test_posted_interrupts_need_virtual_interrupt_delivery():
    # setup_vmcs_config(): !(SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY) clears PIN_BASED_POSTED_INTR,
    # even where the pin-based MSR allows it.
    c = config(capable() | {PROC2: ctl(hi=ALL & ~bits(9))})
    assert c.pin_based_exec_ctrl == REQ_PIN | bits(5, 6)
    assert config(capable()).pin_based_exec_ctrl == REQ_PIN | bits(5, 6, 7)


# --- entry/exit pairs: vmcs_entry_exit_pairs[] -------------------------------------------

# (entry bit, exit bit): PERF_GLOBAL_CTRL, PAT, EFER, BNDCFGS, RTIT_CTL (6.0+); CET (6.18+).
PAIRS = [(13, 12), (14, 19), (15, 21), (16, 23), (18, 25)]


@pytest.mark.parametrize("entry_bit,exit_bit", PAIRS)
def test_each_pair_is_checked_on_6_1(entry_bit, exit_bit):
    # 6.1 setup_vmcs_config(): "if (!(_vmentry_control & n_ctrl) == !(_vmexit_control &
    # x_ctrl)) continue; pr_warn_once(...); if (error_on_inconsistent_vmcs_config) return -EIO"
    s = setup(capable() | {EXIT: ctl(hi=ALL & ~bits(exit_bit))})
    assert s.config is None
    assert f"Inconsistent VM-Entry/VM-Exit pair, entry = {1 << entry_bit:x}, exit = 0" in s.warnings
    s = setup(capable() | {ENTRY: ctl(hi=ALL & ~bits(entry_bit))})
    assert s.config is None
    assert f"Inconsistent VM-Entry/VM-Exit pair, entry = 0, exit = {1 << exit_bit:x}" in s.warnings


def test_unpaired_exit_controls_need_no_partner():
    # The comment above vmcs_entry_exit_pairs[]: SAVE_IA32_PAT and SAVE_IA32_EFER are
    # absent (KVM never uses them), LOAD/SAVE_DEBUG_CONTROLS are mandatory.
    c = config(capable() | {EXIT: ctl(hi=ALL & ~bits(18, 20))})
    assert c.vmexit_ctrl == REQ_EXIT | OPT_EXIT & ~bits(18, 20)
    assert c.vmentry_ctrl == REQ_ENTRY | OPT_ENTRY


def test_not_strict_6_1_clears_both_sides_of_every_bad_pair_and_warns_once():
    # 6.1 without strict: the loop goes on, "_vmentry_control &= ~n_ctrl; _vmexit_control
    # &= ~x_ctrl" for each bad pair; pr_warn_once() prints only the first.
    s = setup(capable() | {EXIT: ctl(hi=ALL & ~bits(12, 21))}, strict=False)
    assert s.config is not None
    assert s.config.vmentry_ctrl == REQ_ENTRY | OPT_ENTRY & ~bits(13, 15)
    assert s.config.vmexit_ctrl == REQ_EXIT | OPT_EXIT & ~bits(12, 21)
    assert s.warnings == ("Inconsistent VM-Entry/VM-Exit pair, entry = 2000, exit = 0",)


def test_strict_6_1_stops_at_the_first_bad_pair():
    s = setup(capable() | {EXIT: ctl(hi=ALL & ~bits(12, 21))})
    assert s.config is None
    assert "IA32_PERF_GLOBAL_CTRL" in s.refusals[0] and "IA32_EFER" not in s.refusals[0]


@pytest.mark.parametrize("strict", [True, False])
def test_6_15_walks_every_pair_with_the_new_message(strict):
    # 6.15 vmx_check_entry_exit_pairs(): every pair, "entry = %llx (%llx), exit = %llx
    # (%llx)", both sides cleared in either mode, -EIO at the end when strict.
    s = setup(capable() | {EXIT: ctl(hi=ALL & ~bits(12, 21))}, "6.15.2", strict=strict)
    assert s.warnings[:1] == ("Inconsistent VM-Entry/VM-Exit pair, entry = 2000 (2000), exit = 0 (1000)",)
    if strict:
        assert s.config is None
        assert "IA32_PERF_GLOBAL_CTRL" in s.refusals[0] and "IA32_EFER" in s.refusals[0]
    else:
        assert s.config is not None and s.config.vmentry_ctrl == REQ_ENTRY | OPT_ENTRY & ~bits(13, 15)


def test_6_14_still_uses_the_old_message():
    s = setup(capable() | {EXIT: ctl(hi=ALL & ~bits(12))}, "6.14.11")
    assert s.warnings == ("Inconsistent VM-Entry/VM-Exit pair, entry = 2000, exit = 0",)


@pytest.mark.parametrize(
    "release,refused",
    [
        # Before 6.18 KVM requests neither CET control: no pair, nothing to disagree on.
        ("6.17.3", False),
        # 6.18: { VM_ENTRY_LOAD_CET_STATE, VM_EXIT_LOAD_CET_STATE } joins the table.
        ("6.18.0", True),
        ("7.1.0", True),
    ],
)
def test_the_cet_pair_from_6_18(release, refused):
    s = setup(capable() | {EXIT: ctl(hi=ALL & ~bits(EXIT_CET))}, release)
    assert (s.config is None) == refused
    if refused:
        assert "CET state" in s.refusals[0]
        assert "entry = 100000 (100000), exit = 0 (10000000)" in s.warnings[0]
    else:
        assert not s.config.vmentry_ctrl >> ENTRY_CET & 1


# --- the Nehalem/Westmere PERF_GLOBAL_CTRL erratum ----------------------------------------

PERF_WARNING = "VM_EXIT_LOAD_IA32_PERF_GLOBAL_CTRL does not work properly. Using workaround"


def signature(model, stepping=2):
    """CPUID.01H:EAX for family 6: extended model in bits 19:16, model in 7:4."""
    return (model >> 4) << 16 | 6 << 8 | (model & 0xF) << 4 | stepping


@pytest.mark.parametrize("model", [0x1A, 0x1E, 0x25, 0x2C, 0x2E])  # INTEL_NEHALEM_EP ... _EX
def test_perf_global_ctrl_erratum_clears_the_pair_from_6_13(model):
    # 6.13 setup_vmcs_config() (revert of "Move LOAD_IA32_PERF_GLOBAL_CTRL errata handling
    # out of setup_vmcs_config()"): on these boot_cpu_data.x86_vfm both controls are cleared
    # in vmcs_config and pr_warn_once() prints the workaround line.
    cpuid = CpuidInputs(0x0B, False, signature(model))
    s = setup(capable(), "6.13.0", cpuid)
    assert s.config is not None
    assert not s.config.vmentry_ctrl >> 13 & 1 and not s.config.vmexit_ctrl >> 12 & 1
    assert PERF_WARNING in s.warnings
    # 6.1.192 applies the erratum per VMCS (vmx_vmentry_ctrl()/vmx_vmexit_ctrl()), never
    # to vmcs_config: both stay.
    c = config(capable(), "6.1.0-57-amd64", cpuid)
    assert c.vmentry_ctrl >> 13 & 1 and c.vmexit_ctrl >> 12 & 1
    assert config(capable(), "6.12.9", cpuid).vmentry_ctrl >> 13 & 1


def test_perf_global_ctrl_erratum_warns_even_without_the_controls():
    # The switch on x86_vfm prints the warning for the model, whatever the controls were.
    cpuid = CpuidInputs(0x0B, False, signature(0x2C))
    s = setup(capable() | {EXIT: ctl(hi=ALL & ~bits(12)), ENTRY: ctl(hi=ALL & ~bits(13))}, "6.13.0", cpuid)
    assert s.config is not None and PERF_WARNING in s.warnings


def test_perf_global_ctrl_erratum_comes_after_the_pair_check():
    # The pair check runs first: a Westmere-EP offering entry bit 13 without exit bit 12
    # is refused (strict) before the erratum could clear both.
    cpuid = CpuidInputs(0x0B, False, signature(0x2C))
    assert setup(capable() | {EXIT: ctl(hi=ALL & ~bits(12))}, "6.13.0", cpuid).config is None


def test_perf_global_ctrl_erratum_spares_other_models():
    cpuid = CpuidInputs(0x0D, False, signature(0x2A))  # Sandy Bridge
    s = setup(capable(), "6.13.0", cpuid)
    assert s.config.vmentry_ctrl >> 13 & 1 and PERF_WARNING not in s.warnings


# --- IA32_VMX_BASIC ----------------------------------------------------------------------


def with_size(size):
    return SKYLAKE[BASIC] & ~(0x1FFF << 32) | size << 32


@pytest.mark.parametrize(
    "basic,words",
    [
        # setup_vmcs_config(): "(vmx_msr_high & 0x1fff) > PAGE_SIZE" -> -EIO
        (with_size(4097), "VMCS size 4097 (bits 44:32) > PAGE_SIZE 4096"),
        # CONFIG_X86_64: "vmx_msr_high & (1u<<16)" -> -EIO
        (SKYLAKE[BASIC] | 1 << 48, "bit 48"),
        # "((vmx_msr_high >> 18) & 15) != 6" -> -EIO
        (SKYLAKE[BASIC] & ~(0xF << 50), "memory type (bits 53:50) is 0, not 6"),
        (SKYLAKE[BASIC] & ~(0xF << 50) | 5 << 50, "is 5, not 6"),
    ],
)
def test_basic_checks(basic, words):
    s = setup(capable() | {BASIC: basic})
    assert s.config is None and words in s.refusals[0]
    assert words in vc.basic_refusals(basic)[0]


def test_basic_of_exactly_a_page_and_every_other_bit_is_kept_whole():
    # vmcs_config.size, basic_cap and revision_id (6.1) hold all 64 bits of BASIC.
    value = with_size(4096) | 1 << 55 | 1 << 54 | 0x12345
    assert config(capable() | {BASIC: value}).basic == value


def test_basic_checks_come_after_the_pairs():
    # The pair loop runs before rdmsr(MSR_IA32_VMX_BASIC): a CPU failing both is refused
    # for the pair.
    s = setup(capable() | {EXIT: ctl(hi=ALL & ~bits(12)), BASIC: with_size(8192)})
    assert "inconsistent VM-entry/VM-exit" in s.refusals[0]


def test_misc_is_kept_whole():
    assert config(capable() | {MISC: 0xFEDCBA9876543210}).misc == 0xFEDCBA9876543210


# --- eVMCS (KVM on Hyper-V) ------------------------------------------------------------------


def test_evmcs_sanitising_is_not_in_6_1():
    # 6.1.192 setup_vmcs_config() ends with the stores: no evmcs_sanitize_exec_ctrls().
    assert config(capable(), "6.1.0-57-amd64", evmcs=True) == config(capable(), "6.1.0-57-amd64")


def test_evmcs_sanitising_from_6_3_keeps_only_what_evmcs_v1_holds():
    # 6.3 setup_vmcs_config(): "if (enlightened_vmcs) evmcs_sanitize_exec_ctrls(vmcs_conf)",
    # which ANDs each field with EVMCS1_SUPPORTED_* (a whitelist).
    msrs = capable() | {PIN: ctl(lo=0x16), PROC: ctl(lo=0x0401E172), PROC2: ctl(lo=bits(22))}
    c = config(msrs, "6.12.0", evmcs=True)
    plain = config(msrs, "6.12.0")
    # EVMCS1_SUPPORTED_PINCTRL: ALWAYSON, EXT_INTR_MASK, NMI_EXITING, VIRTUAL_NMIS.
    assert c.pin_based_exec_ctrl == 0x16 | bits(0, 3, 5)
    # EVMCS1_SUPPORTED_EXEC_CTRL lacks ACTIVATE_TERTIARY_CONTROLS; _3RDEXEC is 0.
    assert c.cpu_based_exec_ctrl == plain.cpu_based_exec_ctrl & ~bits(17)
    assert plain.cpu_based_3rd_exec_ctrl == bits(4) and c.cpu_based_3rd_exec_ctrl == 0
    # EVMCS1_SUPPORTED_2NDEXEC lacks APIC access/register virtualization, VID, PLE, VMFUNC,
    # shadow VMCS, PML and EPT_VIOLATION_VE; it keeps TSC_SCALING (6.1's blacklist did not).
    gone = bits(0, 8, 9, 10, 13, 14, 17, 18, 22)
    assert c.cpu_based_2nd_exec_ctrl == plain.cpu_based_2nd_exec_ctrl & ~gone
    assert c.cpu_based_2nd_exec_ctrl >> 25 & 1
    # EVMCS1_SUPPORTED_VMEXIT_CTRL lacks SAVE_VMX_PREEMPTION_TIMER; the entry list has all
    # KVM requests before CET.
    assert c.vmexit_ctrl == plain.vmexit_ctrl & ~bits(22)
    assert c.vmentry_ctrl == plain.vmentry_ctrl


def test_evmcs_sanitising_drops_the_cet_controls():
    # Neither EVMCS1_SUPPORTED list names the CET state controls.
    c = config(capable(), "6.18.0", evmcs=True)
    assert not c.vmentry_ctrl >> ENTRY_CET & 1 and not c.vmexit_ctrl >> EXIT_CET & 1


# --- the nested part: nested_vmx_setup_ctls_msrs() (nested.c) ------------------------------


def test_nested_part_takes_five_ept_bits_only_with_enable_ept():
    # 6.1 nested.c nested_vmx_setup_ctls_msrs(): with enable_ept, msrs->ept_caps =
    # (EXECUTE_ONLY | PAGE_WALK_4 | PAGE_WALK_5 | EPTP_WB | INVEPT) & ept_caps, then KVM's
    # own constants; rdmsrl() of CR0_FIXED1 and CR4_FIXED1 whole.
    msrs = capable(**{}) | {EPT_VPID_CAP: 0xFFFFFFFF, CR0_FIXED1: 0xFFFFFFFF, CR4_FIXED1: 0x3767FF}
    s = setup(msrs)
    n = vc.with_nested(s, msrs, ept=True).config
    assert n.nested_ept_caps == bits(0, 6, 7, 14, 20)
    assert n.nested_cr0_fixed1 == 0xFFFFFFFF and n.nested_cr4_fixed1 == 0x3767FF
    assert vc.with_nested(s, msrs, ept=False).config.nested_ept_caps == 0


def test_ept_enabled_is_hardware_setups_test():
    # hardware_setup(): enable_ept = 0 unless cpu_has_vmx_ept(), _ept_4levels() (bit 6),
    # _ept_mt_wb() (bit 14) and _invept_global() (VMX_EPT_EXTENT_GLOBAL_BIT, bit 26).
    s = setup(capable())
    assert vc.ept_enabled(s)
    assert not vc.ept_enabled(s, enable_ept=False)  # kvm_intel.ept=N
    for missing in (6, 14, 26):
        cap = SKYLAKE[EPT_VPID_CAP] & ~(1 << missing)
        assert not vc.ept_enabled(setup(capable() | {EPT_VPID_CAP: cap})), missing
    assert not vc.ept_enabled(setup(capable() | {PROC2: ctl(hi=ALL & ~bits(1))}, strict=False))


def nested_config(ept_cap, release="6.1.0-57-amd64", ept=True):
    msrs = capable() | {EPT_VPID_CAP: ept_cap}
    return vc.with_nested(setup(msrs, release), msrs, ept).config


def test_cpus_differing_in_other_ept_bits_build_the_same_struct():
    # EPT_AD (21), 2 MB/1 GB pages (16, 17), UC (8) come from KVM's constants, not the CPU.
    base = SKYLAKE[EPT_VPID_CAP]
    other = base ^ bits(8, 16, 17, 21)
    assert vc.differences(nested_config(base), nested_config(other)) == []


def test_cpus_differing_in_a_passed_through_ept_bit_differ_only_with_ept():
    base = SKYLAKE[EPT_VPID_CAP]
    other = base ^ bits(7)  # VMX_EPT_PAGE_WALK_5_BIT
    diffs = vc.differences(nested_config(base), nested_config(other))
    assert [(d.name, d.bits) for d in diffs] == [("nested_ept_caps", (7,))]
    assert vc.differences(nested_config(base, ept=False), nested_config(other, ept=False)) == []


# --- differences() and reaching_bits() ---------------------------------------------------


def test_differences_name_each_field_and_bit():
    a = config(capable())
    b = config(capable() | {PIN: ctl(hi=ALL & ~bits(5)), MISC: SKYLAKE[MISC] ^ bits(40, 3)})
    diffs = vc.differences(a, b)
    assert [(d.name, d.index, d.bits) for d in diffs] == [
        ("pin_based_exec_ctrl", PIN, (5,)),
        ("misc", MISC, (3, 40)),
    ]
    text = diffs[0].describe(0, 3)
    assert text == "pin_based_exec_ctrl PIN_BASED_VIRTUAL_NMIS (bit 5): CPU 0 1, CPU 3 0"
    assert "0x" in diffs[1].describe(0, 3) and "bit(s) 3, 40" in diffs[1].describe(0, 3)


def test_a_difference_in_an_unrequested_bit_does_not_reach_the_struct():
    a = config(capable())
    b = config(capable() | {PROC2: ctl(hi=ALL & ~bits(22, 23, 27))})  # bits KVM never asks for
    assert vc.differences(a, b) == []
    assert vc.reaching_bits(PROC2, a, b) == 0


def test_reaching_bits_count_both_dwords_of_a_control_msr():
    # A control bit that differs in the struct came from either its allowed-0 or its
    # allowed-1 bit of the MSR.
    a = config(capable())
    b = config(capable() | {EXIT: ctl(hi=ALL & ~bits(22))})
    assert vc.reaching_bits(EXIT, a, b) == bits(22, 54)
    b = config(capable() | {BASIC: SKYLAKE[BASIC] ^ bits(49)})
    assert vc.reaching_bits(BASIC, a, b) == bits(49)
    assert vc.reaching_bits(0x48D, a, b) == 0  # a TRUE control MSR: KVM never reads it


# --- published registers ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["skylake-u", "tiger-lake-h", "raptor-lake-s"])
@pytest.mark.parametrize("release", ["6.1.0-57-amd64", "6.18.0"])
def test_published_cpus_build_the_adjusted_controls(name, release):
    # adjust_vmx_controls() on real registers: ((min | opt) & allowed-1) | allowed-0 for
    # the exit and entry controls, where no later rule of setup_vmcs_config() clears a bit
    # on these CPUs (their CET controls come in pairs).
    msrs = {i: v for i, v in PUBLISHED[name]["msrs"].items() if i != 0x3A}
    msrs.setdefault(PROC3, 0)
    c = config(msrs, release)
    for index, field in ((EXIT, "vmexit_ctrl"), (ENTRY, "vmentry_ctrl"), (PROC, "cpu_based_exec_ctrl")):
        lo, hi = msrs[index] & ALL, msrs[index] >> 32
        req, opt = vc.requested(index, model_for(release))
        assert getattr(c, field) == ((req | opt) & hi) | lo, (name, field)


def test_tiger_lake_gets_the_cet_pair_only_from_6_18():
    # Its published VM-exit (0x483) and VM-entry (0x484) controls allow bits 28 and 20.
    msrs = {i: v for i, v in PUBLISHED["tiger-lake-h"]["msrs"].items() if i != 0x3A}
    old, new = config(msrs, "6.17.3"), config(msrs, "6.18.0")
    assert not old.vmentry_ctrl >> ENTRY_CET & 1 and not old.vmexit_ctrl >> EXIT_CET & 1
    assert new.vmentry_ctrl >> ENTRY_CET & 1 and new.vmexit_ctrl >> EXIT_CET & 1
