"""The converted real-machine fixtures: every plan's CPU -> node map against the ground
truth recorded beside the dumps (tests/data/topology/<fixture>.csv: the kernel's
cpuN/nodeM links, the node lists, and lscpu's answer), and one test per place where
lscpu and the kernel part ways."""

import csv
import json
import os

import pytest

from tests import TESTS, cli_runner
from tests.placed import Placed
from tests.scanning import run
from vmxprobe.cli import cli
from vmxprobe.host import fixture
from vmxprobe.host.cpulist import parse_cpulist
from vmxprobe.host.sources import FixtureHost
from vmxprobe.host.topology import BY_LINK, read_topology
from vmxprobe.kernel.numa import BY_ROUND_ROBIN, cpu_to_node

TRUTH = os.path.join(TESTS, "data", "topology")

# Every x86 dump of the util-linux lscpu suite (6 at HEAD, 3 deleted in 2012) and the 10
# hwloc dumps that were chosen for their NUMA layouts.
REAL = [
    "ul-x86_64-64cpu",
    "ul-x86_64-epyc_7451",
    "ul-vmware_fpe",
    "ul-x86_64-dell_e4310",
    "ul-x86_64-64cpu-linux6.2",
    "ul-vbox-win",
    "ul-x86_64-dellr710",
    "ul-x86_64-dell_poweredgeR610",
    "ul-x86_64-hpdl585",
    "hwloc-40intel64-4n10c+pci-conflicts",
    "hwloc-32intel64-2p8co2t+8ve",
    "hwloc-32em64t-2n8c+dax+nvme+mic+dimms",
    "hwloc-memorysidecaches",
    "hwloc-offline-cpu0-node0",
    "hwloc-fakememinitiators-1np2c+1npp+gi",
    "hwloc-20em64t-hybrid-1p6c2t+2ca4co1t",
    "hwloc-fakeheteromemtiers",
    "hwloc-8em64t-2s2ca2c-buggynuma",
    "hwloc-fakecpuid1f-64intel64-2p4d2n2c2t",
]

# CPUs where lscpu's node is not cpu_to_node(); each set is explained by a test below.
LSCPU_DISAGREES = {
    "hwloc-8em64t-2s2ca2c-buggynuma": "1-7",
    "hwloc-fakememinitiators-1np2c+1npp+gi": "1-6",
    "hwloc-offline-cpu0-node0": "0-4,6,8,10,12,14,16,18,20-23",
}


def truth(name):
    with open(os.path.join(TRUTH, name + ".csv"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("# Ground truth") and "Dump: https://github.com/" in lines[1]
    return {int(r["cpu"]): r for r in csv.DictReader(ln for ln in lines if not ln.startswith("#"))}


def topo(name):
    t = read_topology(FixtureHost(fixture.load(name)))
    return Placed(t, cpu_to_node(t))


def test_every_dump_has_a_fixture_and_ground_truth():
    converted = {n for n in fixture.bundled_names() if fixture.load(n).provenance["origin"] == "converted"}
    assert converted == set(REAL)
    assert {f[:-4] for f in os.listdir(TRUTH) if f.endswith(".csv")} == set(REAL)


@pytest.mark.parametrize("name", REAL)
def test_provenance_names_project_file_and_commit(name):
    prov = fixture.load(name).provenance
    assert prov["origin"] == "converted" and prov["recorded_at"] is None
    assert "root" not in prov and prov["hostname"] is None
    url = prov["sources"][0]["url"]
    assert url.startswith(
        ("https://github.com/util-linux/util-linux/blob/", "https://github.com/open-mpi/hwloc/blob/")
    )
    commit = url.split("/blob/")[1].split("/")[0]
    assert len(commit) == 40 and commit in prov["notes"]
    assert "sha256" in prov["sources"][0]["what"] and "ENOENT" in prov["notes"]


@pytest.mark.parametrize("name", REAL)
def test_scan_plans_one_page_per_possible_cpu(name):
    r = cli_runner().invoke(cli, ["scan", "--fixture", name, "--format", "json"], catch_exceptions=False)
    # No MSR was recorded (the dumps have no /dev/cpu): the verdict is unknown (3), or
    # "not ready" (1) when /proc/cpuinfo alone settles it. The plan is complete anyway.
    assert r.exit_code in (1, 3), r.stderr
    report = json.loads(r.stdout)
    possible = parse_cpulist(report["cpus"]["possible"])
    assert possible == sorted(truth(name))
    assert report["plan"]["pages"] == len(possible)
    planned = [c for n in report["plan"]["nodes"] for c in parse_cpulist(n["cpus"])]
    assert sorted(planned) == possible, "each possible CPU exactly once"
    assert sum(n["pages"] for n in report["plan"]["nodes"]) == len(possible)
    assert [e["cpu"] for e in report["per_cpu"]] == possible
    for n in report["plan"]["nodes"]:
        assert isinstance(n["serving_node"], int)


@pytest.mark.parametrize("name", REAL)
def test_cpu_to_node_follows_every_kernel_link(name):
    t, rows = topo(name), truth(name)
    linked = {c: int(r["link"]) for c, r in rows.items() if r["link"]}
    assert {c: t.node_of[c] for c in linked} == linked
    assert all(t.node_source[c] == BY_LINK for c in linked)


@pytest.mark.parametrize("name", REAL)
def test_cpu_to_node_matches_lscpu_except_where_explained(name):
    t, rows = topo(name), truth(name)
    listed = {c: r["lscpu"] for c, r in rows.items() if r["lscpu"] != "-"}
    assert listed, "lscpu lists the present CPUs of every dump"
    differ = [c for c, node in listed.items() if node == "" or int(node) != t.node_of[c]]
    assert differ == parse_cpulist(LSCPU_DISAGREES.get(name, ""))


@pytest.mark.parametrize("name", REAL)
def test_cpus_without_a_link_take_the_node_list(name):
    t, rows = topo(name), truth(name)
    for c, r in rows.items():
        if not r["link"] and r["lists"]:
            assert t.node_of[c] == int(r["lists"].split(";")[0])


def test_lscpu_buggynuma_every_node_lists_every_cpu():
    """SGI Altix XE320 with broken firmware tables: node0..node7/cpulist all say 0-7, so
    lscpu, which takes the first node whose list holds a CPU, says node 0 for all eight.
    The kernel's cpu_to_node() is what each cpuK/nodeK link records: one CPU per node."""
    t, rows = topo("hwloc-8em64t-2s2ca2c-buggynuma"), truth("hwloc-8em64t-2s2ca2c-buggynuma")
    assert {c: int(r["lscpu"]) for c, r in rows.items()} == {c: 0 for c in range(8)}
    assert all(r["lists"] == "0;1;2;3;4;5;6;7" for r in rows.values())
    assert t.node_of == {c: c for c in range(8)}
    assert any("disagree with the node lists" in n for n in t.notes)


def test_lscpu_fakememinitiators_cpumaps_pair_cpus_links_do_not():
    """A constructed dump: the node cpumaps pair CPUs (0-1, 2-3, 4-5, 6-7) and lscpu
    reads those, while the cpuN/nodeM links put CPU i on node i mod 4. The links are
    cpu_to_node(), which is the node x86_vmx_init() asks for."""
    name = "hwloc-fakememinitiators-1np2c+1npp+gi"
    t, rows = topo(name), truth(name)
    assert [int(rows[c]["lscpu"]) for c in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [t.node_of[c] for c in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
    note = next(n for n in t.notes if "disagree with the node lists" in n)
    assert note.startswith("CPU(s) 1-6:")


def test_lscpu_prints_no_node_for_offline_cpus():
    """lscpu leaves NODE empty for every offline CPU. The kernel still made their
    cpuN/nodeM links (register_cpu() runs for every present CPU), and x86_vmx_init()
    allocates their pages on those nodes: planned, not probed."""
    name = "hwloc-offline-cpu0-node0"
    t, rows = topo(name), truth(name)
    offline = [c for c, r in rows.items() if r["present"] == "1" and r["online"] == "0"]
    assert offline == [0, 1, 2, 3, 21, 22, 23]
    assert all(rows[c]["lscpu"] == "" for c in offline)
    assert [t.node_of[c] for c in offline] == [0, 1, 0, 1, 1, 0, 1]
    report, _ = run(FixtureHost(fixture.load(name)), fixture.load(name))
    entries = {e["cpu"]: e for e in report["per_cpu"]}
    assert all(not entries[c]["online"] and not entries[c]["probed"] for c in offline)
    assert any(n.startswith("CPU(s) 0-3,21-23 are present but offline") for n in t.notes)


def test_lscpu_prints_no_node_where_the_node_directory_is_gone():
    """The dump was edited to take node 0 offline: node0/ is gone, so no node list holds
    the online even CPUs and lscpu prints no node for them, but their cpuN/node0 links
    remain: cpu_to_node() is 0."""
    name = "hwloc-offline-cpu0-node0"
    t, rows = topo(name), truth(name)
    even_online = list(range(4, 21, 2))
    assert all(
        rows[c]["lscpu"] == "" and rows[c]["lists"] == "" and rows[c]["link"] == "0" for c in even_online
    )
    assert all(t.node_of[c] == 0 for c in even_online)
    assert 0 not in t.nodes
    assert any(
        n.startswith("CPU(s) 4,6,8,10,12,14,16,18,20 are online and linked to node(s) 0") for n in t.notes
    )


def test_lscpu_never_lists_cpus_that_are_not_present():
    """Not a disagreement: lscpu lists present CPUs only. The plan has the others too,
    placed as numa_init_array() places them."""
    for name in REAL:
        rows = truth(name)
        absent = [c for c, r in rows.items() if r["present"] == "0"]
        assert all(rows[c]["lscpu"] == "-" for c in absent), name
        t = topo(name)
        assert all(t.node_source[c] == BY_ROUND_ROBIN for c in absent), name


def test_not_present_cpus_are_dealt_round_robin_by_cpu_number():
    # numa_init_array(): CPU i on the (i mod k)-th node, counted over all CPU ids.
    t = topo("ul-x86_64-64cpu")  # nodes 0, 2, 3; memory unknown
    assert [t.node_of[c] for c in range(64, 70)] == [2, 3, 0, 2, 3, 0]
    t = topo("ul-vmware_fpe")  # nodes 0-3
    assert [t.node_of[c] for c in range(16, 24)] == [0, 1, 2, 3, 0, 1, 2, 3]
    t = topo("hwloc-offline-cpu0-node0")  # has_memory 0-1
    assert [t.node_of[c] for c in (24, 25, 190, 191)] == [0, 1, 0, 1]
    report, _ = run(FixtureHost(fixture.load("ul-x86_64-64cpu")), fixture.load("ul-x86_64-64cpu"))
    inferred = [c for n in report["plan"]["nodes"] for c in parse_cpulist(n["inferred_cpus"])]
    assert sorted(inferred) == list(range(64, 80))


def test_memoryless_cpu_nodes_are_served_by_the_nearest_memory():
    name = "hwloc-fakememinitiators-1np2c+1npp+gi"
    t = topo(name)
    assert t.nodes_with_memory == [5, 6, 7, 8, 9, 10]
    assert {n: t.serving_node[n] for n in range(4)} == {0: 5, 1: 8, 2: 6, 3: 9}
    # As the kernel prints them ("Fallback order for Node N: ..."); a current kernel leaves a
    # memoryless node out of its own list.
    assert t.fallback_order[0] == [5, 6, 7, 8, 9, 10]
    assert t.fallback_order[1] == [8, 9, 10, 5, 6, 7]
    report, _ = run(FixtureHost(fixture.load(name)), fixture.load(name))
    served = {n["node"]: (n["serving_node"], n["cpus"]) for n in report["plan"]["nodes"]}
    assert served == {0: (5, "0,4"), 1: (8, "1,5"), 2: (6, "2,6"), 3: (9, "3,7")}


def test_memory_a_gfp_kernel_page_cannot_use_does_not_serve():
    """Node 2 has memory, but none in has_normal_memory (it is ZONE_MOVABLE only): a
    GFP_KERNEL page skips it and the nodes like it, and comes from node 0, whose
    distance ties with node 1's (node_load[] and then the lower id decide)."""
    t = topo("hwloc-fakeheteromemtiers")
    assert t.nodes_with_normal_memory == [0, 1]
    assert t.fallback_order[2] == [2, 4, 6, 8, 9, 0, 1]
    assert t.serving_node[2] == 0 and t.serving_node[0] == 0 and t.serving_node[1] == 1
    assert any(n.startswith("node 2 has memory but none a GFP_KERNEL page may use") for n in t.notes)


def test_partial_dumps_say_which_facts_were_absent():
    t = topo("ul-x86_64-64cpu")
    assert "/sys/devices/system/cpu/cpuN/nodeM links" in t.missing
    assert any(m.startswith("/sys/devices/system/node/nodeM/cpulist for node(s) 0,2-3") for m in t.missing)
    assert "/sys/devices/system/node/has_memory" in t.missing
    t = topo("ul-x86_64-hpdl585")
    for f in ("possible", "present", "online"):
        assert f"/sys/devices/system/cpu/{f}" in t.missing
    assert t.possible == list(range(16)) and t.online == list(range(16))
    assert not t.possible_known and topo("ul-x86_64-64cpu").possible_known
    r = cli_runner().invoke(cli, ["scan", "--fixture", "ul-x86_64-hpdl585"])
    assert "Absent: /sys/devices/system/cpu/possible" in r.stdout
    # The 16 CPUs seen are a lower bound of cpu_possible_mask: the plan says so.
    assert "Plan:   at least 16 root VMCS page(s)" in r.stdout


def test_old_nul_terminated_node_files_are_read():
    t = topo("hwloc-32em64t-2n8c+dax+nvme+mic+dimms")
    assert t.nodes_with_memory == [0, 1]
    assert not any("bad cpulist" in n for n in t.notes)
    assert "/sys/devices/system/node/has_memory (has_normal_memory used)" in t.missing


def test_hand_edited_distance_row_is_read_per_possible_node():
    t = topo("hwloc-offline-cpu0-node0")
    assert t.distance[1] == {0: 21, 1: 10}
