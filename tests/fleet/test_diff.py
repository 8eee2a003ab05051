"""`vmxprobe fleet diff` (vmxprobe.fleet.diff)."""

import json

from tests.fleet.reports import invoke, live, report, write
from vmxprobe.fleet import diff as fleet_diff

# --- diff --------------------------------------------------------------------------------


def diff(tmp_path, old, new, *args):
    a = write(tmp_path, "old.json", old)
    b = write(tmp_path, "new.json", new)
    return invoke("fleet", "diff", *args, a, b)


def test_diff_unchanged(tmp_path):
    r = diff(tmp_path, live(when=1.79e9), live(when=1.79e9 + 86400))
    assert r.exit_code == 0
    assert "UNCHANGED: READY" in r.stdout
    assert "(1d later)" in r.stdout


def _locked_off(doc):
    doc["feature_control"].update(raw="0x0000000000000001", vmx_outside_smx=False, state="disabled_locked")
    for e in doc["per_cpu"]:
        e["msr"]["0x3a"] = "0x0000000000000001"
    doc["verdict"].update(
        ready=False,
        x86_vmx_init="EOPNOTSUPP",
        kvm_intel="EOPNOTSUPP",
        reasons=["CPU 0: IA32_FEATURE_CONTROL (0x3a) = 0x0000000000000001: locked off"],
    )
    return doc


def test_diff_firmware_locked_vmx_off(tmp_path):
    r = diff(tmp_path, live(), _locked_off(live()))
    assert r.exit_code == 1
    out = r.stdout
    assert "CHANGED: READY -> NOT READY" in out
    assert (
        "firmware now locks VMX off (IA32_FEATURE_CONTROL enabled_locked (0x0000000000000005) -> "
        "disabled_locked (0x0000000000000001)): enable VT-x" in out
    )
    assert "x86_vmx_init(): ok -> -EOPNOTSUPP" in out
    assert "IA32_FEATURE_CONTROL on CPU(s) 0-31: 0x0000000000000005 -> 0x0000000000000001" in out
    assert "reason new: CPU 0: IA32_FEATURE_CONTROL" in out


def test_diff_one_cpu_differs(tmp_path):
    new = live()
    new["per_cpu"][7]["msr"]["0x480"] = "0x00da040000000014"
    r = diff(tmp_path, live(), new)
    assert r.exit_code == 1
    assert "CHANGED, still READY" in r.stdout
    assert "IA32_VMX_BASIC on CPU(s) 7: 0x00da040000000012 -> 0x00da040000000014" in r.stdout


def _revision(doc, rev):
    doc["vmx_basic"].update(revision_id=rev, raw=f"0x00da0400{rev:08x}")
    doc["plan"].update(revision_id=rev, header=f"0x{rev:08x}")
    return doc


def test_diff_revision_after_a_cpu_swap(tmp_path):
    new = _revision(live(host__stepping=4, host__model_name="Intel(R) Xeon(R) CPU v2"), 0x14)
    r = diff(tmp_path, live(), new)
    assert r.exit_code == 1
    assert (
        "the CPU differs: GenuineIntel 6/63/2 (Intel(R) Xeon(R) CPU (composed)) -> "
        "GenuineIntel 6/63/4 (Intel(R) Xeon(R) CPU v2)" in r.stdout
    )
    assert "VMCS revision id: 0x00000012 -> 0x00000014, with the CPU change: a CPU swap" in r.stdout


def test_diff_revision_after_a_microcode_update(tmp_path):
    r = diff(tmp_path, live(), _revision(live(host__kernel="6.13.0"), 0x14))
    assert r.exit_code == 1
    assert (
        "on the same CPU model, with a kernel change (6.12.0-composed -> 6.13.0): a microcode update"
        in r.stdout
    )
    r = diff(tmp_path, live(), _revision(live(), 0x14))
    assert "on the same CPU model: a microcode update can change it" in r.stdout


def test_diff_cpus_and_hypervisor(tmp_path):
    new = live()
    new["cpus"]["online"] = "0-15"
    new["host"]["hypervisor"] = "KVM"
    r = diff(tmp_path, live(), new)
    assert r.exit_code == 1
    assert "online CPUs: 0-31 -> 0-15" in r.stdout
    assert "hypervisor: none (bare metal) -> KVM" in r.stdout


def test_diff_notes_do_not_count_as_changes(tmp_path):
    old = live(when=1.79e9 + 86400)
    new = live(when=1.79e9)
    new["tool"]["version"] = "0.2.0"
    new["verdict"]["reasons"] = ["reworded"] + new["verdict"]["reasons"][1:]
    r = diff(tmp_path, old, new)
    assert r.exit_code == 0
    assert "are the arguments swapped?" in r.stdout
    assert "scanned by different vmxprobe versions: 0.1.0 -> 0.2.0" in r.stdout
    assert "reason new: reworded" in r.stdout
    r = diff(tmp_path, live(), report())
    assert r.exit_code == 0 and "are they the same host?" in r.stdout


def test_diff_json(tmp_path):
    r = diff(tmp_path, live(), _locked_off(live()), "--format", "json")
    assert r.exit_code == 1
    d = json.loads(r.stdout)
    assert d["kind"] == "vmxprobe-fleet-diff" and d["changed"] is True
    assert d["readiness"] == {"old": "ready", "new": "not_ready"}
    whats = [c["what"] for c in d["changes"]]
    assert "feature_control.state" in whats and "verdict.x86_vmx_init" in whats
    fc = next(c for c in d["changes"] if c["what"] == "feature_control.state")
    assert (fc["old"], fc["new"]) == ("enabled_locked", "disabled_locked")


def test_diff_bad_input_is_exit_2(tmp_path):
    good = write(tmp_path, "good.json", live())
    bad = write(tmp_path, "bad.json", "{")
    future = write(tmp_path, "future.json", dict(live(), schema_version=2))
    for args, message in [
        ((good, tmp_path / "missing.json"), "NEW"),
        ((bad, good), "OLD"),
        ((good, future), "schema version 2"),
        ((good, tmp_path), "is a folder"),
        (("-", "-"), "both be stdin"),
    ]:
        r = invoke("fleet", "diff", *args)
        assert r.exit_code == 2, args
        assert message in r.stderr
    assert invoke("fleet", "diff", good).exit_code == 2


def test_diff_from_stdin(tmp_path):
    old = write(tmp_path, "old.json", live())
    r = invoke("fleet", "diff", old, "-", input=json.dumps(_locked_off(live())))
    assert r.exit_code == 1 and "firmware now locks VMX off" in r.stdout


def test_diff_per_cpu_groups_are_capped():
    old, new = live(), live()
    for i, e in enumerate(new["per_cpu"]):
        e["msr"]["0x480"] = f"0x00da0400000000{i + 0x20:02x}"
    changes = fleet_diff.compare(old, new)["changes"]
    per_cpu = [c for c in changes if c["what"].startswith("per_cpu")]
    assert len(per_cpu) == fleet_diff.MAX_CPU_GROUPS + 1
    assert per_cpu[-1]["text"] == f"... and {32 - fleet_diff.MAX_CPU_GROUPS} more per-CPU change(s)"


def test_diff_firmware_disables_svm(tmp_path):
    r = diff(tmp_path, live("amd-host"), live("amd-svm-locked-off"))
    assert r.exit_code == 1
    out = r.stdout
    assert "CHANGED: READY -> NOT READY" in out
    assert (
        "firmware now disables SVM and locks it (VM_CR 0x0000000000000000 -> 0x0000000000000018): "
        'enable SVM (AMD-V, "SVM Mode") in the firmware setup' in out
    )
    assert "x86_svm_init(): ok -> -EOPNOTSUPP" in out and "kvm_amd: ok -> -EOPNOTSUPP" in out
    assert "VM_CR on CPU(s) 0-15: 0x0000000000000000 -> 0x0000000000000018" in out
    assert "svm flag in /proc/cpuinfo on CPU(s) 0-15: set -> clear" in out


def test_diff_against_a_report_from_before_the_amd_verdict_is_unchanged(tmp_path):
    """A report written before the AMD fields existed lacks them: upgrading vmxprobe is
    not a change of the host."""
    old = live("intel-2s-ready", when=1.79e9)
    for key in ("x86_svm_init", "kvm_amd", "virt"):
        del old["verdict"][key]
    del old["svm"]
    r = diff(tmp_path, old, live("intel-2s-ready", when=1.79e9 + 60))
    assert r.exit_code == 0 and "UNCHANGED: READY" in r.stdout
    old = live("amd-host", when=1.79e9)
    for e in old["per_cpu"]:
        del e["msr"]["0xc0010114"], e["msr"]["0xc0010131"], e["cpuid_svm"], e["svm_flag"]
    r = diff(tmp_path, old, live("amd-host", when=1.79e9 + 60))
    assert r.exit_code == 0, r.stdout
