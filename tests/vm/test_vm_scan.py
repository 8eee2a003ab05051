"""vmxprobe inside a real kernel: page placement proved by the kernel, hotplug, the real
msr driver's errors, and a fixture recorded in the guest. The guests' scripts are in
guest.py; both boots are shared with test_vm_smoke.py (conftest.py)."""

from __future__ import annotations

import json
import os
import sys

import jsonschema
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import guest  # noqa: E402
from harness import REPO_ROOT  # noqa: E402

pytestmark = pytest.mark.vm

with open(os.path.join(REPO_ROOT, "vmxprobe", "schema", "report-v1.json")) as _f:
    SCHEMA = json.load(_f)
FIXTURE = os.path.join(REPO_ROOT, "fixtures", f"{guest.FIXTURE_NAME}.json")


def sysfs_nodes(section: str) -> dict[int, tuple[str, list[int]]]:
    """`nodeN CPULIST | DISTANCES ...` lines -> {N: (cpulist, distance row)}."""
    out = {}
    for line in section.splitlines():
        name, cpus, _, rest = line.split(" ", 3)
        out[int(name[4:])] = (cpus, [int(d) for d in rest.split("|")[0].split()])
    return out


def assert_every_page_verified(report: dict, pages: int):
    plan = report["plan"]
    assert plan["placement"] == "bound"
    assert plan["materialized"] is True
    ver = plan["verified"]
    assert (ver["pages"], ver["ok"], ver["bad"]) == (pages, pages, [])
    where = ver["placement"]
    assert where["mode"] == "bound"
    assert where["policy"] == "mbind(MPOL_BIND, MPOL_MF_STRICT)"
    assert where["method"] == "move_pages"
    assert (where["placed"], where["verified_on_node"]) == (pages, pages)
    assert where["mismatches"] == [] and where["mismatches_total"] == 0
    for n in where["nodes"]:
        assert n["placed"] == n["pages"] == n["verified_on_node"], n
        assert n["elsewhere"] == {} and n["unanswered"] == {}, n
    # The same nodes as the plan itself, page for page.
    assert [(n["node"], n["serving_node"], n["pages"]) for n in where["nodes"]] == [
        (n["node"], n["serving_node"], n["pages"]) for n in plan["nodes"]
    ]


def numa_maps(section: str) -> list[tuple[int, int, int, str, list[str]]]:
    rows = []
    for line in section.splitlines():
        cpu, node, serving, policy, *counts = line.split()
        rows.append((int(cpu), int(node), int(serving), policy, counts))
    return rows


# --- two nodes of two CPUs ----------------------------------------------------------------


def test_live_scan_every_page_verified_on_its_node_by_the_kernel(two_node_vm):
    """The bar: `vmxprobe scan --format json` in a two-node guest reports every page on
    the node the plan names, with move_pages(2)'s answer as the evidence."""
    vm = two_node_vm
    report = vm.json("live-json")
    jsonschema.validate(report, SCHEMA)
    assert vm.rc("live-json") == 1 and vm.err("live-json") == ""  # TCG: no VMX
    assert report["source"] == {"kind": "live", "name": "/"}
    nodes = sysfs_nodes(vm.sections["nodes"])
    assert [(n["node"], n["cpus"], n["serving_node"]) for n in report["plan"]["nodes"]] == [
        (node, cpus, node) for node, (cpus, _) in sorted(nodes.items())
    ]
    for entry in report["per_cpu"]:
        assert entry["node"] == (0 if entry["cpu"] < 2 else 1) and entry["node_source"] == "link"
    assert_every_page_verified(report, 4)
    ver = report["plan"]["verified"]
    # No VMX: x86_vmx_init() would not allocate; the plan is materialised all the same,
    # stamped 0 for the unknown revision id, and the report says both.
    assert report["verdict"]["x86_vmx_init"] == "EOPNOTSUPP"
    assert ver["kernel_allocates"] is False
    assert report["plan"]["header"] is None and ver["stamped"] == "0x00000000"
    assert "revision id unknown" in ver["stamp_note"]


def test_numa_maps_show_the_binding_and_the_node(two_node_vm):
    """A second kernel interface: /proc/self/numa_maps of a process holding the pages."""
    rows = numa_maps(two_node_vm.sections["numa_maps"])
    assert [r[0] for r in rows] == [0, 1, 2, 3]
    for cpu, node, serving, policy, counts in rows:
        assert node == serving == (0 if cpu < 2 else 1)
        assert policy == f"bind:{serving}"
        assert counts and all(c.startswith(f"N{serving}=") for c in counts), counts


def test_text_report_says_bound_and_where(two_node_vm):
    text = two_node_vm.out("live-text")
    assert (
        "placement bound: mbind(MPOL_BIND, MPOL_MF_STRICT) to the serving node before "
        "first touch; the kernel (move_pages) puts 4/4 on the planned node" in text
    )
    assert "    node 0: 2/2 page(s) on node 0\n    node 1: 2/2 page(s) on node 1\n" in text
    # The guest runs Debian's 6.1, where kvm_intel's alloc_kvm_area() allocates at module
    # load (x86_vmx_init() at boot is 7.1's; vmxprobe/kernel/release.py).
    assert "kvm_intel stops before it allocates (alloc_kvm_area(), on this kernel)" in text


def test_offline_cpu_is_planned_and_reported_not_probed(two_node_vm):
    vm = two_node_vm
    report = vm.json("offline-json")
    jsonschema.validate(report, SCHEMA)
    assert vm.rc("offline-json") == 1 and vm.err("offline-json") == ""
    assert report["cpus"] == {"possible": "0-3", "present": "0-3", "online": "0-2", "probed": "0-2"}
    cpu3 = report["per_cpu"][3]
    assert (cpu3["cpu"], cpu3["node"], cpu3["present"], cpu3["online"], cpu3["probed"]) == (
        3,
        1,
        True,
        False,
        False,
    )
    assert "msr" not in cpu3
    assert [(n["node"], n["cpus"]) for n in report["plan"]["nodes"]] == [(0, "0-1"), (1, "2-3")]
    assert_every_page_verified(report, 4)
    assert "CPUs:   4 possible (0-3), 4 present (0-3), 3 online (0-2), 3 read (0-2)" in vm.out("offline-text")


def test_no_msr_driver_on_the_guests_own_root(two_node_vm):
    """Without `modprobe msr` the guest's own /proc/cpuinfo still settles the verdict: the
    TCG CPU has no VMX (exit 1), and the missing driver is named with its fix."""
    vm = two_node_vm
    report = vm.json("nomsr-live")
    assert vm.rc("nomsr-live") == 1 and vm.err("nomsr-live") == ""
    assert report["verdict"]["x86_vmx_init"] == "EOPNOTSUPP" and report["verdict"]["determined"]
    assert any("(ENOENT)" in r and "modprobe msr" in r for r in report["verdict"]["reasons"])
    assert_every_page_verified(report, 4)


def test_unprivileged_user_on_the_guests_own_root(two_node_vm):
    """nobody: /proc/cpuinfo settles the verdict as above; mbind(2) and move_pages(2) on
    its own pages need no privilege, so the placement is still proved."""
    vm = two_node_vm
    report = vm.json("user-live")
    assert vm.rc("user-live") == 1 and vm.err("user-live") == ""
    assert any("(EACCES)" in r for r in report["verdict"]["reasons"])
    assert_every_page_verified(report, 4)


UNREADABLE = {
    # case: (run name, errno, words of the hint)
    "ENOENT": ("nomsr", "ENOENT", "modprobe msr"),
    "EACCES": ("user", "EACCES", "run as root"),
    "EPERM": ("norawio", "EPERM", "CAP_SYS_RAWIO"),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_unreadable_msrs_exit_3_with_one_line(two_node_vm, case):
    """Where the MSRs decide (a root whose /proc/cpuinfo claims VMX, over this guest's
    own /dev/cpu and /sys: guest.make_vmx_root), the msr driver's ENOENT, EACCES and
    EPERM each end in exit 3, one line on stderr, no traceback, and a report naming
    the register, the errno and the fix."""
    vm = two_node_vm
    run, err, hint = UNREADABLE[case]
    text, js = f"{run}-vmxroot", f"{run}-vmxroot-json"
    assert vm.rc(text) == 3 and vm.rc(js) == 3
    for name in (text, js):
        lines = vm.err(name).splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("vmxprobe: could not determine: ")
        assert "Traceback" not in vm.err(name) + vm.out(name)
    assert vm.out(text).startswith("UNKNOWN: could not read what x86_vmx_init() depends on")
    report = vm.json(js)
    jsonschema.validate(report, SCHEMA)
    v = report["verdict"]
    assert v["determined"] is False and v["x86_vmx_init"] is None
    for reg in ("IA32_FEATURE_CONTROL (0x3a)", "IA32_VMX_BASIC (0x480)"):
        assert any(
            u.startswith(f"cannot read {reg} on CPU 0 ({err}): ") and hint in u for u in v["undetermined"]
        ), v["undetermined"]
    # The line on stderr is the report's first cause, never something else.
    assert lines[0].startswith("vmxprobe: could not determine: " + v["undetermined"][0])
    # Another root: simulated, and every output says so.
    assert report["plan"]["placement"] == "simulated"
    assert report["plan"]["verified"]["placement"]["mode"] == "simulated"
    assert "placement simulated: the plan is for another host" in vm.out(text)


@pytest.mark.parametrize(
    "case",
    [
        "ENOENT",
        "EACCES",
        "EPERM",
    ],
)
def test_the_one_line_names_the_msr_cause(two_node_vm, case):
    run, err, hint = UNREADABLE[case]
    line = two_node_vm.err(f"{run}-vmxroot").strip()
    assert f"({err})" in line and hint in line, line


# --- a memoryless node, more possible than present CPUs -------------------------------


def test_memoryless_node_served_by_the_nearest_node_as_planned(memoryless_vm):
    vm = memoryless_vm
    report = vm.json("live-json")
    jsonschema.validate(report, SCHEMA)
    assert vm.rc("live-json") == 1 and vm.err("live-json") == ""
    nodes = sysfs_nodes(vm.sections["nodes"])
    with_memory = [0, 2]  # has_memory, checked in test_vm_smoke
    # The nearest node with memory by the kernel's own distance row of node 1.
    nearest = min(with_memory, key=lambda m: nodes[1][1][m])
    assert nearest == 2
    assert [
        (n["node"], n["cpus"], n["serving_node"], n["inferred_cpus"]) for n in report["plan"]["nodes"]
    ] == [(0, "0,4,6", 0, "4,6"), (1, "1-2", nearest, ""), (2, "3,5,7", 2, "5,7")]
    assert_every_page_verified(report, 8)
    node1 = report["plan"]["verified"]["placement"]["nodes"][1]
    # The kernel's own fallback, asked independently of the plan: a page faulted from a
    # CPU of node 1 with the local policy lands on node 2.
    assert node1["kernel_fallback"] == {"cpu": 1, "landed_on": 2, "agrees": True}
    assert "a page faulted from CPU 1 with local policy lands on node 2 too" in vm.out("live-text")


def test_all_possible_cpus_planned(memoryless_vm):
    report = memoryless_vm.json("live-json")
    assert report["cpus"] == {"possible": "0-7", "present": "0-3", "online": "0-3", "probed": "0-3"}
    assert report["plan"]["pages"] == 8
    assert [e["cpu"] for e in report["per_cpu"]] == list(range(8))
    for e in report["per_cpu"][4:]:
        assert (e["present"], e["online"], e["probed"], e["node_source"]) == (
            False,
            False,
            False,
            "round-robin",
        )


def test_memoryless_numa_maps(memoryless_vm):
    rows = numa_maps(memoryless_vm.sections["numa_maps"])
    assert [r[0] for r in rows] == list(range(8))
    for _cpu, _node, serving, policy, counts in rows:
        assert policy == f"bind:{serving}"
        assert counts and all(c.startswith(f"N{serving}=") for c in counts), counts
    assert [(r[1], r[2]) for r in rows if r[0] in (1, 2)] == [(1, 2), (1, 2)]


def test_replay_in_the_guest_is_simulated_with_the_same_plan(memoryless_vm):
    vm = memoryless_vm
    live, replay = vm.json("live-json"), vm.json("replay-json")
    jsonschema.validate(replay, SCHEMA)
    assert vm.rc("replay-json") == 1
    assert replay["source"]["kind"] == "fixture" and replay["plan"]["placement"] == "simulated"
    where = replay["plan"]["verified"]["placement"]
    assert where["mode"] == "simulated" and where["placed"] == 0
    assert where["verified_on_node"] is None and where["method"] is None
    assert replay["plan"]["nodes"] == live["plan"]["nodes"]
    for key in ("cpus", "verdict", "per_cpu"):
        assert replay[key] == live[key], key
    assert "placement simulated: the plan is for another host" in vm.out("replay-text")


def _stable(doc: dict, same_kernel: bool) -> dict:
    """What does not change from one boot of the same VM to the next: the topology,
    the MSRs, the vendor and the VMX and hypervisor bits; /proc/cpuinfo too (without
    TCG's per-boot clock calibration) when the kernel is the same."""
    files = {}
    for path, text in doc["files"].items():
        if path.endswith("/meminfo"):
            continue
        if path.startswith("proc/"):
            if not same_kernel:
                continue
            if path == "proc/cpuinfo":
                text = "\n".join(
                    line for line in text.splitlines() if not line.startswith(("cpu MHz", "bogomips"))
                )
        files[path] = text
    leaf1 = doc["cpuid"]["0x00000001:0x0"]
    return {
        "files": files,
        "dirs": doc["dirs"],
        "msr": doc["msr"],
        "file_errors": doc["file_errors"],
        "vendor": doc["cpuid"]["0x00000000:0x0"],
        "hypervisor": doc["cpuid"]["0x40000000:0x0"],
        "ecx vmx, hypervisor": [
            (g["cpus"], int(g["value"][2], 16) >> 5 & 1, int(g["value"][2], 16) >> 31) for g in leaf1
        ],
    }


def test_bundled_fixture_is_what_this_guest_records(memoryless_vm):
    vm = memoryless_vm
    assert vm.rc("record") == 0, vm.err("record")
    recorded = json.loads((vm.outdir / "recorded.json").read_text())
    with open(FIXTURE) as f:
        bundled = json.load(f)
    assert bundled["provenance"]["origin"] == recorded["provenance"]["origin"] == "recorded"
    same_kernel = bundled["provenance"]["kernel"] == recorded["provenance"]["kernel"]
    assert _stable(recorded, same_kernel) == _stable(bundled, same_kernel)
    zero = [{"cpus": "0-3", "value": "0x0000000000000000"}]
    assert recorded["msr"]["0x3a"] == recorded["msr"]["0x480"] == zero
    assert "0x3a" in bundled["provenance"]["notes"] and "0x480" in bundled["provenance"]["notes"]
