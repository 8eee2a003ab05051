"""The guest kernel itself, as the vmxprobe checks (test_vm_scan.py) rely on it: the
topologies QEMU builds, the msr driver, CPU hotplug and NUMA binding. Both boots are
shared with test_vm_scan.py (conftest.py)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.vm

ZERO = "0x0000000000000000"


def test_two_node_script_ran_to_end(two_node_vm):
    assert two_node_vm.result.returncode == 0, two_node_vm.result.stderr
    assert "end" in two_node_vm.sections


def test_two_nodes_with_right_cpulists(two_node_vm):
    sec = two_node_vm.sections
    assert sec["nodes"].splitlines() == ["node0 0-1 | 10 20", "node1 2-3 | 20 10"]
    assert sec["has_memory"] == "0-1"
    assert sec["cpus"].splitlines() == ["0-3", "0-3"]


def test_tcg_cpu_has_no_vmx(two_node_vm):
    flags = two_node_vm.sections["cpuinfo"].split()
    assert "vmx" not in flags and "hypervisor" in flags


def test_msr_module_loads_and_tcg_reads_zero(two_node_vm):
    sec = two_node_vm.sections
    assert sec["modules_before"].splitlines() == ["msr absent", "cpuid absent"]
    assert sec["modprobe"].splitlines() == ["msr rc 0", "cpuid rc 0"]
    # QEMU TCG answers rdmsr of 0x3a and 0x480 (and any MSR it lacks) with 0, no #GP.
    assert sec["msr"].splitlines() == [f"{cpu} {ZERO} {ZERO}" for cpu in range(4)]


def test_msr_needs_root_and_cap_sys_rawio(two_node_vm):
    sec = two_node_vm.sections
    # Mode 0600 device nodes: EACCES for a user, before the driver is asked.
    assert sec["unpriv"].splitlines() == ["uid 65534", "msr open EACCES", "cpuid open EACCES"]
    # Root without CAP_SYS_RAWIO: msr_open() itself refuses with EPERM.
    assert sec["norawio"].splitlines() == ["uid 0 cap_sys_rawio False", "msr open EPERM"]


def test_offlined_cpu(two_node_vm):
    assert two_node_vm.sections["offline"].splitlines() == [
        "online 0-2",
        "node1 2",
        "devnode False",
        "read ENXIO",
        "online_again 0-3",
        "read_again 8",
    ]


def test_numa_binding_in_guest(two_node_vm):
    assert two_node_vm.sections["numa"].splitlines() == [
        "available True",
        "bind 0 ok 0 [0]",
        "bind 1 ok 1 [1]",
        "bind 63 EINVAL",
    ]


def test_guest_writes_back_to_outdir(two_node_vm):
    # Whether the checkout itself is writable in the guest depends on where it lives
    # (virtme-ng overlays /tmp, not the rest of the host root): only the outdir counts.
    assert two_node_vm.sections["writeback"].splitlines()[0] == "outdir rc 0"
    assert (two_node_vm.outdir / "written-in-guest").read_text() == "from guest\n"


def test_memoryless_script_ran_to_end(memoryless_vm):
    assert memoryless_vm.result.returncode == 0, memoryless_vm.result.stderr
    assert "end" in memoryless_vm.sections


def test_memoryless_node_and_possible_cpus(memoryless_vm):
    sec = memoryless_vm.sections
    node0, node1, node2 = sec["nodes"].splitlines()
    assert node0.startswith("node0 0 | 10 30 20 | ") and int(node0.split()[-1]) > 0
    assert node1 == "node1 1-2 | 30 10 15 | 0"
    assert node2.startswith("node2 3 | 20 15 10 | ") and int(node2.split()[-1]) > 0
    assert sec["node_masks"].splitlines() == [
        "possible 0-2",
        "online 0-2",
        "has_cpu 0-2",
        "has_memory 0,2",
        "has_normal_memory 0,2",
    ]
    assert sec["cpu_masks"].splitlines() == [
        "possible 0-7",
        "present 0-3",
        "online 0-3",
        "offline 4-7",
    ]
    assert sec["cpu_dirs"].split() == ["cpu0", "cpu1", "cpu2", "cpu3"]
    assert sec["msr_devs"].split() == ["0", "1", "2", "3"]
    assert sec["msr"].splitlines() == [f"{cpu} {ZERO} {ZERO}" for cpu in range(4)]


def test_memoryless_node_cannot_be_bound(memoryless_vm):
    assert memoryless_vm.sections["numa"].splitlines() == [
        "available True",
        "bind 0 ok 0 [0]",
        "bind 1 EINVAL",  # no memory: not in N_MEMORY, so MPOL_BIND refuses it
        "bind 63 EINVAL",
    ]
