"""What read_host() (vmxprobe/host/readings.py) reads on AMD CPUs, and only there: CPUID
Fn8000_001F where the extended range reaches it, VM_CR on every CPU, and SEV_STATUS
where that leaf offers SME or SEV, as sme_enable() (arch/x86/mm/mem_encrypt_identity.c)
reads it; the Intel path reads what it read before. Also through real files: a
/dev/cpu tree of msr files read with pread(), and no cpuid device at all."""

from tests import hostgen
from tests.scanning import run
from vmxprobe.host import fixture
from vmxprobe.host.readings import read_host
from vmxprobe.host.sources import FixtureHost, LiveHost

VM_CR, SEV = 0xC0010114, 0xC0010131
AMD_ONLY_MSRS = {VM_CR, SEV}
AMD_ONLY_LEAVES = {0x80000000, 0x80000001, 0x8000001F}


class Counting(FixtureHost):
    def __init__(self, fx):
        super().__init__(fx)
        self.msrs, self.leaves = [], []

    def read_msr(self, cpu, index):
        self.msrs.append((cpu, index))
        return super().read_msr(cpu, index)

    def read_cpuid(self, cpu, leaf, subleaf=0):
        self.leaves.append((cpu, leaf, subleaf))
        return super().read_cpuid(cpu, leaf, subleaf)


def test_intel_cpus_get_no_amd_read():
    src = Counting(fixture.parse(hostgen.synthetic(4, 1)))
    read_host(src)
    assert not {i for _, i in src.msrs} & AMD_ONLY_MSRS
    assert not {leaf for _, leaf, _ in src.leaves} & AMD_ONLY_LEAVES
    # What the Intel path reads, unchanged: leaves 0 and 1, then the two MSRs and the
    # capability MSRs VMX_BASIC announces.
    assert [leaf for c, leaf, _ in src.leaves if c == 0] == [0, 1, 7, 0x12]
    assert [i for c, i in src.msrs if c == 0][:2] == [0x3A, 0x480]


def test_amd_cpus_read_vm_cr_everywhere_and_sev_status_where_the_kernel_does():
    src = Counting(fixture.parse(hostgen.amd_synthetic(4, mem_encrypt=0x1, sev_status=0x0)))
    scan = read_host(src)
    assert sorted(c for c, i in src.msrs if i == VM_CR) == [0, 1, 2, 3]
    assert sorted(c for c, i in src.msrs if i == SEV) == [0, 1, 2, 3]
    assert {leaf for _, leaf, _ in src.leaves} >= AMD_ONLY_LEAVES
    # CPUs that read alike share one msr dict (read_host()'s deduplication).
    assert all(scan.cpus[c].msr is scan.cpus[0].msr for c in range(4))


def test_no_sev_status_without_sme_or_sev_or_without_the_leaf():
    for kw in ({"mem_encrypt": 0x8}, {}):
        src = Counting(fixture.parse(hostgen.amd_synthetic(2, **kw)))
        read_host(src)
        assert SEV not in {i for _, i in src.msrs}, kw
    src = Counting(fixture.parse(hostgen.amd_synthetic(2)))
    read_host(src)
    assert 0x8000001F not in {leaf for _, leaf, _ in src.leaves}  # the range ends at 0x80000008


def test_a_cpu_reading_differently_keeps_its_own_dict():
    fx = fixture.parse(hostgen.amd_synthetic(4))
    from vmxprobe.host.sources import MsrReading

    fx.msr[VM_CR][2] = MsrReading(value=0x18)
    scan = read_host(FixtureHost(fx))
    assert scan.cpus[2].msr is not scan.cpus[0].msr and scan.cpus[3].msr is scan.cpus[0].msr
    assert scan.cpus[2].msr[VM_CR].value == 0x18


def test_through_real_files_without_a_cpuid_device(tree):
    """The msr files are read with pread() at 0xc0010114; no cpuid device exists, so the
    vendor is /proc/cpuinfo's and X86_FEATURE_SVM its svm flag. Without CPUID
    Fn8000_001F to say otherwise SEV_STATUS is read too (the msr driver answers EIO on a
    CPU without it); bare-metal EPYC reads 0."""
    root = tree(hostgen.amd_synthetic(4, kernel="6.12.0-1-amd64", sev_status=0), cpuid_leaves=())
    scan = read_host(LiveHost(root))
    assert scan.cpus[0].cpuid[0].errno == "ENOENT" and scan.vendor(0) == "AuthenticAMD"
    assert [scan.cpus[c].msr[VM_CR].value for c in range(4)] == [0, 0, 0, 0]
    report, v = run(LiveHost(root))
    assert (v.virt, v.x86_svm_init, v.kvm_amd, v.ready) == ("svm", "ok", "ok", True)
    assert report["plan"]["applies"] is False and report["plan"]["materialized"] is False


def test_through_real_files_one_cpu_with_svmdis(tree):
    doc = hostgen.amd_synthetic(4, kernel="6.5.0-26-generic", sev_status=0)
    for group in doc["msr"]["0xc0010114"]:
        group["cpus"] = "0-1,3"
    doc["msr"]["0xc0010114"].append({"cpus": "2", "value": "0x0000000000000018"})
    root = tree(doc, cpuid_leaves=())
    report, v = run(LiveHost(root))
    # 6.3-6.5 svm.c kvm_is_svm_supported() on CPU 2, from svm_check_processor_compat().
    assert v.kvm_amd == "EIO" and not v.ready
    assert any('"kvm_amd: SVM disabled (by BIOS) in MSR_VM_CR on CPU 2"' in r for r in v.reasons)
    assert report["per_cpu"][2]["msr"]["0xc0010114"] == "0x0000000000000018"
