"""The kernel's rules for cpu_to_node() where sysfs does not say, and for the node that
serves a page (vmxprobe.kernel.numa), on small hand-made hosts where each rule decides
the answer."""

from tests.host.test_topology import CPU, NODE, host, numa_host
from tests.placed import Placed
from vmxprobe.host import fixture
from vmxprobe.host.sources import FixtureHost
from vmxprobe.host.topology import read_topology
from vmxprobe.kernel.numa import BY_ROUND_ROBIN, BY_SINGLE, cpu_to_node
from vmxprobe.kernel.root_vmcs import build_plan


def topo(doc):
    t = read_topology(FixtureHost(fixture.parse(doc)))
    return Placed(t, cpu_to_node(t))


def plan_of(t, revision):
    return build_plan(t.topology, t.placement, revision)


# --- cpu_to_node() where sysfs does not say ---------------------------------------------


def test_not_present_cpus_go_round_robin_over_the_nodes_with_memory():
    # Node 1 has CPUs but no memory: at numa_init_array() time it is not online yet
    # (init_cpu_to_node() onlines it later), so it takes no not-present CPU.
    doc = numa_host({0: [0, 1], 1: [2, 3], 2: [4, 5]}, possible=list(range(10)), memory=[0, 2])
    t = topo(doc)
    assert [t.node_of[c] for c in range(6, 10)] == [0, 2, 0, 2]
    assert all(t.node_source[c] == BY_ROUND_ROBIN for c in range(6, 10))
    plan = plan_of(t, 1)
    assert len(plan.pages) == 10
    assert [p.present for p in plan.pages[6:]] == [False] * 4
    assert any("CPU(s) 6-9 are possible but not present" in n and "(i mod 2)-th" in n for n in t.notes)


def test_round_robin_counts_every_cpu_id_not_only_the_unplaced_ones():
    # CPU 7 is the first without a node; 7 mod 3 = 1 puts it on the second node.
    t = topo(numa_host({0: [0, 1], 1: [2, 3], 2: [4, 5, 6]}, possible=list(range(9))))
    assert (t.node_of[7], t.node_of[8]) == (1, 2)


def test_no_numa_information_means_node_zero():
    doc = host(
        {f"{CPU}/possible": "0-3\n", f"{CPU}/present": "0-1\n", f"{CPU}/online": "0-1\n"},
        {CPU: ["cpu0", "cpu1"]},
    )
    t = topo(doc)
    assert t.node_of == {0: 0, 1: 0, 2: 0, 3: 0}
    assert set(t.node_source.values()) == {BY_SINGLE}
    assert "/sys/devices/system/node" in t.missing


def test_offline_cpus_are_planned_on_their_linked_node():
    t = topo(numa_host({0: [0, 1], 1: [2, 3]}, online=[0, 1, 2]))
    plan = plan_of(t, 1)
    page = plan.pages[3]
    assert (page.cpu, page.node, page.present, page.online) == (3, 1, True, False)


# --- the node that serves the page ------------------------------------------------------


def test_memoryless_node_takes_the_nearest_node_with_memory():
    dist = {0: [10, 30, 20], 1: [30, 10, 20], 2: [20, 20, 10]}
    t = topo(numa_host({0: [0], 1: [1], 2: [2]}, memory=[0, 1], distance=dist))
    assert t.serving_node == {0: 0, 1: 1, 2: 0}  # 20 + (0 < 2) = 21 vs 21: id 0
    plan = plan_of(t, 1)
    assert (plan.pages[2].node, plan.pages[2].serving_node) == (2, 0)


def test_equal_distances_are_dealt_round_robin_by_node_load():
    """build_zonelists() bumps node_load[] of the first node of each new distance group,
    and find_next_best_node() prefers the less loaded node among equals: two memoryless
    nodes at the same distance from two memory nodes are served by different ones. A
    plain "lowest id on a tie" would give node 0 to both."""
    t = topo(numa_host({0: [0], 1: [1], 2: [2], 3: [3]}, memory=[0, 1]))
    assert t.fallback_order == {0: [0, 1], 1: [1, 0], 2: [0, 1], 3: [1, 0]}
    assert (t.serving_node[2], t.serving_node[3]) == (0, 1)
    assert any(
        n.startswith("node 3 has no memory: its pages come from node 1") and "tied with node(s) 0" in n
        for n in t.notes
    )


def test_boot_zonelists_ignore_cpus_and_a_rebuild_would_not():
    """At boot (when x86_vmx_init() allocates) no node has CPUs in cpumask_of_node()
    yet; lists rebuilt after a memory hot-add add PENALTY_FOR_NODE_WITH_CPUS."""
    dist = {0: [10, 16, 16], 1: [16, 10, 16], 2: [16, 16, 10]}
    doc = numa_host({0: [0, 1], 1: [2, 3], 2: []}, memory=[1, 2], distance=dist)
    t = topo(doc)
    assert t.serving_node[0] == 1
    assert any("would serve it from node 2" in n for n in t.notes)


def test_below_nodes_are_penalised_by_one():
    # Node 2 is memoryless; node 0 (below it) and node 3 (above) are equally far.
    t = topo(numa_host({0: [0], 2: [2], 3: [3]}, memory=[0, 3]))
    assert t.serving_node[2] == 3


def test_memory_not_usable_by_gfp_kernel_is_skipped():
    t = topo(numa_host({0: [0], 1: [1], 2: [2]}, memory=[0, 1, 2], normal=[0, 2]))
    assert t.fallback_order[1] == [1, 2, 0]
    assert t.serving_node[1] == 2


def test_unknown_memory_leaves_each_node_serving_itself():
    doc = numa_host({0: [0], 1: [1]})
    del doc["files"][f"{NODE}/has_memory"], doc["files"][f"{NODE}/has_normal_memory"]
    t = topo(doc)
    assert t.serving_node == {0: 0, 1: 1} and t.nodes_with_memory is None
    assert "/sys/devices/system/node/has_memory" in t.missing


def test_meminfo_stands_in_for_has_memory():
    doc = numa_host({0: [0], 1: [1]})
    del doc["files"][f"{NODE}/has_memory"], doc["files"][f"{NODE}/has_normal_memory"]
    doc["files"][f"{NODE}/node0/meminfo"] = "Node 0 MemTotal:       16384 kB\n"
    doc["files"][f"{NODE}/node1/meminfo"] = "Node 1 MemTotal:           0 kB\n"
    t = topo(doc)
    assert t.nodes_with_memory == [0] and t.serving_node[1] == 0


def test_a_missing_distance_row_is_said():
    doc = numa_host({0: [0], 1: [1]}, memory=[0])
    del doc["files"][f"{NODE}/node1/distance"]
    t = topo(doc)
    assert t.serving_node[1] == 0
    assert any(m.startswith("/sys/devices/system/node/node{1}/distance") for m in t.missing)
