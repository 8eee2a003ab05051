"""X86_FEATURE_SVM per CPU after identification (kernel/init_amd.py): get_cpu_cap()
sets it from CPUID Fn8000_0001 ECX[2]; from 6.7 init_amd() (arch/x86/kernel/cpu/amd.c,
init_hygon() in hygon.c) clears it on a CPU whose VM_CR has SVMDIS, printing "SVM
disabled (by BIOS) in MSR_VM_CR" once. The running kernel's flag (/proc/cpuinfo) is
compared with what the registers imply, as the Intel path does with vmx."""

import pytest

from tests import hostgen
from vmxprobe.host import fixture
from vmxprobe.host.readings import read_host
from vmxprobe.host.sources import CpuidReading, FixtureHost, MsrReading
from vmxprobe.kernel import init_amd
from vmxprobe.kernel.release import model_for

VM_CR = 0xC0010114


def readings(fx):
    return read_host(FixtureHost(fx))


@pytest.mark.parametrize(
    "release,has",
    [
        ("6.1.0-57-amd64", True),
        ("6.6.58", True),
        ("6.7.0", False),
        ("6.12.0-1-amd64", False),
        ("7.1.3", False),
    ],
)
def test_svmdis_clears_the_flag_from_6_7(release, has):
    fx = fixture.parse(hostgen.amd_synthetic(2, vm_cr=0x18, kernel=release))
    f = init_amd.svm_flag(readings(fx), 0, model_for(release))
    assert (f.has, f.cpuid, f.svmdis) == (has, True, True)
    if not has:
        assert '("SVM disabled (by BIOS) in MSR_VM_CR")' in f.why


def test_no_fn8000_0001_leaf_means_no_svm():
    # get_cpu_cap(): the word of a leaf beyond the highest extended leaf stays 0.
    fx = fixture.parse(hostgen.amd_synthetic(2))
    for cpu in (0, 1):
        fx.cpuid[(0x80000000, 0)][cpu] = CpuidReading(value=(0x80000000, 0, 0, 0))
        del fx.cpuid[(0x80000001, 0)][cpu]
    f = init_amd.svm_flag(readings(fx), 0, model_for("6.12"))
    assert f.has is False and "no Fn8000_0001 leaf" in f.why


def test_proc_cpuinfo_stands_in_for_an_unreadable_cpuid_device():
    fx = fixture.parse(hostgen.amd_synthetic(2))
    for table in fx.cpuid.values():
        for cpu in list(table):
            table[cpu] = CpuidReading(errno="ENOENT")
    scan = readings(fx)
    # The vendor comes from /proc/cpuinfo's vendor_id: VM_CR was read all the same.
    assert scan.cpus[0].msr[VM_CR].value == 0
    f = init_amd.svm_flag(scan, 0, model_for("6.12"))
    assert f.has is True


def test_kernel_view_names_the_hidden_flag_on_6_7_and_later():
    fx = fixture.parse(hostgen.amd_synthetic(4, vm_cr=0x18, kernel="6.12.0-1-amd64"))
    lines = init_amd.kernel_view(readings(fx), model_for("6.12.0-1-amd64"))
    assert len(lines) == 1 and "no svm flag on CPU(s) 0-3 although CPUID reports SVM" in lines[0]
    assert "kvm-ok" in lines[0]


def test_kernel_view_flags_an_older_kernel_keeping_the_flag():
    # The fixture's kernel showed svm with SVMDIS set, as kernels before 6.7 do, but the
    # release says 7.1 (newer rules): the disagreement is reported.
    fx = fixture.parse(hostgen.amd_synthetic(2, vm_cr=0x18, kernel="6.5.0"))
    fx.files["proc/sys/kernel/osrelease"] = "7.1.3\n"
    lines = init_amd.kernel_view(readings(fx), model_for("7.1.3"))
    assert any("shows the svm flag on CPU(s) 0-1 although VM_CR.SVMDIS is set" in x for x in lines)


def test_kernel_view_flags_a_flag_the_registers_do_not_explain():
    fx = fixture.parse(hostgen.amd_synthetic(2, kernel="6.12"))
    fx.files["proc/cpuinfo"] = fx.files["proc/cpuinfo"].replace(" svm", "")
    lines = init_amd.kernel_view(readings(fx), model_for("6.12"))
    assert any("although the registers allow SVM" in x and "clearcpuid=svm" in x for x in lines)


def test_a_faulting_vm_cr_reads_zero_and_an_unreadable_one_is_unknown():
    fx = fixture.parse(hostgen.amd_synthetic(2))
    fx.msr[VM_CR][0] = MsrReading(errno="EIO")
    fx.msr[VM_CR][1] = MsrReading(errno="EPERM")
    scan = readings(fx)
    assert init_amd.vm_cr_of(scan.cpus[0]) == (init_amd.vm_cr(0), "EIO")
    assert init_amd.vm_cr_of(scan.cpus[1]) == (None, "EPERM")
    assert init_amd.svm_flag(scan, 1, model_for("6.12")).has is None
    assert init_amd.svm_flag(scan, 1, model_for("6.1")).has is True  # 6.1 never reads it here
