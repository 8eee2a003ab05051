"""VM_CR, SEV_STATUS and CPUID Fn8000_001F decoded as AMD's APM Vol. 2 (15.30.1 VM_CR,
15.34.10 SEV_STATUS) and Vol. 3 (E.4.17) define them, with the masks of Linux's
asm/svm.h (SVM_VM_CR_SVM_LOCK_MASK 0x08, SVM_VM_CR_SVM_DIS_MASK 0x10) and
msr-index.h (MSR_AMD64_SEV_*_ENABLED_BIT 0-2)."""

import pytest

from vmxprobe.arch import cpuid, svm


def test_indexes_are_the_kernels():
    # msr-index.h: MSR_VM_CR 0xc0010114, MSR_AMD64_SEV 0xc0010131.
    assert (svm.MSR_VM_CR, svm.MSR_AMD64_SEV) == (0xC0010114, 0xC0010131)
    assert svm.LEAF_MEM_ENCRYPT == 0x8000001F
    # X86_FEATURE_SVM is CPUID Fn8000_0001 ECX[2] (cpufeatures.h word 6 bit 2).
    assert (cpuid.SVM.leaf, cpuid.SVM.reg, cpuid.SVM.bit) == (0x80000001, cpuid.ECX, 2)


@pytest.mark.parametrize(
    "value,lock,svmdis,state",
    [
        (0x00, False, False, "enabled"),
        (0x08, True, False, "enabled"),  # locked with SVM on: still enabled
        (0x10, False, True, "disabled_unlocked"),
        (0x18, True, True, "disabled_locked"),  # what firmware with SVM off leaves
    ],
)
def test_vm_cr_lock_and_svmdis(value, lock, svmdis, state):
    d = svm.decode_vm_cr(value)
    assert (d.lock, d.svmdis, d.state) == (lock, svmdis, state)
    assert d.fields()["raw"] == f"0x{value:016x}"


def test_vm_cr_low_bits_and_reserved():
    d = svm.decode_vm_cr(0x7 | 1 << 5 | 1 << 63)
    assert (d.dpd, d.r_init, d.dis_a20m) == (True, True, True)
    assert (d.lock, d.svmdis) == (False, False)
    assert d.reserved == (5, 63)  # bits 63:5 are reserved (SVM_VM_CR_VALID_MASK 0x1f)
    assert svm.SVM_VM_CR_VALID_MASK == 0x1F


@pytest.mark.parametrize(
    "value,names",
    [(0x0, ""), (0x1, "SEV"), (0x3, "SEV SEV-ES"), (0x7, "SEV SEV-ES SEV-SNP"), (0x4, "SEV-SNP")],
)
def test_sev_status_names_what_linux_prints(value, names):
    # arch/x86/mm/mem_encrypt.c print_mem_encrypt_feature_info(): "AMD SEV SEV-ES SEV-SNP".
    d = svm.decode_sev_status(value)
    assert d.active == names
    assert d.sev == bool(value & 1)


@pytest.mark.parametrize(
    "eax,reads",
    [(0x0, False), (0x1, True), (0x2, True), (0xA, True), (0x8, False), (0x10, False), (0xF, True)],
)
def test_sev_status_is_read_only_with_sme_or_sev(eax, reads):
    # sme_enable() (arch/x86/mm/mem_encrypt_identity.c): AMD_SME_BIT BIT(0) | AMD_SEV_BIT BIT(1).
    me = svm.decode_mem_encrypt(eax)
    assert me.reads_sev_status is reads
    assert me.fields()["eax"] == f"0x{eax:08x}"
