"""Tests for vmxprobe.kernel.release: which kernel's rules a host gets, from the release
string the kernel itself reports (proc/sys/kernel/osrelease, init/version.c's
UTS_RELEASE: "MAJOR.MINOR.SUBLEVEL" then the distribution's suffix). The release strings
are the forms distributions ship: Debian ("6.1.0-57-amd64", "6.12.57+deb12-amd64"),
Ubuntu ("6.8.0-45-generic"), RHEL ("5.14.0-427.el9.x86_64")."""

import pytest

from vmxprobe.kernel import release as rel
from vmxprobe.kernel.release import MAINLINE, OLDEST, model_for


@pytest.mark.parametrize(
    "osrelease,version",
    [
        ("6.1.0-57-amd64", (6, 1)),  # Debian 12
        ("6.1.0-0.deb11.17-amd64", (6, 1)),  # Debian 11 backports
        ("6.12.57+deb12-amd64", (6, 12)),  # Debian 12 backports
        ("6.12.43+deb13-amd64", (6, 12)),  # Debian 13
        ("6.8.0-45-generic", (6, 8)),  # Ubuntu 24.04
        ("6.5.0-1025-oem", (6, 5)),
        ("6.10.14-200.fc40.x86_64", (6, 10)),  # Fedora
        ("6.15.0-rc3", (6, 15)),
        ("6.18.2-arch1-1", (6, 18)),
        ("7.1.0", (7, 1)),
    ],
)
def test_release_picks_its_own_rules(osrelease, version):
    m = model_for(osrelease)
    assert m.version == version and m.release == osrelease and m.note is None
    assert f"release {osrelease}" in m.line()


def test_two_digit_minor_is_not_read_as_one():
    # "6.10" is not "6.1": EPT_VIOLATION_VE (vmx.h, 6.10) applies to one and not the other.
    assert model_for("6.10.0").has(rel.EPT_VIOLATION_VE)
    assert not model_for("6.1.0-57-amd64").has(rel.EPT_VIOLATION_VE)


@pytest.mark.parametrize(
    "osrelease",
    [
        "5.14.0-427.el9.x86_64",  # RHEL 9.4
        "4.18.0-553.el8_10.x86_64",  # RHEL 8.10
        "5.15.0-119-generic",  # Ubuntu 22.04
        "6.0.19",
    ],
)
def test_below_the_oldest_modelled_is_judged_by_6_1_and_says_so(osrelease):
    # Before 6.1, setup_vmcs_config() built its masks inline (vmx.c in 6.0): 6.1's
    # KVM_REQUIRED/OPTIONAL_VMX_* are the oldest modelled.
    m = model_for(osrelease)
    assert m.version == OLDEST == (6, 1) and m.release == osrelease
    assert m.note is not None and "before 6.1" in m.note
    assert m.note in m.line() and f"release {osrelease}" in m.line()


@pytest.mark.parametrize("osrelease", ["7.2.0-rc1", "7.10.3", "8.0.0", "10.1.0-1-amd64"])
def test_above_mainline_is_judged_by_mainline_and_says_so(osrelease):
    m = model_for(osrelease)
    assert m.version == MAINLINE and m.release == osrelease
    assert m.note is not None and "newer than the newest modelled (7.1)" in m.note
    assert m.note in m.line()


@pytest.mark.parametrize("osrelease", [None, ""])
def test_unknown_release_is_current_upstream(osrelease):
    m = model_for(osrelease)
    assert m.version == MAINLINE and m.release is None and m.note is None
    assert "release unknown: current upstream" in m.line()
    assert m.name == "Linux 7.1 (mainline)"


@pytest.mark.parametrize(
    "osrelease",
    [
        "linux",  # no version at all
        "v6.1",  # not a form UTS_RELEASE takes
        "6",  # no minor
        "123456.1.0",  # numbers no kernel has
        "6.12345.0",
        "\x00\xff",
    ],
)
def test_a_release_not_understood_is_current_upstream_and_says_so(osrelease):
    m = model_for(osrelease)
    assert m.version == MAINLINE and m.release == osrelease
    assert m.note is not None and "not understood" in m.note
    assert m.note in m.line()


@pytest.mark.parametrize(
    "change,first",
    [
        # Each rule that changed, with the first release that has the new form
        # (docs/kernel-model.md "Change points").
        (rel.KVM_PER_CPU_SUPPORT, (6, 3)),  # vmx.c kvm_is_vmx_supported() on this CPU
        (rel.EVMCS_SANITIZE, (6, 3)),  # evmcs_sanitize_exec_ctrls() in setup_vmcs_config()
        (rel.CR4_LAM, (6, 8)),  # x86.h __cr4_reserved_bits(): X86_FEATURE_LAM
        (rel.EPT_VIOLATION_VE, (6, 10)),  # vmx.h: SECONDARY_EXEC_EPT_VIOLATION_VE optional
        (rel.PERF_GLOBAL_ERRATUM, (6, 13)),  # Nehalem/Westmere in setup_vmcs_config()
        (rel.PAIRS_ALL, (6, 15)),  # vmx_check_entry_exit_pairs()
        (rel.KVM_CET, (6, 18)),  # CET pair; SHSTK/IBT in __cr4_reserved_bits()
        (rel.HW_C, (7, 1)),  # arch/x86/virt/hw.c
    ],
)
def test_each_change_applies_from_its_release_on(change, first):
    assert change == first
    major, minor = first
    before = f"{major}.{minor - 1}.0"
    assert model_for(f"{major}.{minor}.0-1-amd64").has(change)
    assert not model_for(before).has(change)
    assert model_for("99999").has(change)  # not understood: current upstream, which has all


def test_who_allocates_the_root_vmcs_by_release():
    # Up to 7.0, kvm_intel's alloc_kvm_area() (vmx.c) at module load; from 7.1,
    # x86_vmx_init() at boot (arch/x86/virt/hw.c).
    assert "alloc_kvm_area()" in model_for("7.0.5").root_vmcs_by
    assert "x86_vmx_init() at boot" in model_for("7.1.0").root_vmcs_by
    assert model_for("6.1.0-57-amd64").line() == (
        "kernel model: Linux 6.1 rules (release 6.1.0-57-amd64); root VMCS pages by kvm_intel's "
        "alloc_kvm_area() when the module loads (arch/x86/kvm/vmx/vmx.c)"
    )
