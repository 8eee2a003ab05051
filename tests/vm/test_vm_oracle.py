"""The kernel as the oracle: in every VM topology, vmxprobe's node for each possible CPU
must be the kernel's cpu_to_node(), and the plan's serving node must be the node whose
memory the kernel's page allocator really gave (page_to_nid()) for
__alloc_pages_node(cpu_to_node(cpu), GFP_KERNEL | __GFP_ZERO, 0), the call
x86_vmx_init() makes. tests/oracle/root_vmcs_oracle.ko asks the kernel; vmxprobe is
asked only through its CLI's JSON report (`vmxprobe scan --format json`).

The boots are shared with test_vm_scan.py and test_vm_smoke.py (conftest.py); the
guests' scripts are in guest.py.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import REPO_ROOT  # noqa: E402

pytestmark = pytest.mark.vm

ACPI_DATA = Path(REPO_ROOT) / "tests" / "data" / "acpi"

# case: (boot fixture, vmxprobe report, oracle answer, what the topology is)
CASES = {
    "two-nodes": ("two_node_vm", "live-json", "oracle-live", "two nodes of two CPUs, all present"),
    "cpu-offlined": (
        "two_node_vm",
        "offline-json",
        "oracle-offline",
        "two nodes, CPU 3 offlined through sysfs before the scan",
    ),
    "memoryless-absent-in-srat": (
        "memoryless_vm",
        "live-json",
        "oracle-live",
        "a memoryless node served by node 2; CPUs 4-7 absent, on SRAT nodes that differ from the round-robin",
    ),
    "four-nodes-absent-default": (
        "four_node_vm",
        "live-json",
        "oracle-live",
        "a CPU-less memory node, a memoryless node, a "
        "ZONE_MOVABLE-only node, asymmetric distances; CPUs "
        "3-4 absent on QEMU's default SRAT node",
    ),
    "no-numa-absent": ("no_numa_vm", "live-json", "oracle-live", "no SRAT at all; CPUs 2-3 absent"),
}

# Tables recorded once from these boots (tests/data/acpi/README.md): boot fixture -> name.
RECORDED = {
    "memoryless_vm": "memoryless-absent-assigned",
    "four_node_vm": "four-node-absent-default",
    "no_numa_vm": "no-numa-absent",
}


def parse_cpulist(text: str) -> list[int]:
    """The kernel's cpulist format ("0-2,5"); written here so that these tests do not
    lean on vmxprobe's own parser."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        assert m, f"not a cpulist: {text!r}"
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        cpus += range(lo, hi + 1)
    return cpus


def kernel_answer(vm, name: str) -> dict[int, tuple[int, int]]:
    """/proc/root_vmcs_oracle: {cpu: (cpu_to_node(cpu), page_to_nid(page))}."""
    assert vm.rc(name) == 0, f"insmod failed: {vm.err(name)}"
    assert vm.err(name) == "", vm.err(name)
    out = {}
    for line in vm.out(name).splitlines():
        fields = line.split()
        assert len(fields) == 3 and all(f.lstrip("-").isdigit() for f in fields), line
        cpu, node, nid = map(int, fields)
        assert cpu not in out, f"CPU {cpu} twice"
        out[cpu] = (node, nid)
    assert out, "the oracle printed nothing"
    return out


def vmxprobe_answer(vm, name: str):
    """From the JSON report: ({cpu: (node, node_source)}, {cpu: serving node}, possible)."""
    report = vm.json(name)
    per_cpu = {e["cpu"]: (e["node"], e["node_source"]) for e in report["per_cpu"]}
    serving: dict[int, int] = {}
    for n in report["plan"]["nodes"]:
        for cpu in parse_cpulist(n["cpus"]):
            assert cpu not in serving, f"CPU {cpu} planned on two nodes"
            serving[cpu] = n["serving_node"]
    return per_cpu, serving, parse_cpulist(report["cpus"]["possible"])


@pytest.fixture(params=sorted(CASES))
def case(request):
    fixture, report, oracle_run, what = CASES[request.param]
    vm = request.getfixturevalue(fixture)
    return vm, report, oracle_run, what


def test_oracle_loads_cleanly_and_answers_for_every_possible_cpu(case):
    vm, report, oracle_run, _ = case
    kernel = kernel_answer(vm, oracle_run)
    _, _, possible = vmxprobe_answer(vm, report)
    assert sorted(kernel) == possible
    log = (vm.outdir / f"{oracle_run}.dmesg").read_text()
    for bad in ("WARNING:", "BUG:", "Call Trace", "Oops", "root_vmcs_oracle: no page", "not a node"):
        assert bad not in log, log


def test_vmxprobe_node_is_the_kernels_cpu_to_node(case):
    vm, report, oracle_run, what = case
    kernel = kernel_answer(vm, oracle_run)
    per_cpu, _, _ = vmxprobe_answer(vm, report)
    wrong = {
        cpu: (per_cpu.get(cpu, (None,))[0], node)
        for cpu, (node, _) in kernel.items()
        if per_cpu.get(cpu, (None,))[0] != node
    }
    assert not wrong, f"{what}: CPU: (vmxprobe node, kernel cpu_to_node) {wrong}"


def test_serving_node_is_where_the_kernel_allocated(case):
    vm, report, oracle_run, what = case
    kernel = kernel_answer(vm, oracle_run)
    _, serving, _ = vmxprobe_answer(vm, report)
    wrong = {cpu: (serving.get(cpu), nid) for cpu, (_, nid) in kernel.items() if serving.get(cpu) != nid}
    assert not wrong, f"{what}: CPU: (plan serving node, kernel page_to_nid) {wrong}"


def test_node_source_says_round_robin_exactly_for_absent_cpus(case):
    """Debian's 6.1 places a possible but absent CPU round-robin (numa_init_array()),
    never from the SRAT: the report must say so, and only for those CPUs."""
    vm, report, _, _ = case
    doc = vm.json(report)
    present = set(parse_cpulist(doc["cpus"]["present"]))
    for e in doc["per_cpu"]:
        want = "link" if e["cpu"] in present else "round-robin"
        assert e["node_source"] == want, e


# --- the topologies are what the tests claim --------------------------------------------


def test_four_nodes_topology_is_as_designed(four_node_vm):
    vm = four_node_vm
    assert vm.result.returncode == 0, vm.result.stderr
    sec = vm.sections
    assert "end" in sec
    masks = dict(line.split(" ", 1) for line in sec["node_masks"].splitlines())
    # Linux node 3 is QEMU's CPU-less node 1; node 1 has CPUs and no memory; node 2's
    # memory is all ZONE_MOVABLE: memory, but no normal memory.
    assert masks == {
        "possible": "0-3",
        "online": "0-3",
        "has_cpu": "0-2",
        "has_memory": "0,2-3",
        "has_normal_memory": "0,3",
    }
    assert sorted(sec["zones"].split("\n")) == ["node0 DMA", "node0 DMA32", "node2 Movable", "node3 DMA32"]
    cpus = dict(line.split(" ", 1) for line in sec["cpu_masks"].splitlines())
    assert cpus == {"possible": "0-4", "present": "0-2", "online": "0-2"}
    rows = {}
    for line in sec["nodes"].splitlines():
        name, cpulist, _, dist = line.split(" ", 3)
        rows[int(name[4:])] = (cpulist, [int(d) for d in dist.split()])
    assert rows[3][0] == ""  # CPU-less
    # Asymmetric: node 1's nearest memory by its own row is node 2 (then 3, then 0),
    # while by the column node 0 is nearest to it.
    assert rows[1][1] == [40, 10, 15, 30]
    assert [rows[n][1][1] for n in (0, 2, 3)] == [15, 45, 40]


def test_four_nodes_pages_come_from_neither_node_0_nor_the_nearest(four_node_vm):
    """What makes the four-node boot hard, as the kernel answers it: the memoryless
    node 1 and the movable-only node 2 get their pages from node 3, which is neither
    node 0 nor node 1's nearest memory node (node 2, whose memory GFP_KERNEL may not
    use); absent CPU 4 sits round-robin on node 2 although the SRAT says node 0."""
    assert kernel_answer(four_node_vm, "oracle-live") == {
        0: (0, 0),
        1: (1, 3),
        2: (2, 3),
        3: (0, 0),
        4: (2, 3),
    }


def test_no_numa_topology_is_as_designed(no_numa_vm):
    vm = no_numa_vm
    assert vm.result.returncode == 0, vm.result.stderr
    masks = dict(line.split(" ", 1) for line in vm.sections["node_masks"].splitlines())
    assert masks["possible"] == masks["has_memory"] == "0"
    cpus = dict(line.split(" ", 1) for line in vm.sections["cpu_masks"].splitlines())
    assert cpus == {"possible": "0-3", "present": "0-1", "online": "0-1"}
    assert not (vm.outdir / "acpi-SRAT.bin").exists()


def test_cpu3_was_offline_when_the_oracle_ran(two_node_vm):
    doc = two_node_vm.json("offline-json")
    assert doc["cpus"]["online"] == "0-2"
    assert kernel_answer(two_node_vm, "oracle-offline")[3] == (1, 1)


# --- the recorded tables (tests/data/acpi) are this QEMU's ----------------------------------


@pytest.mark.parametrize("fixture", sorted(RECORDED))
def test_recorded_tables_and_answers_are_what_the_guest_has(request, fixture):
    """tests/data/acpi holds these guests' tables and the kernel's answer with them; if
    QEMU or the kernel changes what they say, this fails: record them again as
    tests/data/acpi/README.md describes."""
    vm = request.getfixturevalue(fixture)
    name = RECORDED[fixture]
    for table in ("APIC", "SRAT", "FACP"):
        recorded = ACPI_DATA / f"{name}-{table}.bin"
        dumped = vm.outdir / f"acpi-{table}.bin"
        assert recorded.exists() == dumped.exists(), (table, recorded, dumped)
        if recorded.exists():
            assert dumped.read_bytes() == recorded.read_bytes(), (
                f"{table} differs from {recorded}: re-record (tests/data/acpi/README.md)"
            )
    assert vm.out("oracle-live") == (ACPI_DATA / f"{name}-oracle.txt").read_text()
    assert (vm.outdir / "has_memory.txt").read_text() == (ACPI_DATA / f"{name}-has_memory.txt").read_text()
