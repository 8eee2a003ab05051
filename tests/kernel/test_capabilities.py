"""The capability MSRs on every CPU: what is read, how CPUs are compared the way
kvm_intel's vmx_check_processor_compat() compares them, faults, the kernel's "vmx flags",
the TDX SEAMRET bit and synthetic VMX.  Hosts carry published registers
(tests/published.py, sources cited there) changed one register at a time."""

import json
from importlib import resources

import jsonschema
import pytest

from tests import cli_runner, published
from tests.published import setreg
from tests.scanning import run
from vmxprobe import pipeline
from vmxprobe.cli import cli
from vmxprobe.host import fixture
from vmxprobe.host.sources import CpuidReading, FixtureHost
from vmxprobe.kernel import feat_ctl
from vmxprobe.render.caps import render_text as render_caps_text
from vmxprobe.render.report import build

SCHEMA = json.loads((resources.files("vmxprobe.schema") / "report-v1.json").read_text())


def scan(fx):
    return run(FixtureHost(fx), fx)


def reasons(report):
    return "\n".join(report["verdict"]["reasons"])


# --- the consistency check --------------------------------------------------------------


def test_ready_host_with_every_capability_compared():
    report, v = scan(published.host("skylake-u"))
    assert v.ready
    c = report["capabilities"]
    assert c["state"] == "read" and c["cpus_read"] == "0-3" and c["differences"] == []
    assert "the same vmcs_config (as setup_vmcs_config() builds it from each CPU's registers)" in reasons(
        report
    )
    jsonschema.validate(report, SCHEMA)


def test_one_cpu_with_different_secondary_controls_is_named_with_its_bit(fixture_file):
    fx = published.host("skylake-u", 8)
    sec = published.PUBLISHED["skylake-u"]["msrs"][0x48B]
    setreg(fx, 0x48B, 5, sec & ~(1 << 49))  # CPU 5 cannot enable PML
    report, v = scan(fx)
    assert v.x86_vmx_init == "ok" and v.kvm_intel == "EIO" and not v.ready
    refusals = [r for r in report["verdict"]["reasons"] if "Inconsistent VMCS config" in r]
    assert len(refusals) == 1
    # vmx_check_processor_compat() (arch/x86/kvm/vmx/vmx.c) memcmp()s vmcs_config: the
    # refusal names the field and KVM's control, and the register it came from.
    assert refusals[0].startswith(
        "CPU 5: vmcs_config differs from CPU 0's: cpu_based_2nd_exec_ctrl "
        "SECONDARY_EXEC_ENABLE_PML (bit 17): CPU 0 1, CPU 5 0 "
        "(IA32_VMX_PROCBASED_CTLS2 (0x48b) = 0x001dfcff00000000 on CPU 5"
    )
    assert "Inconsistent VMCS config on CPU 5" in refusals[0]
    assert not any(f"CPU {c}" in r for r in report["verdict"]["reasons"] for c in (1, 2, 3, 4, 6, 7))
    diffs = report["capabilities"]["differences"]
    assert [(d["index"], [c["cpu"] for c in d["cpus"]]) for d in diffs] == [("0x48b", [5])]
    assert [b["bit"] for b in diffs[0]["cpus"][0]["bits"]] == [49]
    jsonschema.validate(report, SCHEMA)
    # The same host as a fixture file, through the command line: exit code 1.
    path = fixture_file(fixture.from_fixture(fx))
    r = cli_runner().invoke(cli, ["scan", "--fixture", path])
    assert r.exit_code == 1
    assert "IA32_VMX_PROCBASED_CTLS2 (0x48b) = 0x001dfcff00000000 on CPU 5" in r.stdout
    r = cli_runner().invoke(cli, ["caps", "--fixture", path])
    assert r.exit_code == 1
    assert "CPU 5 = 0x001dfcff00000000: kvm_intel refuses" in r.stdout
    assert "bit 49 allowed-1 of enable_pml: CPU 0 1, CPU 5 0" in r.stdout
    r = cli_runner().invoke(cli, ["caps", "--fixture", path, "--format", "json"])
    doc = json.loads(r.stdout)
    assert doc["capabilities"]["differences"][0]["cpus"][0]["kvm_refuses"] is True
    jsonschema.validate(doc["capabilities"], SCHEMA["properties"]["capabilities"])


def test_a_cpu_without_ept_fails_setup_and_names_the_bit():
    # Clearing EPT's allowed-1 bit while IA32_VMX_EPT_VPID_CAP still reports EPT trips
    # setup_vmcs_config()'s own consistency check on that CPU before the memcmp().
    fx = published.host("skylake-u")
    setreg(fx, 0x48B, 2, published.PUBLISHED["skylake-u"]["msrs"][0x48B] & ~(1 << 33))
    report, v = scan(fx)
    assert v.kvm_intel == "EIO"
    r = reasons(report)
    assert "CPU 2: setup_vmcs_config() fails: IA32_VMX_EPT_VPID_CAP (0x48c) reports EPT" in r
    assert "Failed to setup VMCS config on CPU 2" in r and "bit 33 (allowed-1 of enable_ept)" in r


def test_true_msr_differences_are_reported_not_refused():
    fx = published.host("skylake-u")
    setreg(fx, 0x48E, 3, published.PUBLISHED["skylake-u"]["msrs"][0x48E] | (1 << 15))
    report, v = scan(fx)
    assert v.ready
    r = reasons(report)
    assert "CPU(s) 3: IA32_VMX_TRUE_PROCBASED_CTLS (0x48e) differs" in r
    assert "KVM reads only the plain control MSRs" in r and "not refused" in r


@pytest.mark.parametrize("nested,refused", [(None, True), ("Y", True), ("N", False)])
def test_cr4_fixed1_compared_only_with_nested(nested, refused):
    fx = published.host("skylake-u")
    if nested is not None:
        fx.files["sys/module/kvm_intel/parameters/nested"] = nested + "\n"
    setreg(fx, 0x489, 2, published.PUBLISHED["skylake-u"]["msrs"][0x489] & ~(1 << 20))  # SMEP
    report, v = scan(fx)
    assert (v.kvm_intel == "EIO") is refused
    assert report["capabilities"]["kvm_nested"] is (nested != "N")
    if not refused:
        assert "kvm_intel.nested=N" in reasons(report)


def test_ept_half_of_ept_vpid_cap_is_compared_vpid_half_is_not():
    base = published.PUBLISHED["skylake-u"]["msrs"][0x48C]
    fx = published.host("skylake-u")
    setreg(fx, 0x48C, 1, base & ~(1 << 40))  # INVVPID individual-address
    report, v = scan(fx)
    assert v.ready and "do not reach kvm_intel's vmcs_config" in reasons(report)
    # nested_vmx_setup_secondary_ctls() (arch/x86/kvm/vmx/nested.c) keeps only EPT bits 0,
    # 6, 7, 14 and 20 of the CPU's own; A/D (bit 21) comes from enable_ept_ad_bits, the
    # loading CPU's, the same for every CPU: a difference there is not compared.
    fx = published.host("skylake-u")
    setreg(fx, 0x48C, 1, base & ~(1 << 21))  # EPT A/D
    report, v = scan(fx)
    assert v.ready and "bit(s) 21: the differing bits do not reach kvm_intel's vmcs_config" in reasons(report)
    fx = published.host("skylake-u")
    setreg(fx, 0x48C, 1, base & ~(1 << 0))  # EPT execute-only
    report, v = scan(fx)
    assert v.kvm_intel == "EIO"
    assert "nested_ept_caps (from 0x48c) 0x104041 on CPU 0, 0x104040 on CPU 1, bit(s) 0" in reasons(report)


def test_a_fault_where_an_msr_exists_is_reported():
    fx = published.host("skylake-u")
    setreg(fx, 0x491, 0, errno="EIO")
    setreg(fx, 0x491, 1, errno="EIO")
    report, v = scan(fx)
    f = report["capabilities"]["faults"]
    assert [(x["index"], x["cpus"]) for x in f] == [("0x491", "0-1")]
    assert "IA32_VMX_PROCBASED_CTLS2 bit 45 (A.11)" in f[0]["why"]
    assert "CPU(s) 0-1: IA32_VMX_VMFUNC (0x491) faults (EIO)" in reasons(report)
    assert v.ready  # KVM does not read IA32_VMX_VMFUNC


def test_boot_cpu_missing_a_control_kvm_requires():
    fx = published.host("skylake-u")
    proc = published.PUBLISHED["skylake-u"]["msrs"][0x482] & ~(1 << (32 + 7))
    for cpu in range(4):
        setreg(fx, 0x482, cpu, proc)
    report, v = scan(fx)
    assert v.kvm_intel == "EIO"
    assert (
        "CPU 0: setup_vmcs_config() fails: IA32_VMX_PROCBASED_CTLS (0x482) cannot set "
        "control(s) KVM requires: bit 7 CPU_BASED_HLT_EXITING" in reasons(report)
    )


def test_faulting_control_msr_reads_as_zero_for_kvm():
    fx = published.host("skylake-u")
    for cpu in range(4):
        setreg(fx, 0x484, cpu, errno="EIO")
    report, v = scan(fx)
    assert v.kvm_intel == "EIO"
    assert "IA32_VMX_ENTRY_CTLS (0x484) cannot set control(s) KVM requires" in reasons(report)


def test_inconsistent_entry_exit_pair():
    fx = published.host("skylake-u")
    exit_ = published.PUBLISHED["skylake-u"]["msrs"][0x483] & ~(1 << (32 + 21))  # no EFER load on exit
    for cpu in range(4):
        setreg(fx, 0x483, cpu, exit_)
    report, v = scan(fx)
    assert v.kvm_intel == "EIO" and "Inconsistent VM-Entry/VM-Exit pair" in reasons(report)


def test_pair_check_off_with_error_on_inconsistent_vmcs_config_n():
    fx = published.host("skylake-u")
    fx.files["sys/module/kvm_intel/parameters/error_on_inconsistent_vmcs_config"] = "N\n"
    exit_ = published.PUBLISHED["skylake-u"]["msrs"][0x483] & ~(1 << (32 + 21))
    for cpu in range(4):
        setreg(fx, 0x483, cpu, exit_)
    report, v = scan(fx)
    # Not a refusal: setup_vmcs_config() warns once and drops both controls of the pair.
    assert v.ready
    warned = 'CPU 0: setup_vmcs_config() warns "Inconsistent VM-Entry/VM-Exit pair, entry = 8000, exit = 0"'
    assert warned in reasons(report)


def test_not_recorded_capabilities_keep_the_old_verdict():
    report, v = scan(fixture.load("intel-2s-ready"))
    assert v.ready
    assert report["capabilities"]["state"] == "not_read"
    assert "checked on IA32_VMX_BASIC only" in reasons(report)
    assert report["per_cpu"][5]["msr"] == {"0x3a": "0x0000000000000005", "0x480": "0x00da040000000012"}


# --- the kernel's view ------------------------------------------------------------------


def with_vmx_flags(fx, per_cpu):
    blocks = fx.files["proc/cpuinfo"].strip("\n").split("\n\n")
    fx.files["proc/cpuinfo"] = (
        "\n\n".join(
            b
            + ("vmx flags\t: {}\n".format(" ".join(sorted(per_cpu[i]))) if per_cpu.get(i) is not None else "")
            if b.endswith("\n")
            else b
            + "\n"
            + ("vmx flags\t: {}".format(" ".join(sorted(per_cpu[i]))) if per_cpu.get(i) is not None else "")
            for i, b in enumerate(blocks)
        )
        + "\n"
    )


def test_vmx_flags_matching_the_registers_say_nothing():
    fx = published.host("skylake-u")
    implied = feat_ctl.implied_vmx_flags(published.PUBLISHED["skylake-u"]["msrs"])
    assert {"ept", "vpid", "ept_ad", "flexpriority", "unrestricted_guest", "pml"} <= implied
    with_vmx_flags(fx, {i: implied for i in range(4)})
    report, v = scan(fx)
    assert report["capabilities"]["kernel_view"] == []


def test_vmx_flags_differences_are_explained_per_cpu_group():
    fx = published.host("skylake-u")
    implied = feat_ctl.implied_vmx_flags(published.PUBLISHED["skylake-u"]["msrs"])
    with_vmx_flags(
        fx, {0: implied, 1: implied - {"ept_ad"}, 2: implied | {"ipi_virt", "frobnicate"}, 3: implied}
    )
    report, v = scan(fx)
    kv = report["capabilities"]["kernel_view"]
    assert [(k["cpus"], k["missing"], k["extra"]) for k in kv] == [
        ("1", ["ept_ad"], []),
        ("2", [], ["frobnicate", "ipi_virt"]),
    ]
    r = reasons(report)
    assert '"vmx flags" in /proc/cpuinfo on CPU(s) 1 disagree with the registers (-ept_ad)' in r
    assert "predates these names" in r
    assert "changed after boot" in r and "does not decode (frobnicate)" in r


def test_no_vmx_flags_line_on_a_new_kernel():
    report, v = scan(published.host("skylake-u"))  # synthetic cpuinfo, kernel 6.12
    kv = report["capabilities"]["kernel_view"]
    assert len(kv) == 1 and kv[0]["cpus"] == "0-3"
    assert "was not written by that kernel" in kv[0]["why"][0]


# --- TDX SEAMRET erratum ----------------------------------------------------------------


@pytest.mark.parametrize("bit60", [False, True])
def test_seamret_erratum_on_a_tdx_host(bit60):
    fx = published.host("raptor-lake-s")
    basic = published.PUBLISHED["raptor-lake-s"]["msrs"][0x480] | ((1 << 60) if bit60 else 0)
    for cpu in range(4):
        setreg(fx, 0x480, cpu, basic)
    fx.files["proc/cpuinfo"] = fx.files["proc/cpuinfo"].replace(" vmx", " vmx tdx_host_platform")
    report, v = scan(fx)
    s = report["capabilities"]["seamret"]
    assert s["bit60"] is bit60 and s["tdx_host_platform"] is True
    r = reasons(report)
    if bit60:
        assert s["kernel_bug"] is None and "keeps the current VMCS" in r
    else:
        assert s["kernel_bug"] == "X86_BUG_SEAMRET_INVD_VMCS"
        assert "clears the current VMCS" in r and "predates the erratum handling" in r


def test_seamret_not_mentioned_in_reasons_without_tdx():
    report, v = scan(published.host("skylake-u"))
    assert report["capabilities"]["seamret"]["bit60"] is False
    assert "SEAMRET" not in reasons(report)


# --- synthetic VMX ----------------------------------------------------------------------

HYPERV_SIG = (0x4000000B, 0x7263694D, 0x666F736F, 0x76482074)  # "Microsoft Hv"


def hyperv_guest(hint_eax, nested_eax):
    fx = published.host("skylake-u", 2)
    for cpu in range(2):
        eax, ebx, ecx, edx = fx.cpuid[(1, 0)][cpu].value
        fx.cpuid[(1, 0)][cpu] = CpuidReading(value=(eax, ebx, ecx | 1 << 31, edx))
    fx.cpuid[(0x40000000, 0)] = {c: CpuidReading(value=HYPERV_SIG) for c in range(2)}
    fx.cpuid[(0x40000004, 0)] = {c: CpuidReading(value=(hint_eax, 0, 0, 0)) for c in range(2)}
    fx.cpuid[(0x4000000A, 0)] = {c: CpuidReading(value=(nested_eax, 0, 0, 0)) for c in range(2)}
    return fx


def test_hyperv_guest_with_enlightened_vmcs():
    report, v = scan(hyperv_guest(1 << 14, 0x0101))
    syn = report["capabilities"]["synthetic"]
    assert syn["by"] == "Hyper-V" and syn["evmcs"] == {
        "recommended": True,
        "version_low": 1,
        "version_high": 1,
        "kvm_uses_evmcs": True,
    }
    assert report["host"]["hypervisor"] == "Hyper-V" and v.emulated == "Hyper-V"
    r = reasons(report)
    assert "uses eVMCS v1" in r and "KVM_EVMCS_VERSION" in r
    jsonschema.validate(report, SCHEMA)


def test_hyperv_guest_without_enlightened_vmcs():
    report, v = scan(hyperv_guest(0, 0))
    assert report["capabilities"]["synthetic"]["evmcs"]["kvm_uses_evmcs"] is False
    assert "Hyper-V recommends" not in reasons(report)


def test_kvm_revision_recognised_even_with_hidden_hypervisor_bit():
    fx = published.host("skylake-u", 2)
    for cpu in range(2):
        setreg(fx, 0x480, cpu, 0x00D8100011E57ED0)
    report, v = scan(fx)
    assert v.emulated == "KVM nested VMX"
    assert report["capabilities"]["synthetic"]["by"] == "KVM"
    assert "hides the hypervisor" in reasons(report)


def test_bundled_kvm_nested_guest_says_capabilities_were_not_recorded():
    report, v = scan(fixture.load("kvm-nested-guest"))
    assert report["capabilities"]["state"] == "not_read"
    assert report["capabilities"]["synthetic"]["by"] == "KVM"
    assert "not read on CPU 0 (UNRECORDED" in reasons(report)


# --- every bundled fixture --------------------------------------------------------------


@pytest.mark.parametrize("name", fixture.bundled_names())
def test_capabilities_section_of_every_bundled_fixture_is_valid(name):
    fx = fixture.load(name)
    result = pipeline.run(FixtureHost(fx), fx)
    section = build(result)["capabilities"]
    jsonschema.validate(section, SCHEMA["properties"]["capabilities"])
    if any(0x481 in fx.msr and r.ok for r in fx.msr.get(0x481, {}).values()):
        assert section["state"] == "read"
    assert render_caps_text(result.verdict.capabilities).endswith("\n")
