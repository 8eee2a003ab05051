"""A real kernel judges beside vmxprobe: every case boots a 6.1 kernel under Bochs on an
emulated Intel CPU with VMX; vmxprobe scans through the real msr driver, then the kernel
loads kvm_intel and runs a guest. vmxprobe's verdict must be the kernel's outcome.

The boots are shared (conftest.py: once per pytest run, two at a time); each test reads what its
case's guest reported (tests/bochs/bochs_guest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bochs_harness as harness  # noqa: E402

pytestmark = pytest.mark.bochs

REPO = harness.REPO
with open(os.path.join(REPO, "vmxprobe", "schema", "report-v1.json")) as _f:
    SCHEMA = json.load(_f)


def expected_ready(outcome: dict) -> bool:
    """Ready, in the kernel's terms: kvm_intel loaded and a guest ran to HLT."""
    return outcome["kvm_intel"] == "ok" and outcome["kvm_run"]


def feat_ctl_of(case: harness.Case, cpu: int) -> int:
    """What the firmware left in IA32_FEATURE_CONTROL on `cpu` (the kernel does not write
    it once locked, and Bochs' BIOS always locks)."""
    if (
        case.feat_ctl is None
        or (case.feat_ctl_cpus == "bsp" and cpu != 0)
        or (case.feat_ctl_cpus == "ap" and cpu == 0)
    ):
        return 0x5
    return case.feat_ctl


def explain(boot: harness.Boot) -> str:
    scan = boot.report("scan")
    out = boot.kernel_outcome()
    return (
        f"\nvmxprobe: exit {boot.bundle['scan']['rc']}, verdict "
        f"{json.dumps({k: scan['verdict'][k] for k in ('x86_vmx_init', 'kvm_intel', 'ready')})}"
        "\n  reasons:\n    "
        + "\n    ".join(scan["verdict"]["reasons"])
        + f"\nkernel {boot.bundle['release']}: kvm_intel {out['kvm_intel']}, /dev/kvm "
        f"{out['dev_kvm']}, KVM_RUN {boot.bundle['kvm_run']}\n  log:\n    " + "\n    ".join(out["log"])
    )


def test_guest_ran_vmxprobe_through_its_cli(boot):
    b = boot.bundle
    assert b["release"], b
    assert f"vmxprobe.case={boot.case.name}" in b["cmdline"]
    for name in ("scan", "caps"):
        assert b[name]["rc"] in (0, 1), f"vmxprobe {name}: exit {b[name]['rc']}: {b[name]['stderr']}"
        assert b[name]["stderr"] == "", b[name]["stderr"]
    # record's one note: what this host lacks (the fast kernel has no NUMA, so no node
    # directories); never the msr or cpuid devices.
    note = b["record"]["stderr"]
    assert b["record"]["rc"] == 0, note
    assert note == "" or (
        note.startswith("vmxprobe: recorded; absent on this host: /sys/devices/system/node")
        and "/dev/cpu" not in note
        and note.count("\n") == 1
    ), note
    assert b["load_msr"]["result"] == "ok" and b["load_cpuid"]["result"] == "ok"
    report = boot.report("scan")
    jsonschema.validate(report, SCHEMA)
    assert report["source"] == {"kind": "live", "name": "/"}
    assert report["host"]["kernel"] == b["release"]
    assert report["host"]["vendor"] == "GenuineIntel" and report["host"]["hypervisor"] is None


def test_every_cpu_read_and_a_plan_page_per_possible_cpu(boot):
    n = boot.case.cpus
    report = boot.report("scan")
    last = f"0-{n - 1}" if n > 1 else "0"
    assert report["cpus"] == {"possible": last, "present": last, "online": last, "probed": last}
    assert [c["cpu"] for c in report["per_cpu"]] == list(range(n))
    basics = set()
    for c in report["per_cpu"]:
        assert c["probed"] and c["cpuid_vmx"] is True, c
        basics.add(c["msr"]["0x480"])
    assert len(basics) == 1, f"CPUs differ in IA32_VMX_BASIC: {basics}"
    assert report["vmx_basic"]["raw"] in basics
    plan = report["plan"]
    assert plan["pages"] == n and plan["bytes"] == n * 4096
    assert [(p["node"], p["cpus"], p["pages"]) for p in plan["nodes"]] == [(0, last, n)]
    assert plan["revision_id"] == report["vmx_basic"]["revision_id"]
    assert plan["verified"]["ok"] == n and plan["verified"]["bad"] == []


def test_firmware_value_reached_every_cpu(boot):
    """The firmware's IA32_FEATURE_CONTROL, read back through the msr driver on each CPU,
    and the kernel's reaction to it: vmx gone from that CPU's flags, and its message."""
    report = boot.report("scan")
    flags = cpuinfo_flags(boot.bundle["cpuinfo"])
    for c in report["per_cpu"]:
        want = feat_ctl_of(boot.case, c["cpu"])
        assert int(c["msr"]["0x3a"], 16) == want, (c["cpu"], c["msr"]["0x3a"])
        assert ("vmx" in flags[c["cpu"]]) == bool(want & 0x4), (c["cpu"], want)
        assert c["vmx_flag"] == bool(want & 0x4)
    locked_off = [c["cpu"] for c in report["per_cpu"] if not feat_ctl_of(boot.case, c["cpu"]) & 0x4]
    said = any("VMX (outside TXT) disabled by BIOS" in ln for ln in boot.bundle["kmsg"])
    assert said == bool(locked_off), boot.kernel_outcome()["log"]


def test_vmxprobe_verdict_is_the_kernels_outcome(boot):
    """The bar: ready (exit 0) exactly when kvm_intel loaded and KVM_RUN ran the guest to
    HLT; otherwise not ready (exit 1) with the errno kvm_intel's load returned."""
    out = boot.kernel_outcome()
    report = boot.report("scan")
    v = report["verdict"]
    ready = expected_ready(out)
    assert v["determined"] is True
    assert (v["ready"], v["kvm_intel"], boot.bundle["scan"]["rc"]) == (
        ready,
        out["kvm_intel"],
        0 if ready else 1,
    ), explain(boot)


def test_kernel_outcome_is_consistent(boot):
    """The kernel's answer itself holds together: a good load made /dev/kvm, and the guest
    ran (an I/O exit with its byte, then HLT with AX as the code set it)."""
    out = boot.kernel_outcome()
    run = boot.bundle["kvm_run"]
    if out["kvm_intel"] == "ok":
        assert out["dev_kvm"] is True
        assert run["ran"] is True, run
        assert run["exits"] == [
            {"reason": "IO", "port": 0xE9, "out": True, "byte": ord("K")},
            {"reason": "HLT"},
        ]
        assert run["rax"] == 0x1234
    else:
        assert out["dev_kvm"] is False and run["ran"] is False
        assert boot.bundle["load_kvm_intel"]["failed"] == "kvm_intel", boot.bundle["load_kvm_intel"]


def test_lock_is_explained(boot):
    if boot.case.feat_ctl is None:
        pytest.skip("firmware leaves 0x5: nothing locked off")
    reasons = " ".join(boot.report("scan")["verdict"]["reasons"])
    assert f"IA32_FEATURE_CONTROL (0x3a) = 0x{boot.case.feat_ctl:016x}" in reasons, reasons
    assert "locked" in reasons


def test_capability_decode_matches_the_kernels_vmx_flags(boot):
    """capabilities.kernel_view lists every CPU whose "vmx flags" line in /proc/cpuinfo
    disagrees with what vmxprobe decodes from the capability MSRs. On a real kernel the
    only entries allowed are flags 6.1 leaves unnamed (harness.UNNAMED_IN_6_1), and each
    must be checked against the line itself: implied by the registers, absent from it."""
    report = boot.report("scan")
    caps = report["capabilities"]
    assert caps["state"] == "read"
    assert harness.kernel_view_beyond_6_1(report) == [], json.dumps(caps["kernel_view"], indent=1)
    shown = vmx_flags(boot.bundle["cpuinfo"])
    for entry in caps["kernel_view"]:
        for cpu in parse_cpus(entry["cpus"]):
            assert not set(entry["missing"]) & shown[cpu], (cpu, entry)
    flags = vmx_flags(boot.bundle["cpuinfo"])
    locked_off = {c["cpu"] for c in report["per_cpu"] if not feat_ctl_of(boot.case, c["cpu"]) & 0x4}
    for cpu in range(boot.case.cpus):
        # 6.1 prints "vmx flags" only for CPUs that keep X86_FEATURE_VMX (show_cpuinfo()).
        assert (cpu in flags) == (cpu not in locked_off), (cpu, sorted(flags))


def test_caps_command_agrees_with_the_scan(boot):
    caps = boot.report("caps")
    scan = boot.report("scan")
    assert boot.bundle["caps"]["rc"] == boot.bundle["scan"]["rc"]
    basic = next(m for m in caps["capabilities"]["msrs"] if m["index"] == "0x480")
    assert basic["read"] == "ok" and basic["decoded"]["raw"] == scan["vmx_basic"]["raw"]
    assert caps["capabilities"]["differences"] == scan["capabilities"]["differences"]


def test_recording_replays_to_the_same_verdict(boot, tmp_path):
    """`vmxprobe record` in the guest, replayed here: the same verdict as the live scan."""
    path = tmp_path / f"bochs-{boot.case.name}.json"
    path.write_text(boot.bundle["record"]["fixture"])
    p = subprocess.run(
        [sys.executable, "-m", "vmxprobe", "scan", "--fixture", str(path), "--format", "json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    replay = json.loads(p.stdout)
    live = boot.report("scan")
    assert p.returncode == boot.bundle["scan"]["rc"], p.stderr
    keys = ("x86_vmx_init", "kvm_intel", "ready", "determined", "reasons")
    assert {k: replay["verdict"][k] for k in keys} == {k: live["verdict"][k] for k in keys}
    assert replay["per_cpu"] == live["per_cpu"]
    assert replay["plan"]["pages"] == live["plan"]["pages"]


def test_committed_fixture_is_this_boot(boot):
    """fixtures/bochs-<case>.json was recorded by this case: the same registers (every MSR
    and CPUID result) and the same kernel outcome. Bochs and the kernel are deterministic
    here, so a difference means the fixture is stale or the emulator changed."""
    if os.environ.get("VMXPROBE_BOCHS_RECORD") == "1":
        pytest.skip("recording: the fixture was just written from this boot")
    path = harness.fixture_path(boot.case)
    assert os.path.isfile(path), f"{path} missing: record it with VMXPROBE_BOCHS_RECORD=1"
    with open(path) as f:
        committed = json.load(f)
    fresh = boot.fixture
    assert committed["msr"] == fresh["msr"]
    assert committed["cpuid"] == fresh["cpuid"]
    prov = committed["provenance"]
    assert (prov["origin"], prov["emulator"], prov["cpu_model"], prov["cpu_count"]) == (
        "recorded",
        "bochs",
        boot.case.model,
        boot.case.cpus,
    )
    assert prov["kernel_release"] == boot.bundle["release"]
    out = boot.kernel_outcome()
    assert prov["kernel_outcome"] == out


def test_debian_case_runs_debians_own_kernel(bochs_run):
    debian = [b for b in bochs_run["boots"].values() if b.case.kernel == "debian"]
    if not debian:
        pytest.skip("no Debian-kernel case selected")
    want = bochs_run["image"].kernels["debian"].release
    for b in debian:
        assert not b.error, b.describe_failure()
        assert b.bundle["release"] == want


def test_at_least_five_models_and_an_smp_boot():
    assert len({c.model for c in harness.CASES if c.feat_ctl is None}) >= 5
    assert any(c.cpus >= 2 and c.feat_ctl is None for c in harness.CASES)
    assert any(c.kernel == "debian" for c in harness.CASES)


# --- /proc/cpuinfo ------------------------------------------------------------------------------


def _per_cpu(cpuinfo: str, key: str) -> dict[int, str]:
    out = {}
    cpu = None
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        name = name.strip()
        if name == "processor":
            cpu = int(value)
        elif name == key and cpu is not None:
            out[cpu] = value.strip()
    return out


def parse_cpus(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


def cpuinfo_flags(cpuinfo: str) -> dict[int, set[str]]:
    return {cpu: set(v.split()) for cpu, v in _per_cpu(cpuinfo, "flags").items()}


def vmx_flags(cpuinfo: str) -> dict[int, set[str]]:
    return {cpu: set(v.split()) for cpu, v in _per_cpu(cpuinfo, "vmx flags").items()}


def test_the_kernels_own_placement_is_the_plans(boot):
    """Where the image carries the oracle module (Debian's kernel: tests/oracle, built by
    scripts/kernel-oracle.sh), the kernel itself runs arch/x86/virt/hw.c's loop: for every
    possible CPU its cpu_to_node() must be the plan's node, and the node of the page it
    got (page_to_nid()) the plan's serving node (docs/numa-placement.md)."""
    found = boot.bundle.get("oracle")
    if found is None:
        pytest.skip("the oracle module is built for Debian's kernel only")
    assert found["load"]["result"] == "ok", found
    kernel = {int(c): (int(n), int(nid)) for c, n, nid in (line.split() for line in found["lines"])}
    report = boot.report("scan")
    serving = {p["node"]: p["serving_node"] for p in report["plan"]["nodes"]}
    planned = {e["cpu"]: (e["node"], serving[e["node"]]) for e in report["per_cpu"]}
    assert kernel == planned
