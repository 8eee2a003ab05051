"""Tests for vmxprobe.kernel.feat_ctl: whether X86_FEATURE_VMX survives
init_ia32_feat_ctl() with and without tboot, and the "vmx flags" words
init_vmx_capabilities() (arch/x86/kernel/cpu/feat_ctl.c) fills. Values are built from SDM
bit positions, not copied from any machine."""

import pytest

from tests import hostgen
from vmxprobe.host import fixture
from vmxprobe.host.readings import read_host
from vmxprobe.host.sources import CpuidReading, FixtureHost, MsrReading
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


# --- init_ia32_feat_ctl() and tboot ---------------------------------------------------------
# arch/x86/kernel/cpu/feat_ctl.c init_ia32_feat_ctl() (6.1.192; the same in mainline):
#   if ((tboot && !(msr & FEAT_CTL_VMX_ENABLED_INSIDE_SMX)) ||
#       (!tboot && !(msr & FEAT_CTL_VMX_ENABLED_OUTSIDE_SMX)))
#           pr_err_once("VMX (%s TXT) disabled by BIOS\n", tboot ? "inside" : "outside");
#           clear_cpu_cap(c, X86_FEATURE_VMX);
# for a locked MSR; an unlocked one is written by the kernel with bit 2, and bit 1 too
# under tboot, so VMX survives either way.


def scan_with(fc=None, fc_errno=None, n=2, cpuid_vmx=True):
    fx = fixture.parse(hostgen.synthetic(n, 1))
    fx.msr[0x3A] = {c: MsrReading(value=fc, errno=fc_errno) for c in range(n)}
    if not cpuid_vmx:
        for c in range(n):
            eax, ebx, ecx, edx = fx.cpuid[(1, 0)][c].value
            fx.cpuid[(1, 0)][c] = CpuidReading(value=(eax, ebx, ecx & ~(1 << 5), edx))
    return read_host(FixtureHost(fx))


@pytest.mark.parametrize(
    "fc,plain,under_tboot",
    [
        (0x1, False, False),  # locked, neither bit
        (0x3, False, True),  # locked, VMX inside SMX only: bit 1 decides under tboot
        (0x5, True, False),  # locked, VMX outside SMX only: bit 2 decides without tboot
        (0x7, True, True),  # locked, both
        (0x0, True, True),  # unlocked: the kernel writes LOCKED | OUTSIDE (| INSIDE if tboot)
        (0x2, True, True),  # unlocked, whatever firmware left: ignored and rewritten
        (0xFF07, True, True),  # locked with SGX and SENTER bits besides: only 0-2 count
    ],
)
def test_which_bit_decides_vmx_with_and_without_tboot(fc, plain, under_tboot):
    s = scan_with(fc)
    assert feat_ctl.vmx_feature(s, 1, tboot=False)[0] is plain
    assert feat_ctl.vmx_feature(s, 1, tboot=True)[0] is under_tboot


def test_the_refusal_names_the_kernels_message_for_each_case():
    s = scan_with(0x3)
    ok, why = feat_ctl.vmx_feature(s, 0, tboot=False)
    # feat_ctl.c: "#define pr_fmt(fmt) \"x86/cpu: \" fmt"; pr_err_once(): one line per boot.
    assert 'logged once: "x86/cpu: VMX (outside TXT) disabled by BIOS"' in why
    assert "only VMX inside SMX (bit 1) is on, which counts only under tboot" in why
    s = scan_with(0x5)
    ok, why = feat_ctl.vmx_feature(s, 0, tboot=True)
    assert 'logged once: "x86/cpu: VMX (inside TXT) disabled by BIOS"' in why
    assert "VMX outside SMX (bit 2) is on, which does not count under tboot" in why


@pytest.mark.parametrize("tboot", [False, True])
def test_a_faulting_feature_control_clears_vmx_either_way(tboot):
    # "if (rdmsrl_safe(MSR_IA32_FEAT_CTL, &msr)) { clear_cpu_cap(c, X86_FEATURE_VMX); ... }"
    ok, why = feat_ctl.vmx_feature(scan_with(fc_errno="EIO"), 0, tboot=tboot)
    assert ok is False and "faults (EIO)" in why


@pytest.mark.parametrize("tboot", [False, True])
def test_no_cpuid_vmx_means_no_feature_whatever_the_msr(tboot):
    # X86_FEATURE_VMX comes from CPUID.01H:ECX[5]; feat_ctl only ever clears it.
    ok, why = feat_ctl.vmx_feature(scan_with(0x7, cpuid_vmx=False), 0, tboot=tboot)
    assert ok is False and "CPUID.01H:ECX.VMX[bit 5] = 0" in why


@pytest.mark.parametrize(
    "fc,decides",
    [(0x3, [0, 1, 2]), (0x5, [0, 1, 2]), (0x7, []), (0x1, []), (0x0, []), (0x2, [])],
)
def test_tboot_decides_on_locked_msrs_with_bits_1_and_2_unequal(fc, decides):
    assert feat_ctl.tboot_decides(scan_with(fc, n=3)) == decides


def test_tboot_decides_skips_cpus_without_cpuid_vmx():
    assert feat_ctl.tboot_decides(scan_with(0x3, cpuid_vmx=False)) == []
