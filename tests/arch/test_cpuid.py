"""Tests for vmxprobe.arch.cpuid: the vendor string, the display family/model/stepping
(SDM Vol. 2A Figure 3-6), the hypervisor signature leaf and the feature-bit table."""

from vmxprobe.arch import cpuid


def regs(text):
    """Twelve bytes of a signature as three little-endian registers."""
    raw = text.encode("latin-1")
    return tuple(int.from_bytes(raw[i : i + 4], "little") for i in (0, 4, 8))


def test_cpuid_vendor_and_signature():
    assert cpuid.cpuid_vendor((0x16, 0x756E6547, 0x6C65746E, 0x49656E69)) == "GenuineIntel"
    assert cpuid.cpuid_vendor((0xD, 0x68747541, 0x444D4163, 0x69746E65)) == "AuthenticAMD"
    assert cpuid.cpuid_signature(0x000C06F2) == {"family": 6, "model": 0xCF, "stepping": 2}
    assert cpuid.cpuid_signature(0x00800F82) == {"family": 0x17, "model": 8, "stepping": 2}
    assert cpuid.cpuid_signature(0x00000F29) == {"family": 15, "model": 2, "stepping": 9}


def test_hypervisor_names():
    assert cpuid.hypervisor_name((0x40000001, 0x4B4D564B, 0x564B4D56, 0x4D)) == "KVM"
    ms = (
        int.from_bytes(b"Micr", "little"),
        int.from_bytes(b"osof", "little"),
        int.from_bytes(b"t Hv", "little"),
    )
    assert cpuid.hypervisor_name((0, *ms)) == "Hyper-V"
    odd = (
        int.from_bytes(b"Some", "little"),
        int.from_bytes(b"VMM ", "little"),
        int.from_bytes(b"here", "little"),
    )
    assert cpuid.hypervisor_name((0, *odd)) == "SomeVMM here"


def test_hypervisor_names_of_the_kvm_and_qemu_tcg_signatures():
    # CPUID 0x40000000 EBX, ECX, EDX: "KVMKVMKVM\0\0\0" (Documentation/virt/kvm/x86/cpuid.rst)
    # and QEMU's TCG accelerator's "TCGTCGTCGTCG".
    assert cpuid.hypervisor_name((0, *regs("KVMKVMKVM\0\0\0"))) == "KVM"
    assert cpuid.hypervisor_name((0, *regs("TCGTCGTCGTCG"))) == "QEMU TCG"
    assert cpuid.hypervisor_name((0, *regs("VMwareVMware"))) == "VMware"


def test_hypervisor_name_of_an_empty_leaf_is_none():
    assert cpuid.hypervisor_name((0, 0, 0, 0)) is None


def test_signature_extended_model_only_for_families_6_and_15():
    # Figure 3-6: the extended model is added for family 6 and 15 only; family 5 ignores it.
    assert cpuid.cpuid_signature(0x00050543)["model"] == 4
    assert cpuid.cpuid_signature(0x00050654) == {"family": 6, "model": 0x55, "stepping": 4}


def test_bit():
    assert cpuid.bit(1 << cpuid.CPUID_VMX_BIT, 5) is True
    assert cpuid.bit(1 << cpuid.CPUID_VMX_BIT, 6) is False


def test_feature_bits_match_the_sdm():
    # SDM Vol. 2A CPUID: 01H:ECX[5] VMX, [6] SMX, [31] hypervisor; 07H.0:EBX[7] SMEP,
    # [20] SMAP, ECX[16] LA57; 80000001H:ECX[2] SVM (AMD APM Vol. 3).
    assert (cpuid.VMX.leaf, cpuid.VMX.reg, cpuid.VMX.bit) == (1, cpuid.ECX, cpuid.CPUID_VMX_BIT)
    assert (cpuid.CPUID_VMX_BIT, cpuid.CPUID_SMX_BIT, cpuid.CPUID_HYPERVISOR_BIT) == (5, 6, 31)
    assert (cpuid.SMEP.leaf, cpuid.SMEP.reg, cpuid.SMEP.bit) == (7, cpuid.EBX, 7)
    assert (cpuid.SMAP.leaf, cpuid.SMAP.reg, cpuid.SMAP.bit) == (7, cpuid.EBX, 20)
    assert (cpuid.LA57.leaf, cpuid.LA57.reg, cpuid.LA57.bit) == (7, cpuid.ECX, 16)
    assert (cpuid.SVM.leaf, cpuid.SVM.reg, cpuid.SVM.bit) == (0x80000001, cpuid.ECX, 2)
