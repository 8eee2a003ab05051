"""Tests for vmxprobe.kernel.feat_ctl: the "vmx flags" words init_vmx_capabilities()
(arch/x86/kernel/cpu/feat_ctl.c) fills. Values are built from SDM bit positions, not
copied from any machine."""

from vmxprobe.kernel import feat_ctl


def ctl(allowed0=(), allowed1=()):
    """A 32/32 control-MSR value: low dword allowed-0 bits, high dword allowed-1 bits."""
    lo = sum(1 << b for b in allowed0)
    hi = sum(1 << b for b in allowed1)
    return hi << 32 | lo


def bits(*positions):
    return sum(1 << b for b in positions)


# --- implied_vmx_flags ------------------------------------------------------------------


def full_host():
    return {
        0x481: ctl(allowed0=[1, 2, 4], allowed1=[0, 1, 2, 3, 4, 5, 6, 7]),
        0x482: ctl(allowed1=[2, 3, 7, 17, 21, 27, 31]),
        0x48B: ctl(allowed1=[0, 1, 5, 7, 8, 9, 13, 18, 30]),
        0x48C: bits(0, 7, 17, 21, 32),
        0x491: bits(0),
        0x492: bits(4),
    }


def test_implied_vmx_flags_full_set():
    assert feat_ctl.implied_vmx_flags(full_host()) == {
        "vnmi",
        "preemption_timer",
        "posted_intr",  # pin-based 5, 6, 7
        "invvpid",
        "ept_x_only",
        "ept_ad",
        "ept_1gb",
        "ept_5level",
        "flexpriority",
        "apicv",
        "tsc_offset",
        "vtpr",
        "mtf",  # primary 3, 21, 27
        "vapic",
        "ept",
        "vpid",
        "unrestricted_guest",
        "vapic_reg",
        "vid",
        "ept_violation_ve",
        "ipi_virt",
    }


def test_implied_vmx_flags_hidden_bits_not_printed():
    flags = feat_ctl.implied_vmx_flags(full_host())
    # Pin 0/3, primary 2/7/17/31, secondary 13/30 have no quoted name in vmxfeatures.h.
    for hidden in (
        "intr_exiting",
        "nmi_exiting",
        "hlt_exiting",
        "sec_controls",
        "vmfunc",
        "bus_lock_detection",
        "tertiary_controls",
    ):
        assert hidden not in flags


def test_implied_eptp_switching_follows_kernel_high_dword():
    # feat_ctl.c keeps the high dword of IA32_VMX_VMFUNC, so bit 0 alone prints nothing.
    msrs = full_host()
    assert "eptp_switching" not in feat_ctl.implied_vmx_flags(msrs)
    msrs[0x491] = 1 << 32
    assert "eptp_switching" in feat_ctl.implied_vmx_flags(msrs)


def test_implied_synthetic_flags_need_all_parts():
    msrs = full_host()
    msrs[0x481] = ctl(allowed1=[0, 3, 5, 6])  # no posted interrupts
    flags = feat_ctl.implied_vmx_flags(msrs)
    assert "apicv" not in flags and "flexpriority" in flags
    msrs[0x48B] = ctl(allowed1=[1, 5, 8, 9])  # no virtualize APIC accesses
    assert "flexpriority" not in feat_ctl.implied_vmx_flags(msrs)


def test_implied_uses_plain_not_true_msrs():
    msrs = {0x48D: ctl(allowed1=[5, 6, 7]), 0x482: ctl(allowed1=[3])}
    # Word 0 is empty, so the kernel prints no "vmx flags" line at all.
    assert feat_ctl.implied_vmx_flags(msrs) == set()
    msrs[0x481] = ctl(allowed1=[5])
    assert feat_ctl.implied_vmx_flags(msrs) == {"vnmi", "tsc_offset"}


def test_vmx_capability_words_layout():
    words = feat_ctl.vmx_capability_words(full_host())
    assert words[1] == bits(2, 3, 7, 17, 21, 27, 31)
    assert words[3] == bits(4) and words[4] == 0
    assert words[0] >> 16 & 1 == 1  # INVVPID from EPT_VPID_CAP bit 32
    assert words[0] >> 24 & 3 == 3  # flexpriority, apicv
