"""Tests for vmxprobe.kernel.tdx: check_tdx_erratum() (arch/x86/virt/vmx/tdx/tdx.c) on
IA32_VMX_BASIC bit 60 (VMX_BASIC_NO_SEAMRET_INVD_VMCS, SDM Vol. 3D A.1) and what
/proc/cpuinfo says of the host ("tdx_host_platform" flag, "seamret_invd_vmcs" bug)."""

from vmxprobe.host import fixture
from vmxprobe.kernel import tdx

# A Skylake-U's published IA32_VMX_BASIC (fixtures/pub-skylake.json names the VBox.log it
# comes from): bit 60 clear.
SKYLAKE_BASIC = 0x00DA040000000004


def test_bit_60_is_the_one_the_erratum_reads():
    assert tdx.VMX_BASIC_NO_SEAMRET_INVD_VMCS == 1 << 60
    assert tdx.seamret_erratum(1 << 60).keeps_current_vmcs is True
    assert tdx.seamret_erratum(((1 << 64) - 1) & ~(1 << 60)).keeps_current_vmcs is False


def test_bit_60_clear_names_the_kernel_bug():
    s = tdx.seamret_erratum(SKYLAKE_BASIC)
    assert s.kernel_bug == "X86_BUG_SEAMRET_INVD_VMCS"
    assert s.meaning == tdx.CLEARS and "seamret_invd_vmcs" in s.meaning


def test_bit_60_set_has_no_bug():
    s = tdx.seamret_erratum(SKYLAKE_BASIC | 1 << 60)
    assert s.kernel_bug is None and s.meaning == tdx.KEEPS


def test_without_cpuinfo_the_host_is_unknown():
    s = tdx.seamret_erratum(SKYLAKE_BASIC)
    assert s.tdx_host_platform is None and s.kernel_reports_bug is None


def test_cpuinfo_flags_and_bugs_are_read_by_name():
    s = tdx.seamret_erratum(
        SKYLAKE_BASIC,
        flags=frozenset({"vmx", "tdx_host_platform"}),
        bugs=frozenset({"spectre_v1", "seamret_invd_vmcs"}),
    )
    assert s.tdx_host_platform is True and s.kernel_reports_bug is True
    s = tdx.seamret_erratum(SKYLAKE_BASIC, flags=frozenset({"vmx"}), bugs=frozenset({"spectre_v1"}))
    assert s.tdx_host_platform is False and s.kernel_reports_bug is False


def test_the_bundled_skylake_fixture_has_bit_60_clear():
    fx = fixture.load("pub-skylake")
    value = next(iter(fx.msr[0x480].values())).value
    assert value is not None and not value >> 60 & 1
    assert tdx.seamret_erratum(value).kernel_bug == "X86_BUG_SEAMRET_INVD_VMCS"
