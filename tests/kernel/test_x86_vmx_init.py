"""Tests for vmxprobe.kernel.x86_vmx_init: __x86_vmx_init() of arch/x86/virt/hw.c
(torvalds/linux 0eaed89c18ae), step by step: -EOPNOTSUPP without X86_FEATURE_VMX, one
unchecked rdmsrq() of IA32_VMX_BASIC on the boot CPU, -EIO when vmx_basic_vmcs_size()
exceeds PAGE_SIZE, then one zeroed page per possible CPU stamped with
vmx_basic_vmcs_revision_id(), -ENOMEM (all pages freed) when one cannot be had."""

import pytest

from tests import hostgen
from vmxprobe.arch.vmx import decode_vmx_basic
from vmxprobe.host import fixture
from vmxprobe.host.readings import read_host
from vmxprobe.host.sources import CpuidReading, FixtureHost, MsrReading
from vmxprobe.kernel import x86_vmx_init as init
from vmxprobe.kernel.pages import Allocation


def basic(size, revision=4):
    """IA32_VMX_BASIC (SDM A.1): revision in bits 30:0, VMCS size in 44:32, WB (6) in 53:50."""
    return 6 << 50 | size << 32 | revision


def judge(basic_value=None, basic_errno=None, fc=0x5, cpuid_vmx=True, n=2):
    fx = fixture.parse(hostgen.synthetic(n, 1))
    fx.msr[0x3A] = {c: MsrReading(value=fc) for c in range(n)}
    fx.msr[0x480] = {c: MsrReading(value=basic_value, errno=basic_errno) for c in range(n)}
    if not cpuid_vmx:
        for c in range(n):
            eax, ebx, ecx, edx = fx.cpuid[(1, 0)][c].value
            fx.cpuid[(1, 0)][c] = CpuidReading(value=(eax, ebx, ecx & ~(1 << 5), edx))
    scan = read_host(FixtureHost(fx))
    read = decode_vmx_basic(basic_value) if basic_value is not None else None
    return init.before_allocation(scan, 0, read)


def test_a_page_sized_vmcs_reaches_allocation_with_the_revision_id():
    b = judge(basic(4096, revision=0x12345))
    assert b.determined and b.errno is None and b.reaches_allocation
    assert b.revision_id == 0x12345  # vmx_basic_vmcs_revision_id(): bits 30:0


def test_bit_31_is_not_part_of_the_revision_id():
    b = judge(basic(1024, revision=0x80000004))
    assert b.revision_id == 4


@pytest.mark.parametrize("size", [4097, 0x1FFF])
def test_a_vmcs_larger_than_a_page_is_eio(size):
    b = judge(basic(size))
    assert (b.errno, b.determined, b.reaches_allocation) == (init.EIO, True, False)
    assert any(f"{size} > PAGE_SIZE 4096" in r for r in b.reasons)


def test_no_cpuid_vmx_is_eopnotsupp_before_the_msr_is_read():
    # Step 1 returns before rdmsrq(): even a VMX_BASIC that would be EIO does not matter.
    b = judge(basic(0x1FFF), cpuid_vmx=False)
    assert (b.errno, b.determined) == (init.EOPNOTSUPP, True)


def test_feature_control_locked_with_vmx_off_is_eopnotsupp():
    # feat_ctl.c clears X86_FEATURE_VMX when the MSR is locked with bit 2 clear.
    b = judge(basic(4096), fc=0x1)
    assert b.errno == init.EOPNOTSUPP and not b.reaches_allocation


def test_a_faulting_vmx_basic_reads_as_zero_and_still_allocates():
    # rdmsrq() is unchecked: a #GP reads 0, size 0 <= PAGE_SIZE, revision 0 is stamped.
    b = judge(basic_errno="EIO")
    assert b.reaches_allocation and b.revision_id == 0
    assert any("faults (EIO)" in r for r in b.reasons)


def test_an_unreadable_vmx_basic_leaves_it_undetermined():
    b = judge(basic_errno="EPERM")
    assert not b.determined and b.errno is None and not b.reaches_allocation
    assert b.undetermined and "IA32_VMX_BASIC (0x480) on CPU 0 (EPERM)" in b.undetermined[0]


def test_after_allocation_all_pages_is_ok():
    assert init.after_allocation(Allocation(ok=True)) == (init.OK, ())


def test_after_allocation_a_failed_page_is_enomem_naming_the_cpu():
    failed = Allocation(ok=False, cpu=3, node=1, serving_node=1, errno="ENOMEM", reason="no memory")
    errno, reasons = init.after_allocation(failed)
    assert errno == init.ENOMEM
    assert "CPU 3" in reasons[0] and "released" in reasons[0]
    assert reasons[1].endswith("no memory") and "node 1" in reasons[1]
