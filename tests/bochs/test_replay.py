"""Replay of the fixtures the bochs tier recorded (fixtures/bochs-*.json): every register
in them was read by a real kernel's msr driver on an emulated Intel CPU with VMX, and
provenance.kernel_outcome says what that kernel then did. No emulator needed: these run
everywhere, through vmxprobe's command line, and hold vmxprobe's verdict to the kernel's."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bochs_harness as harness  # noqa: E402

REPO = harness.REPO
FIXTURES = sorted(glob.glob(os.path.join(REPO, "fixtures", "bochs-*.json")))


def load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def scan(path: str) -> tuple[int, dict, str]:
    p = subprocess.run(
        [sys.executable, "-m", "vmxprobe", "scan", "--fixture", path, "--format", "json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    return p.returncode, json.loads(p.stdout), p.stderr


def cpulist_len(text: str) -> int:
    n = 0
    for part in text.strip().split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def test_the_tier_has_recorded_fixtures():
    assert len(FIXTURES) >= 8, FIXTURES


@pytest.mark.parametrize("path", FIXTURES, ids=[os.path.basename(p)[:-5] for p in FIXTURES])
def test_provenance_says_where_it_came_from(path):
    prov = load(path)["provenance"]
    assert prov["origin"] == "recorded"
    assert prov["emulator"] == "bochs" and prov["emulator_version"]
    assert prov["cpu_model"] and prov["cpu_count"] >= 1
    assert prov["kernel_release"] == prov["kernel"]
    out = prov["kernel_outcome"]
    assert set(out) == {"kvm_intel", "dev_kvm", "kvm_run", "log"}
    assert out["kvm_intel"] == "ok" or out["kvm_intel"].startswith("E")
    assert out["dev_kvm"] == (out["kvm_intel"] == "ok")
    assert all(isinstance(line, str) for line in out["log"])


@pytest.mark.parametrize("path", FIXTURES, ids=[os.path.basename(p)[:-5] for p in FIXTURES])
def test_verdict_is_the_kernels_outcome(path):
    """Ready (exit 0) exactly when that kernel loaded kvm_intel and ran a guest to HLT;
    otherwise not ready (exit 1), with the errno kvm_intel's load returned."""
    doc = load(path)
    out = doc["provenance"]["kernel_outcome"]
    ready = out["kvm_intel"] == "ok" and out["kvm_run"]
    rc, report, err = scan(path)
    v = report["verdict"]
    detail = (
        f"\nkernel {doc['provenance']['kernel_release']}: kvm_intel {out['kvm_intel']}, "
        f"KVM_RUN {out['kvm_run']}; log:\n  "
        + "\n  ".join(out["log"])
        + f"\nvmxprobe: exit {rc}, x86_vmx_init {v['x86_vmx_init']}, kvm_intel {v['kvm_intel']}; "
        "reasons:\n  " + "\n  ".join(v["reasons"])
    )
    assert v["determined"] is True, err
    assert (v["ready"], v["kvm_intel"], rc) == (ready, out["kvm_intel"], 0 if ready else 1), detail


@pytest.mark.parametrize("path", FIXTURES, ids=[os.path.basename(p)[:-5] for p in FIXTURES])
def test_every_cpu_and_a_plan_page_per_possible_cpu(path):
    doc = load(path)
    possible = cpulist_len(doc["files"]["sys/devices/system/cpu/possible"])
    assert possible == doc["provenance"]["cpu_count"]
    _, report, _ = scan(path)
    assert report["plan"]["pages"] == possible
    assert [c["cpu"] for c in report["per_cpu"] if c["probed"]] == list(range(possible))
    # Only the flags Linux 6.1 leaves unnamed may differ (harness.UNNAMED_IN_6_1).
    assert harness.kernel_view_beyond_6_1(report) == [], report["capabilities"]["kernel_view"]
