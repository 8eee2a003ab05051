"""Tests for vmxprobe.host.readings: one scan's readings from one source. The capability
MSRs are read in rounds, only those SDM Vol. 3D Appendix A says exist (hosts carry
published registers, tests/published.py); trees written by tests/hostgen.py are read
through --root's reader with real preads on files laid out like /dev/cpu; /proc/cpuinfo
is parsed in the format arch/x86/kernel/cpu/proc.c show_cpuinfo() prints. On AMD CPUs,
and only there, CPUID Fn8000_001F, VM_CR on every CPU and SEV_STATUS where sme_enable()
(arch/x86/mm/mem_encrypt_identity.c) would read it."""

import pytest

from tests import hostgen, published
from tests.scanning import run
from vmxprobe.arch import capabilities as caps
from vmxprobe.host import fixture
from vmxprobe.host.readings import CpuReadings as CpuProbe
from vmxprobe.host.readings import parse_cpuinfo, read_capabilities, read_host
from vmxprobe.host.sources import FixtureHost, LiveHost, MsrReading

# --- reading in rounds ------------------------------------------------------------------


class Recorder:
    """A source answering read_msr() from a dict, keeping the order of the reads."""

    def __init__(self, values, faults=()):
        self.values, self.faults, self.reads = values, set(faults), []

    def read_msr(self, cpu, index):
        self.reads.append(index)
        if index in self.faults:
            return MsrReading(errno="EIO")
        if index not in self.values:
            raise AssertionError(f"read 0x{index:x}, which the SDM says does not exist here")
        return MsrReading(value=self.values[index])

    def read_msrs(self, cpu, indexes):
        return [self.read_msr(cpu, index) for index in indexes]


def probe_for(values, **kw):
    src = Recorder(values, **kw)
    p = CpuProbe(0)
    p.msr[0x480] = MsrReading(value=values[0x480])
    read_capabilities(src, p)
    return p, src


def test_penryn_reads_only_what_exists():
    # No TRUE controls (bit 55 clear), secondary controls without EPT or VPID: no
    # 0x48C-0x493 are read at all.
    values = dict(published.PUBLISHED["penryn-e7500"]["msrs"])
    p, src = probe_for(values)
    assert sorted(src.reads) == list(range(0x481, 0x48C))
    assert src.reads.index(0x48B) > src.reads.index(0x482)  # learnt from 0x482, next round


def test_raptor_lake_reads_in_rounds():
    values = dict(published.PUBLISHED["raptor-lake-s"]["msrs"])
    values[0x493] = 0x3
    p, src = probe_for(values)
    assert sorted(src.reads) == list(range(0x481, 0x494))
    first_round = set(caps.ALWAYS_PRESENT) | set(caps.TRUE_MSRS)
    assert set(src.reads[: len(first_round)]) == first_round
    assert src.reads.index(0x48C) > src.reads.index(0x48B)
    assert src.reads.index(0x491) > src.reads.index(0x48B)


def test_no_capability_reads_without_vmx():
    src = Recorder({})
    p = CpuProbe(0)
    for basic in (MsrReading(value=0), MsrReading(errno="EIO"), MsrReading(errno="UNRECORDED")):
        p.msr = {0x480: basic}
        read_capabilities(src, p)
    assert src.reads == []


def test_a_fault_where_the_msr_should_exist_is_kept():
    values = dict(published.PUBLISHED["skylake-u"]["msrs"])
    p, src = probe_for(values, faults={0x48C})
    assert p.msr[0x48C] == MsrReading(errno="EIO")
    assert 0x491 in p.msr  # still read: it hangs on 0x48B, not on 0x48C


class Bounded(Recorder):
    """A Recorder that fails the test instead of reading without end."""

    def read_msr(self, cpu, index):
        assert len(self.reads) < 200, "read_capabilities() does not stop"
        return super().read_msr(cpu, index)


@pytest.mark.parametrize(
    "name,faults",
    [
        ("penryn-e7500", ()),
        ("raptor-lake-s", ()),
        ("skylake-u", {0x48C}),
        ("skylake-u", {0x482, 0x48B}),
        ("raptor-lake-s", set(range(0x481, 0x494))),  # every capability MSR faults
    ],
)
def test_rounds_shared_by_cpus_read_what_each_reads_alone(name, faults):
    # The memo of rounds a scan shares between its CPUs: a CPU that reads like an
    # earlier one takes its rounds from it, and must read exactly what it would alone,
    # in the same order, also when a whole round faults.
    values = {0x493: 0x3, **published.PUBLISHED[name]["msrs"]}  # 0x493 as above
    alone = Bounded(values, faults)
    p = CpuProbe(0)
    p.msr[0x480] = MsrReading(value=values[0x480])
    read_capabilities(alone, p)
    rounds: dict = {}
    for other in ("penryn-e7500", "skylake-u", name):  # the memo also holds other CPUs
        o = {0x493: 0x3, **published.PUBLISHED[other]["msrs"]}
        q = CpuProbe(1)
        q.msr[0x480] = MsrReading(value=o[0x480])
        read_capabilities(Bounded(o), q, rounds)
    for _ in range(2):
        shared = Bounded(values, faults)
        q = CpuProbe(2)
        q.msr[0x480] = MsrReading(value=values[0x480])
        read_capabilities(shared, q, rounds)
        assert shared.reads == alone.reads
        assert list(q.msr.items()) == list(p.msr.items())


# --- read_host --------------------------------------------------------------------------


def test_a_tree_is_read_with_real_preads_on_every_online_cpu(tmp_path):
    root = tmp_path / "root"
    hostgen.write_tree(hostgen.synthetic(4, 2, feat_ctl=0x5, vmx_basic=0x00DA040000000004), str(root))
    scan = read_host(LiveHost(str(root)))
    assert sorted(scan.cpus) == [0, 1, 2, 3] and scan.source_kind == "live"
    for p in scan.cpus.values():
        assert p.msr[0x3A] == MsrReading(value=0x5)
        assert p.msr[0x480] == MsrReading(value=0x00DA040000000004)
        assert p.cpuid_bit(1, 2, 5) is True  # CPUID.01H:ECX[5] VMX
    # CPUs that read alike share one msr dict (read-only after read_host()).
    assert scan.cpus[0].msr is scan.cpus[3].msr


def test_the_hypervisor_leaf_is_read_only_under_a_hypervisor():
    bare = read_host(FixtureHost(fixture.parse(hostgen.synthetic(2, 1))))
    assert 0x40000000 not in bare.cpus[0].cpuid  # CPUID.01H:ECX[31] clear
    guest = read_host(FixtureHost(fixture.load("kvm-nested-guest")))
    assert guest.cpus[0].cpuid[0x40000000].ok


@pytest.mark.parametrize("loaded", [True, False])
def test_kvm_intel_parameters_only_when_the_module_is_loaded(tmp_path, loaded):
    root = tmp_path / "root"
    hostgen.write_tree(hostgen.synthetic(2, 1), str(root))
    if loaded:
        params = root / "sys/module/kvm_intel/parameters"
        params.mkdir(parents=True)
        (params / "nested").write_text("Y\n")
        (params / "ept").write_text("N\n")
        (params / "enable_apicv").write_text("Y\n")  # not one the check depends on
    scan = read_host(LiveHost(str(root)))
    assert scan.kvm_params == ({"nested": "Y", "ept": "N"} if loaded else {})


# --- /proc/cpuinfo ----------------------------------------------------------------------

CPUINFO = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)\n"
    "flags\t\t: fpu vmx lm\nvmx flags\t: vnmi preemption_timer ept\nbugs\t\t: spectre_v1 mds\n\n"
    "processor\t: 1\nvendor_id\t: GenuineIntel\nflags\t\t: fpu lm\nbugs\t\t:\n\n"
    "processor\t: 2\nvendor_id\t: GenuineIntel\n"  # cut before its flags line
)


def test_cpuinfo_blocks_by_processor_with_flag_sets():
    info = parse_cpuinfo(CPUINFO)
    assert sorted(info) == [0, 1]  # a block without flags says nothing: dropped
    assert info[0]["flags"] == frozenset({"fpu", "vmx", "lm"})
    assert info[0]["vmx flags"] == frozenset({"vnmi", "preemption_timer", "ept"})
    assert info[0]["bugs"] == frozenset({"spectre_v1", "mds"})
    assert info[0]["model name"] == "Intel(R) Xeon(R)"


def test_cpuinfo_remembers_whether_the_vmx_flags_line_was_there():
    # show_cpuinfo() prints "vmx flags" only when VMX capability word 0 is non-zero.
    info = parse_cpuinfo(CPUINFO)
    assert info[0]["vmx flags line"] is True
    assert info[1]["vmx flags line"] is False and info[1]["vmx flags"] == frozenset()


@pytest.mark.parametrize("text", [None, "", "processor\t: \u00b2\nflags\t\t: fpu\n"])
def test_cpuinfo_without_a_usable_block_is_empty(text):
    assert parse_cpuinfo(text) == {}


def test_a_processor_number_no_kernel_prints_is_skipped():
    text = (
        "processor\t: 0\nflags\t\t: vmx\n\n"
        f"processor\t: {'9' * 5000}\nflags\t\t: vmx\n\n"
        "processor\t: ²\nflags\t\t: vmx\n\n"
        "processor\t: 1\nflags\t\t: vmx\n"
    )
    assert sorted(parse_cpuinfo(text)) == [0, 1]


def test_lines_end_at_line_feeds_only():
    # a brand string may hold any byte: a carriage return or \x85 does not end its line
    info = parse_cpuinfo("processor\t: 0\nmodel name\t: Xeon\rfake\x85more\u2028x\nflags\t\t: vmx\n")
    assert info[0]["model name"] == "Xeon\rfake\x85more\u2028x"


# --- AMD: VM_CR, SEV_STATUS and the extended leaves ---------------------------------------

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
