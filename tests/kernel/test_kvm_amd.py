"""Loading kvm_amd (kernel/kvm_amd.py), rule by rule and release by release, on AMD hosts
changed one register at a time. Each test names the kernel code it mirrors:

- 6.1 (Debian 6.1.192): arch/x86/kvm/svm/svm.c has_svm() -> cpu_has_svm()
  (arch/x86/include/asm/virtext.h, boot_cpu_data) and is_disabled() (VM_CR on the
  loading CPU), called by kvm_x86_vendor_init() (arch/x86/kvm/x86.c);
  svm_check_processor_compat() returns 0.
- 6.3-6.5: svm.c kvm_is_svm_supported(): cpu_has_svm() on boot_cpu_data, then VM_CR on
  the CPU it runs on; svm_check_processor_compat() runs it on every CPU (-EIO).
- 6.6: __kvm_is_svm_supported() asks cpu_data(cpu) (kvm-x86-misc-6.6).
- 6.7 on: init_amd() (arch/x86/kernel/cpu/amd.c) clears X86_FEATURE_SVM on VM_CR.SVMDIS
  and KVM reads VM_CR no more (x86_cpu_for_6.7_rc1, "x86/cpu: Clear SVM feature if
  disabled by BIOS").
- every release: the CR4 check of kvm_x86_check_processor_compatibility() (x86.c;
  kvm_arch_check_processor_compat() in 6.1), -EIO without a message.
"""

import pytest

from tests import hostgen
from tests.scanning import run
from vmxprobe.host import fixture
from vmxprobe.host.sources import FixtureHost, MsrReading

VM_CR = 0xC0010114
ALL_RELEASES = ["6.1.0-57-amd64", "6.3.13", "6.5.0-26-generic", "6.6.58", "6.7.12", "6.12.0-1-amd64", "7.1.3"]


def amd(release, n=4, **kw):
    return fixture.parse(hostgen.amd_synthetic(n, kernel=release, **kw))


def scan(fx):
    return run(FixtureHost(fx), fx)


def set_vm_cr(fx, cpu, value=None, errno=None):
    fx.msr[VM_CR][cpu] = MsrReading(value=value, errno=errno)


def hide_svm_flag(fx, cpu):
    """What a 6.7+ kernel shows for a CPU whose flag init_amd() cleared."""
    blocks = fx.files["proc/cpuinfo"].split("\n\n")
    blocks[cpu] = blocks[cpu].replace(" svm", "")
    fx.files["proc/cpuinfo"] = "\n\n".join(blocks)


def reasons(report):
    return "\n".join(report["verdict"]["reasons"])


@pytest.mark.parametrize("release", ALL_RELEASES)
def test_svm_enabled_everywhere_loads_on_every_release(release):
    report, v = scan(amd(release))
    assert (v.virt, v.x86_svm_init, v.kvm_amd, v.ready, v.determined) == ("svm", "ok", "ok", True, True)
    assert (v.x86_vmx_init, v.kvm_intel) == ("EOPNOTSUPP", "EOPNOTSUPP")
    assert report["verdict"]["virt"] == "svm" and report["svm"]["vm_cr"]["state"] == "enabled"
    assert "all 4 online CPUs (0-3) have X86_FEATURE_SVM" in reasons(report)


@pytest.mark.parametrize(
    "release,message",
    [
        # 6.1 svm.c is_disabled() on the loading CPU, then x86.c kvm_x86_vendor_init()'s message.
        ("6.1.0-57-amd64", "\"kvm: support for 'kvm_amd' disabled by bios\""),
        # 6.3-6.6 svm.c kvm_is_svm_supported() / __kvm_is_svm_supported(): VM_CR read by KVM.
        ("6.5.0-26-generic", '"kvm_amd: SVM disabled (by BIOS) in MSR_VM_CR on CPU 0"'),
        ("6.6.58", '"kvm_amd: SVM disabled (by BIOS) in MSR_VM_CR on CPU 0"'),
        # 6.7+: amd.c init_amd() cleared the flag; svm.c: "SVM not supported by CPU %d".
        ("6.12.0-1-amd64", '"kvm_amd: SVM not supported by CPU 0"'),
    ],
)
def test_firmware_disabled_svm_refuses_at_load(release, message):
    report, v = scan(amd(release, vm_cr=0x18))
    assert v.kvm_amd == "EOPNOTSUPP" and not v.ready and v.determined
    assert message in reasons(report)
    # x86_svm_init() is judged by 7.1's rules whatever the release: the boot CPU's flag is gone.
    assert v.x86_svm_init == "EOPNOTSUPP"
    assert report["svm"]["vm_cr"]["state"] == "disabled_locked" and report["svm"]["cpus_svmdis"] == "0-3"


def test_firmware_disabled_svm_on_7_1_fails_at_boot():
    # arch/x86/virt/hw.c x86_svm_init(): !cpu_feature_enabled(X86_FEATURE_SVM) -> -EOPNOTSUPP.
    report, v = scan(amd("7.1.3", vm_cr=0x18))
    assert (v.x86_svm_init, v.kvm_amd) == ("EOPNOTSUPP", "EOPNOTSUPP")
    assert "x86_svm_init() returns -EOPNOTSUPP" in report["verdict"]["reasons"][0]


@pytest.mark.parametrize(
    "release,errno,message",
    [
        # 6.1: is_disabled() reads the loading CPU's VM_CR only; svm_check_processor_compat()
        # returns 0: kvm_amd loads.
        ("6.1.0-57-amd64", "ok", "which 6.1 does not check"),
        # 6.3-6.6: the per-CPU check reads VM_CR on CPU 2: -EIO with its message.
        ("6.3.13", "EIO", '"kvm_amd: SVM disabled (by BIOS) in MSR_VM_CR on CPU 2"'),
        ("6.6.58", "EIO", '"kvm_amd: SVM disabled (by BIOS) in MSR_VM_CR on CPU 2"'),
        # 6.7+: CPU 2 lost X86_FEATURE_SVM at boot; cpu_has(c, SVM) fails there.
        ("6.12.0-1-amd64", "EIO", '"kvm_amd: SVM not supported by CPU 2"'),
    ],
)
def test_one_other_cpu_with_svmdis(release, errno, message):
    fx = amd(release)
    set_vm_cr(fx, 2, 0x18)
    if release.startswith("6.12"):
        hide_svm_flag(fx, 2)
    report, v = scan(fx)
    assert v.kvm_amd == errno and v.x86_svm_init == "ok"  # hw.c looks at the boot CPU alone
    assert message in reasons(report)
    assert v.ready is (errno == "ok")
    if errno == "EIO":
        assert "if modprobe runs on CPU 2 instead" in reasons(report)


def test_the_6_1_gap_says_what_happens_when_a_vm_runs_there():
    fx = amd("6.1.0-57-amd64")
    set_vm_cr(fx, 3, 0x18)
    report, _ = scan(fx)
    text = reasons(report)
    assert "svm_hardware_enable()" in text and "WRMSR to 0xc0000080" in text
    assert "6.3 and later refuse such a host at load" in text


@pytest.mark.parametrize(
    "release,fix",
    [
        # Before 6.7 the flag survives: clearing SVMDIS by software would let kvm_amd load.
        ("6.5.0-26-generic", "would let kvm_amd load on this kernel"),
        # 6.7+: init_amd() already cleared the flag at boot: a reboot is needed anyway.
        ("6.12.0-1-amd64", "a reboot with SVM enabled in the firmware setup is still needed"),
    ],
)
def test_unlocked_svmdis_says_software_could_clear_it(release, fix):
    report, v = scan(amd(release, vm_cr=0x10))
    assert v.kvm_amd == "EOPNOTSUPP"
    text = reasons(report)
    assert "VM_CR.LOCK (bit 3) is clear" in text and fix in text
    assert report["svm"]["vm_cr"]["state"] == "disabled_unlocked"


def test_locked_svmdis_names_the_firmware_fix():
    report, _ = scan(amd("6.12.0-1-amd64", vm_cr=0x18))
    assert 'enable SVM ("SVM Mode", AMD-V) in the firmware setup and reboot' in reasons(report)


@pytest.mark.parametrize(
    "release,errno,message",
    [
        # cpu_has_svm() asks boot_cpu_data, the AND of every CPU (identify_cpu()).
        (
            "6.1.0-57-amd64",
            "EOPNOTSUPP",
            '"has_svm: svm not available", then "kvm: no hardware support for \'kvm_amd\'"',
        ),
        ("6.3.13", "EOPNOTSUPP", '"kvm_amd: SVM not supported by CPU 0, svm not available"'),
        # 6.6+: the loading CPU's own flag passes; the per-CPU check fails on CPU 1.
        ("6.6.58", "EIO", '"kvm_amd: SVM not supported by CPU 1"'),
        ("6.12.0-1-amd64", "EIO", '"kvm_amd: SVM not supported by CPU 1"'),
    ],
)
def test_a_cpu_without_svm_in_cpuid(release, errno, message):
    fx = amd(release)
    leaf = fx.cpuid[(0x80000001, 0)][1]
    eax, ebx, _, edx = leaf.value
    fx.cpuid[(0x80000001, 0)][1] = leaf._replace(value=(eax, ebx, 0, edx))
    report, v = scan(fx)
    assert v.kvm_amd == errno and message in reasons(report)
    assert report["svm"]["cpus_without_svm"] == "1"


@pytest.mark.parametrize(
    "release,message",
    [
        # 6.1 svm.c has_svm(): pr_info() carries svm.c's "SVM: " prefix.
        (
            "6.1.0-57-amd64",
            '"SVM: KVM is unsupported when running as an SEV guest", then '
            "\"kvm: no hardware support for 'kvm_amd'\"",
        ),
        ("6.12.0-1-amd64", '"kvm_amd: KVM is unsupported when running as an SEV guest"'),
    ],
)
def test_sev_guest_is_refused(release, message):
    # cc_platform_has(CC_ATTR_GUEST_MEM_ENCRYPT): sev_status bit 0 (arch/x86/coco/core.c).
    fx = amd(release, mem_encrypt=0xA, sev_status=0x3, hypervisor=hostgen.KVM_SIG)
    report, v = scan(fx)
    assert (v.x86_svm_init, v.kvm_amd) == ("EOPNOTSUPP", "EOPNOTSUPP")
    assert message in reasons(report)
    assert report["svm"]["sev_guest"] is True and report["svm"]["sev_status"]["sev_es"] is True
    assert v.emulated == "KVM nested SVM"


def test_the_svm_check_comes_before_the_sev_guest():
    # has_svm() / __kvm_is_svm_supported(): the flag first, then the SEV guest.
    fx = amd("6.12.0-1-amd64", mem_encrypt=0x2, sev_status=0x1, svm=False)
    report, v = scan(fx)
    assert v.kvm_amd == "EOPNOTSUPP"
    assert '"kvm_amd: SVM not supported by CPU 0"' in reasons(report)
    assert "SEV guest" not in "\n".join(r for r in report["verdict"]["reasons"] if "kvm_amd refuses" in r)


@pytest.mark.parametrize("release", ["6.1.0-57-amd64", "6.12.0-1-amd64"])
def test_cr4_check_applies_to_kvm_amd(release):
    # x86.c: __cr4_reserved_bits(cpu_has, c) != __cr4_reserved_bits(cpu_has, &boot_cpu_data)
    # -> -EIO, no message. CPUs 0, 1 and 3 have SMEP, CPU 2 not: boot_cpu_data has none.
    fx = amd(release)
    blocks = fx.files["proc/cpuinfo"].split("\n\n")
    for cpu in (0, 1, 3):
        blocks[cpu] = blocks[cpu].replace(" lm", " lm smep")
    fx.files["proc/cpuinfo"] = "\n\n".join(blocks)
    report, v = scan(fx)
    assert v.kvm_amd == "EIO" and v.x86_svm_init == "ok"
    assert "CPU 0 has SMEP (CR4.SMEP; CPU(s) 2 lack it)" in reasons(report)
    assert "loading kvm_amd stops at the first of these, CPU 0" in reasons(report)


def test_a_faulting_vm_cr_reads_as_zero():
    # rdmsrl() is unchecked: a #GP on VM_CR reads 0, SVMDIS clear.
    fx = amd("6.5.0-26-generic")
    for cpu in range(4):
        set_vm_cr(fx, cpu, errno="EIO")
    _, v = scan(fx)
    assert v.kvm_amd == "ok" and v.ready


@pytest.mark.parametrize("release", ["6.1.0-57-amd64", "6.5.0-26-generic", "6.12.0-1-amd64"])
def test_an_unreadable_vm_cr_leaves_the_verdict_open(release):
    fx = amd(release)
    set_vm_cr(fx, 0, errno="EACCES")
    report, v = scan(fx)
    assert not v.determined and not v.ready
    assert v.undetermined[0].startswith("cannot read VM_CR (0xc0010114) on CPU 0 (EACCES)")
    assert report["svm"]["cpus_vm_cr_unread"] == "0"


def test_an_unreadable_ap_is_open_only_where_the_kernel_reads_it():
    # 6.1 reads VM_CR on the loading CPU alone: an AP's VM_CR does not decide.
    fx = amd("6.1.0-57-amd64")
    set_vm_cr(fx, 3, errno="EPERM")
    _, v = scan(fx)
    assert v.kvm_amd == "ok" and v.determined
    fx = amd("6.5.0-26-generic")
    set_vm_cr(fx, 3, errno="EPERM")
    _, v = scan(fx)
    assert v.kvm_amd is None and not v.determined
    assert "cannot read VM_CR (0xc0010114) on CPU 3 (EPERM)" in v.undetermined[0]


def test_offline_cpus_are_checked_when_they_come_online_from_6_3():
    for release, words in (("6.1.0-57-amd64", "is not checked"), ("6.12.0-1-amd64", "meets kvm_amd's")):
        doc = hostgen.amd_synthetic(4, kernel=release)
        doc["files"]["sys/devices/system/cpu/possible"] = "0-7\n"
        fx = fixture.parse(doc)
        report, _ = scan(fx)
        assert f"CPU(s) 4-7 are not online, so not read: each {words}" in reasons(report)
