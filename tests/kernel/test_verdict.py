"""Each verdict path of x86_vmx_init() and kvm_intel, on hosts changed one register at a time."""

import pytest

from tests import hostgen
from tests.scanning import run
from vmxprobe.host import fixture
from vmxprobe.host.sources import CpuidReading, FixtureHost, MsrReading

FC, BASIC = 0x3A, 0x480
SKYLAKE = 0x00DA040000000004


def host(n=4, nodes=1, release=None, **kw):
    fx = fixture.parse(hostgen.synthetic(n, nodes, **kw))
    if release is not None:
        fx.files["proc/sys/kernel/osrelease"] = release + "\n"
    return fx


def scan(fx):
    report, verdict = run(FixtureHost(fx), fx)
    return report, verdict


def setreg(fx, index, cpu, value=None, errno=None):
    fx.msr[index][cpu] = MsrReading(value=value, errno=errno)


def reasons(report):
    return "\n".join(report["verdict"]["reasons"])


def test_ready_host():
    report, v = scan(host(8, 2))
    assert (v.x86_vmx_init, v.kvm_intel, v.ready, v.determined) == ("ok", "ok", True, True)
    assert report["plan"]["materialized"] and report["plan"]["verified"]["ok"] == 8
    assert report["plan"]["header"] == "0x00000004"
    assert report["vmx_basic"]["revision_id"] == 4
    assert report["feature_control"]["state"] == "enabled_locked"


def test_firmware_locked_vmx_off():
    fx = host()
    for cpu in range(4):
        setreg(fx, FC, cpu, 0x1)
    report, v = scan(fx)
    assert v.x86_vmx_init == "EOPNOTSUPP" and not v.ready and v.determined
    assert "CPU 0: IA32_FEATURE_CONTROL (0x3a) = 0x0000000000000001" in reasons(report)
    assert "VMX outside SMX (bit 2) clear" in reasons(report)
    # The plan is still laid out (for placement), but the kernel would not allocate it.
    assert report["plan"]["verified"]["kernel_allocates"] is False
    assert report["plan"]["header"] == "0x00000004"  # what the CPU would have stamped


def test_only_inside_smx_mentions_tboot():
    fx = host()
    setreg(fx, FC, 0, 0x3)
    report, v = scan(fx)
    assert v.x86_vmx_init == "EOPNOTSUPP"
    assert "tboot" in reasons(report)


def test_unlocked_feature_control_is_locked_by_the_kernel():
    fx = host()
    for cpu in range(4):
        setreg(fx, FC, cpu, 0x0)
    report, v = scan(fx)
    assert v.x86_vmx_init == "ok" and v.ready
    assert "unlocked (bit 0 clear)" in reasons(report)


def test_faulting_feature_control_clears_vmx():
    fx = host()
    setreg(fx, FC, 0, errno="EIO")
    report, v = scan(fx)
    assert v.x86_vmx_init == "EOPNOTSUPP"
    assert "IA32_FEATURE_CONTROL (0x3a) faults (EIO)" in reasons(report)


@pytest.mark.parametrize(
    "release,kvm",
    [
        # 7.1+: arch/x86/virt/hw.c x86_vmx_init() warns, returns -EIO and clears
        # X86_FEATURE_VMX: kvm_intel's kvm_is_vmx_supported() refuses.
        ("7.1.0", "EOPNOTSUPP"),
        # Up to 7.0: arch/x86/kvm/vmx/vmx.c setup_vmcs_config() refuses the size, -EIO.
        ("6.12.0-1-amd64", "EIO"),
        ("6.1.0-57-amd64", "EIO"),
    ],
)
def test_vmcs_size_above_page_is_eio(release, kvm):
    fx = host(release=release)
    big = (SKYLAKE & ~(0x1FFF << 32)) | (4097 << 32)
    for cpu in range(4):
        setreg(fx, BASIC, cpu, big)
    report, v = scan(fx)
    assert v.x86_vmx_init == "EIO" and v.kvm_intel == kvm
    assert "VMCS size (bits 44:32) = 4097 > PAGE_SIZE 4096" in reasons(report)
    assert report["plan"]["verified"]["kernel_allocates"] is False
    assert report["verdict"]["kernel_model"]["version"] == release[: release.index(".", 2)]


def test_vmcs_size_of_exactly_a_page_is_fine():
    fx = host()
    exact = (SKYLAKE & ~(0x1FFF << 32)) | (4096 << 32)
    for cpu in range(4):
        setreg(fx, BASIC, cpu, exact)
    assert scan(fx)[1].x86_vmx_init == "ok"


@pytest.mark.parametrize(
    "value,words",
    [
        (SKYLAKE | 1 << 48, "bit 48 (32-bit physical addresses only)"),
        (SKYLAKE & ~(0xF << 50), "memory type (bits 53:50) is 0, not 6 (write-back)"),
    ],
)
def test_kvm_refusals_of_the_boot_cpu_config(value, words):
    fx = host()
    for cpu in range(4):
        setreg(fx, BASIC, cpu, value)
    report, v = scan(fx)
    assert v.x86_vmx_init == "ok" and v.kvm_intel == "EIO" and not v.ready
    assert words in reasons(report)


def test_one_cpu_with_a_different_vmx_basic_is_named():
    fx = host(8, 2)
    setreg(fx, BASIC, 5, SKYLAKE ^ (1 << 49))
    report, v = scan(fx)
    assert v.x86_vmx_init == "ok" and v.kvm_intel == "EIO"
    r = reasons(report)
    assert "CPU 5: IA32_VMX_BASIC (0x480) = 0x00d8040000000004 differs" in r
    assert "in bit(s) 49" in r and "Inconsistent VMCS config on CPU 5" in r
    assert "CPU 4:" not in r and "CPU 6:" not in r


def test_one_cpu_with_vmx_locked_off_on_6_1_is_disabled_by_bios():
    # 6.1: arch/x86/kernel/cpu/common.c identify_cpu() ANDs CPU 6's features into
    # boot_cpu_data, so arch/x86/kvm/x86.c kvm_x86_vendor_init()'s vmx_disabled_by_bios()
    # refuses before hardware_setup(): no root VMCS page is allocated (measured on 6.1
    # under Bochs: tests/bochs, case lock-ap-off-smp2).
    fx = host(8, 2, release="6.1.0-57-amd64")
    setreg(fx, FC, 6, 0x1)
    report, v = scan(fx)
    assert v.x86_vmx_init == "ok" and v.kvm_intel == "EOPNOTSUPP"
    r = reasons(report)
    assert "CPU 6: IA32_FEATURE_CONTROL (0x3a) = 0x0000000000000001" in r
    assert "CPU(s) 6 lack X86_FEATURE_VMX, so boot_cpu_data" in r
    assert "\"kvm: support for 'kvm_intel' disabled by bios\" (-EOPNOTSUPP)" in r
    assert report["plan"]["verified"]["kernel_allocates"] is False


@pytest.mark.parametrize(
    "release,message",
    [
        ("6.12.0-1-amd64", "VMX not enabled (by BIOS) in MSR_IA32_FEAT_CTL on CPU 6"),
        ("7.1.0", "VMX not fully enabled on CPU 6.  Check kernel logs and/or BIOS"),
    ],
)
def test_one_cpu_with_vmx_locked_off_on_6_3_and_later_fails_the_cr4_check(release, message):
    # 6.3+: kvm_is_vmx_supported() (arch/x86/kvm/vmx/vmx.c) asks only the loading CPU;
    # then kvm_x86_check_processor_compatibility() (arch/x86/kvm/x86.c) finds CPU 0's CR4
    # reserved bits (VMXE) differ from boot_cpu_data's, which lost VMX to CPU 6: -EIO
    # with no message. Loaded on CPU 6 it is -EOPNOTSUPP with the message instead.
    fx = host(8, 2, release=release)
    setreg(fx, FC, 6, 0x1)
    report, v = scan(fx)
    assert v.x86_vmx_init == "ok" and v.kvm_intel == "EIO" and not v.ready
    r = reasons(report)
    assert "CPU 0 has VMX (CR4.VMXE; CPU(s) 6 lack it)" in r
    assert "kvm_x86_check_processor_compatibility() refuses it (-EIO, with no message)" in r
    assert "loading kvm_intel stops at the first of these, CPU 0" in r
    # The log line carries kvm_intel's pr_fmt prefix from 6.3 on.
    first = "if modprobe runs on CPU 6 instead, kvm_is_vmx_supported() refuses there first"
    assert f'{first}: "kvm_intel: {message}"' in r
    assert report["plan"]["verified"]["kernel_allocates"] is True


def test_feature_control_differing_in_other_bits_is_reported_not_refused():
    fx = host(4)
    setreg(fx, FC, 2, 0x5 | 1 << 20)
    report, v = scan(fx)
    assert v.ready
    assert "CPU(s) 2: IA32_FEATURE_CONTROL differs" in reasons(report)


def test_vmx_basic_faulting_on_a_secondary_cpu():
    fx = host(4)
    setreg(fx, BASIC, 3, errno="EIO")
    report, v = scan(fx)
    assert v.kvm_intel == "EIO" and "Failed to setup VMCS config on CPU 3" in reasons(report)


def test_vmx_basic_zero_is_not_exposed_not_revision_zero():
    fx = host(2)
    for cpu in range(2):
        setreg(fx, BASIC, cpu, 0)
    report, v = scan(fx)
    assert v.x86_vmx_init == "ok" and v.kvm_intel == "EIO" and not v.ready
    assert "reads 0 although CPUID offers VMX: not exposed" in reasons(report)


def test_vmx_basic_eio_with_vmx_in_cpuid():
    fx = host(2)
    for cpu in range(2):
        setreg(fx, BASIC, cpu, errno="EIO")
    report, v = scan(fx)
    assert v.kvm_intel == "EIO" and "faults (EIO) although CPUID offers VMX" in reasons(report)


@pytest.mark.parametrize(
    "code,hint",
    [
        ("ENOENT", "modprobe msr"),
        ("EPERM", "run as root"),
        ("EACCES", "run as root"),
    ],
)
def test_unreadable_msrs_leave_it_undetermined_with_the_fix(code, hint):
    fx = host(2)
    for cpu in range(2):
        setreg(fx, FC, cpu, errno=code)
        setreg(fx, BASIC, cpu, errno=code)
    report, v = scan(fx)
    assert v.x86_vmx_init is None and not v.determined and not v.ready
    assert hint in v.undetermined[0] and f"({code})" in v.undetermined[0]


def test_a_cpu_going_offline_mid_scan_is_undetermined():
    fx = host(4)
    setreg(fx, FC, 3, errno="ENXIO")
    setreg(fx, BASIC, 3, errno="ENXIO")
    report, v = scan(fx)
    assert v.x86_vmx_init == "ok" and v.kvm_intel is None and not v.determined
    assert any("CPU 3" in u and "ENXIO" in u for u in v.undetermined)


def test_cpuid_unreadable_falls_back_to_the_kernel_flag():
    fx = host(2)
    for cpu in range(2):
        fx.cpuid[(1, 0)][cpu] = CpuidReading(errno="ENOENT")
    report, v = scan(fx)
    assert v.ready
    fx.files["proc/cpuinfo"] = fx.files["proc/cpuinfo"].replace(" vmx", "")
    report, v = scan(fx)
    assert v.x86_vmx_init == "EOPNOTSUPP"
    assert "the vmx flag in /proc/cpuinfo (CPUID device unreadable)" in reasons(report)


def test_cpu0_offline_another_cpu_stands_in():
    fx = host(4)
    fx.files["sys/devices/system/cpu/online"] = "1-3\n"
    report, v = scan(fx)
    assert v.boot_cpu == 1 and v.ready
    assert "CPU 0 is offline; CPU 1 stands in" in reasons(report)
    assert report["plan"]["pages"] == 4
    assert report["cpus"]["probed"] == "1-3"
    assert "CPU(s) 0 are not online" in reasons(report)


def test_bundled_kvm_nested_guest_is_labelled_emulated():
    report, v = scan(fixture.load("kvm-nested-guest"))
    assert v.ready and v.emulated == "KVM nested VMX"
    assert report["host"]["hypervisor"] == "KVM"
    assert "VMCS12_REVISION" in reasons(report)


def test_bundled_guest_without_nested():
    report, v = scan(fixture.load("kvm-guest-no-nested"))
    assert v.x86_vmx_init == "EOPNOTSUPP" and v.determined
    assert "does not expose VMX" in reasons(report)


def test_bundled_amd_host():
    report, v = scan(fixture.load("amd-host"))
    assert v.x86_vmx_init == "EOPNOTSUPP"
    assert "SVM (AMD-V)" in reasons(report)
    assert report["host"]["vendor"] == "AuthenticAMD" and report["host"]["family"] == 0x17


def test_recorded_guest_without_msr_driver():
    report, v = scan(fixture.load("kvm-guest-no-msr-driver"))
    assert v.x86_vmx_init == "EOPNOTSUPP" and v.determined
    r = reasons(report)
    assert "does not expose VMX" in r and "modprobe msr" in r


def test_kernel_view_hidden_flag_explained():
    report, v = scan(fixture.load("intel-fw-locked-off"))
    assert "since Linux 5.6 the kernel hides the flag" in reasons(report)


def test_kernel_view_old_kernel_keeps_flag():
    fx = host(2)
    for cpu in range(2):
        setreg(fx, FC, cpu, 0x1)
    report, v = scan(fx)  # the synthetic cpuinfo still shows vmx
    assert "kernels before 5.6 kept the flag" in reasons(report)


def test_kernel_view_flag_missing_though_allowed():
    fx = host(2)
    fx.files["proc/cpuinfo"] = fx.files["proc/cpuinfo"].replace(" vmx", "")
    report, v = scan(fx)
    assert v.ready
    assert "the running kernel cleared it" in reasons(report)


def test_a_boot_cpu_refusal_stops_before_the_per_cpu_checks():
    # hardware_setup() fails on the boot CPU, so vmx_check_processor_compat() never runs:
    # CPU 2's different VMX_BASIC is not a reason of its own.
    fx = host(4)
    for cpu in range(4):
        setreg(fx, BASIC, cpu, SKYLAKE | 1 << 48)
    setreg(fx, BASIC, 2, SKYLAKE | 1 << 48 | 1 << 49)
    report, v = scan(fx)
    assert v.kvm_intel == "EIO"
    r = reasons(report)
    assert "bit 48 (32-bit physical addresses only)" in r
    assert "kvm_intel stops at the loading CPU, in hardware_setup(): the per-CPU compatibility" in r
    assert "checks never run" in r
    assert "CPU 2:" not in r
