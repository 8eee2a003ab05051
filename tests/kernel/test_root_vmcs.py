"""vmxprobe.kernel.root_vmcs: the plan of arch/x86/virt/hw.c x86_vmx_init() (and, before
7.1, of kvm_intel's alloc_kvm_area()): one page per possible CPU (for_each_possible_cpu),
on cpu_to_node(cpu)."""

import json
import os
import subprocess
import sys

from tests import REPO, hostgen
from tests.scanning import run
from vmxprobe.host import fixture
from vmxprobe.host.sources import FixtureHost
from vmxprobe.host.topology import read_topology
from vmxprobe.kernel.numa import cpu_to_node
from vmxprobe.kernel.root_vmcs import build_plan


def plan_of(doc, revision=0x12):
    fx = fixture.parse(doc)
    topo = read_topology(FixtureHost(fx))
    return build_plan(topo, cpu_to_node(topo), revision)


def test_one_page_per_possible_cpu_not_per_online_one():
    plan = plan_of(hostgen.synthetic(4, 2, possible=list(range(8))))
    assert [p.cpu for p in plan.pages] == list(range(8))
    assert [p.online for p in plan.pages] == [True] * 4 + [False] * 4
    assert plan.header == 0x12 and not plan.lower_bound


def test_bit_31_of_the_revision_id_is_never_stamped():
    # struct vmcs_hdr { u32 revision_id:31; u32 shadow_vmcs:1; } (arch/x86/include/asm/vmx.h)
    assert plan_of(hostgen.synthetic(1, 1), revision=0x80000012).header == 0x12


def test_without_cpu_possible_the_plan_is_a_lower_bound(tmp_path):
    """A partial tree without cpu/possible: the CPUs seen are a lower bound of
    cpu_possible_mask, so the plan says "at least", in text and JSON."""
    doc = hostgen.synthetic(4, 1)
    del doc["files"]["sys/devices/system/cpu/possible"]
    plan = plan_of(doc)
    assert plan.lower_bound and len(plan.pages) == 4
    root = tmp_path / "root"
    hostgen.write_tree(doc, str(root))
    env = {**os.environ, "PYTHONPATH": REPO}

    def scan(*fmt):
        return subprocess.run(
            [sys.executable, "-m", "vmxprobe", "scan", "--root", str(root), *fmt],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
        )

    text = scan().stdout
    assert "root VMCS page(s)" in text.splitlines()[0] and "at least 4" in text.splitlines()[0]
    assert "Plan:   at least 4 root VMCS page(s)" in text
    assert "/sys/devices/system/cpu/possible was not read" in text
    report = json.loads(scan("--format", "json").stdout)
    assert report["plan"]["pages"] == 4 and report["plan"]["pages_lower_bound"] is True


def test_with_cpu_possible_the_count_is_exact():
    fx = fixture.parse(hostgen.synthetic(4, 1))
    report, _ = run(FixtureHost(fx), fx)
    assert report["plan"]["pages_lower_bound"] is False
