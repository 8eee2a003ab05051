"""x86_svm_init() (arch/x86/virt/hw.c at torvalds/linux 0eaed89c18ae, first released in
7.1): -EOPNOTSUPP unless the boot CPU keeps X86_FEATURE_SVM (init_amd() clears it on
VM_CR.SVMDIS, from 6.7) and the kernel is not an SEV guest
(cc_platform_has(CC_ATTR_GUEST_MEM_ENCRYPT)); it allocates nothing and clears no flag.
The verdict gives it by 7.1's rules on every release, as it does x86_vmx_init()."""

import pytest

from tests import hostgen
from tests.scanning import run
from vmxprobe.host import fixture
from vmxprobe.host.readings import read_host
from vmxprobe.host.sources import FixtureHost, MsrReading
from vmxprobe.kernel import cc_platform
from vmxprobe.kernel.x86_svm_init import x86_svm_init

VM_CR = 0xC0010114


def readings(**kw):
    fx = fixture.parse(hostgen.amd_synthetic(4, **kw))
    return fx, read_host(FixtureHost(fx))


def judge(scan, boot=0):
    return x86_svm_init(scan, boot, cc_platform.sev_guest(scan.cpus[boot]))


def test_boot_cpu_with_svm_succeeds_and_allocates_nothing():
    fx, scan = readings()
    got = judge(scan)
    assert got.errno == "ok" and "allocates nothing" in got.reasons[0]
    report, v = run(FixtureHost(fx), fx)
    assert report["plan"]["applies"] is False and report["plan"]["pages"] == 0
    assert report["plan"]["materialized"] is False and report["plan"]["verified"] is None


@pytest.mark.parametrize("release", ["6.1.0-57-amd64", "6.12.0-1-amd64", "7.1.3"])
def test_boot_cpu_svmdis_fails_on_7_1_rules_whatever_the_release(release):
    # hw.c: !cpu_feature_enabled(X86_FEATURE_SVM); init_amd() cleared it (6.7+ rules).
    _, scan = readings(vm_cr=0x18, kernel=release)
    got = judge(scan)
    assert got.errno == "EOPNOTSUPP"
    assert "SVMDIS (bit 4) set; init_amd() clears X86_FEATURE_SVM" in got.reasons[0]


def test_only_the_boot_cpu_counts():
    # x86_virt_init() runs in identify_boot_cpu(), before any AP is identified.
    fx, _ = readings()
    fx.msr[VM_CR][3] = MsrReading(value=0x18)
    scan = read_host(FixtureHost(fx))
    assert judge(scan).errno == "ok"


def test_sev_guest_fails():
    # hw.c: cc_platform_has(CC_ATTR_GUEST_MEM_ENCRYPT) -> -EOPNOTSUPP.
    _, scan = readings(mem_encrypt=0x2, sev_status=0x1)
    got = judge(scan)
    assert got.errno == "EOPNOTSUPP" and "no SVM for an SEV guest" in got.reasons[0]


def test_no_svm_in_cpuid_fails():
    _, scan = readings(svm=False)
    assert judge(scan).errno == "EOPNOTSUPP"


def test_unreadable_vm_cr_is_undetermined_with_the_fix():
    fx, _ = readings()
    fx.msr[VM_CR][0] = MsrReading(errno="ENOENT")
    scan = read_host(FixtureHost(fx))
    got = judge(scan)
    assert got.errno is None
    assert got.undetermined == (
        "cannot read VM_CR (0xc0010114) on CPU 0 (ENOENT): the msr driver is not loaded: run "
        "`modprobe msr` (kernel option CONFIG_X86_MSR)",
    )


def test_intel_hosts_say_eopnotsupp_as_the_kernel_does():
    # No Intel CPU has X86_FEATURE_SVM: hw.c returns -EOPNOTSUPP there; kvm_amd refuses
    # too ("CPU %d isn't AMD or Hygon"). Intel readiness stays x86_vmx_init and kvm_intel.
    fx = fixture.parse(hostgen.synthetic(4, 1))
    report, v = run(FixtureHost(fx), fx)
    assert (v.virt, v.x86_svm_init, v.kvm_amd, v.ready) == ("vmx", "EOPNOTSUPP", "EOPNOTSUPP", True)
    assert report["verdict"]["x86_svm_init"] == "EOPNOTSUPP" and report["svm"] is None
    assert report["plan"]["applies"] is True and report["plan"]["pages"] == 4
