"""Tests for vmxprobe.kernel.hypervisors: KVM's nested VMX recognised by
VMCS12_REVISION (arch/x86/kvm/vmx/vmcs12.h, 0x11e57ed0), other hypervisors by their
CPUID signature, and hv_init_evmcs() (arch/x86/kvm/vmx/hyperv_evmcs.c): kvm_intel uses
the enlightened VMCS when Hyper-V recommends it (CPUID 0x40000004 EAX bit 14) and
0x4000000A EAX bits 7:0 (HV_X64_ENLIGHTENED_VMCS_VERSION, 0xff) are at least
KVM_EVMCS_VERSION 1. Bits 7:0 are the lowest version offered and 15:8 the highest, as in
the range KVM offers its own guests: (KVM_EVMCS_VERSION << 8) | 1,
nested_get_evmcs_version() in arch/x86/kvm/vmx/hyperv.c."""

import pytest

from vmxprobe.host import fixture
from vmxprobe.kernel import hypervisors as hv

BARE_METAL_BASIC = 0x00DA040000000004  # a Skylake's published IA32_VMX_BASIC (fixtures/pub-skylake.json)


def test_the_bundled_kvm_nested_guest_is_recognised_by_its_revision():
    fx = fixture.load("kvm-nested-guest")
    value = fx.msr[0x480][0].value
    assert hv.is_kvm_nested(value)
    s = hv.synthetic_vmx(value, None)
    assert s is not None and s.by == "KVM" and "0x11e57ed0" in s.how


def test_revision_is_bits_30_to_0():
    assert hv.is_kvm_nested(1 << 31 | 0x11E57ED0)
    assert not hv.is_kvm_nested(BARE_METAL_BASIC)
    assert not hv.is_kvm_nested(None) and not hv.is_kvm_nested(0)


def test_bare_metal_is_not_synthetic():
    assert hv.synthetic_vmx(BARE_METAL_BASIC, None) is None


def test_other_hypervisors_by_signature():
    s = hv.synthetic_vmx(BARE_METAL_BASIC, "VMware")
    assert s is not None and s.by == "VMware" and s.evmcs is None
    s = hv.synthetic_vmx(BARE_METAL_BASIC, "SomeVMM")
    assert s is not None and s.by == "SomeVMM" and "SomeVMM" in s.how


@pytest.mark.parametrize(
    "hint,nested,low,high,uses",
    [
        (1 << 14, 0x0101, 1, 1, True),  # recommended, v1..v1
        (1 << 14, 0x0000, 0, 0, False),  # recommended but no version offered
        # The kernel compares nested_features & HV_X64_ENLIGHTENED_VMCS_VERSION (0xff,
        # bits 7:0) with KVM_EVMCS_VERSION: bits 15:8 alone do not count.
        (1 << 14, 0x0100, 0, 1, False),
        (1 << 14, 0x0002, 2, 0, True),
        (1 << 14, 0x0201, 1, 2, True),  # v1..v2, as KVM would offer with KVM_EVMCS_VERSION 2
        (0, 0x0101, 1, 1, False),  # offered, not recommended
        (1 << 14, None, None, None, False),  # no nested-features leaf
    ],
)
def test_evmcs_use_follows_hv_init_evmcs(hint, nested, low, high, uses):
    leaves = {0x40000004: (hint, 0, 0, 0)}
    if nested is not None:
        leaves[0x4000000A] = (nested, 0, 0, 0)
    s = hv.synthetic_vmx(BARE_METAL_BASIC, "Hyper-V", leaves)
    assert s is not None and s.evmcs == hv.Evmcs(bool(hint), low, high, uses)


def test_no_enlightenment_leaf_means_no_evmcs_verdict():
    s = hv.synthetic_vmx(BARE_METAL_BASIC, "Hyper-V", {})
    assert s is not None and s.evmcs is None
