"""cpu_to_node() where sysfs does not say, and the node whose memory really serves a page:
the x86_64 kernel's NUMA rules, so that the plan matches what x86_vmx_init()
(arch/x86/virt/hw.c) does at boot:

    for_each_possible_cpu(cpu)
        __alloc_pages_node(cpu_to_node(cpu), GFP_KERNEL | __GFP_ZERO, 0);

Read in the kernel sources: arch/x86/virt/hw.c (mainline 920da4f75519),
arch/x86/mm/numa.c (linux-next 0b17e729ed2c), mm/numa_memblks.c (mainline
1260ed777985), mm/page_alloc.c (linux-next c375bc2e935c), mm/mm_init.c and
init/main.c for the boot order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from vmxprobe.host.cpulist import format_cpulist
from vmxprobe.host.sources import NODE_DIR
from vmxprobe.host.topology import Topology

BY_SINGLE = "single-node"  # no NUMA information: the kernel has only node 0
BY_ROUND_ROBIN = "round-robin"  # in no node: numa_init_array()'s placement (see below)

# include/linux/topology.h; x86 does not override it.
PENALTY_FOR_NODE_WITH_CPUS = 1
# include/linux/numa.h: LOCAL_DISTANCE, REMOTE_DISTANCE. __node_distance() answers these
# for nodes outside the firmware's table, and numa_alloc_distance() fills the table
# with them before the SLIT is applied.
LOCAL_DISTANCE, REMOTE_DISTANCE = 10, 20
# MAX_NUMNODES = 1 << CONFIG_NODES_SHIFT. find_next_best_node() scales the distance by it
# so that node_load[] only breaks ties; CONFIG_NODES_SHIFT=10 is what distribution x86_64
# kernels (and MAXSMP) use. The value matters only on a host with that many nodes.
MAX_NUMNODES = 1 << 10


@dataclass
class NodeMap:
    """cpu_to_node() for every possible CPU, and the node serving each node's pages."""

    node_of: dict[int, int]  # cpu_to_node(cpu), for every possible CPU
    node_source: dict[int, str]  # how node_of[cpu] was found (topology.BY_*, BY_*)
    serving_node: dict[int, int]  # node a GFP_KERNEL page asked for on node N comes from
    # The boot-time zonelist order of every possible node, as build_zonelists() prints
    # it ("Fallback order for Node N: ..."); computed when some CPU's node lacks normal
    # memory, empty otherwise.
    fallback_order: dict[int, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # CPUs placed without sysfs
    serving_notes: list[str] = field(default_factory=list)  # nodes served from elsewhere
    missing: list[str] = field(default_factory=list)
    # The SRAT's node for each CPU's APIC id, where the firmware's tables were read
    # (kernel.acpi_numa.firmware_view()).
    firmware_node: dict[int, int] = field(default_factory=dict)


def cpu_to_node(topo: Topology) -> NodeMap:
    """Every possible CPU's node: sysfs's answer where it has one, else the kernel's
    placement; then which node serves each node's pages."""
    node_of, node_source = dict(topo.node_of), dict(topo.node_source)
    notes: list[str] = []
    unplaced = [cpu for cpu in topo.possible if cpu not in node_of]
    if unplaced:
        known = sorted(set(topo.nodes) | set(topo.node_online or []) | set(node_of.values()))
        if len(known) <= 1 and not topo.node_lists_seen and not topo.links_seen:
            # No NUMA information at all: a kernel without CONFIG_NUMA, or with one node
            # (dummy_numa_init()), has every CPU on node 0.
            single = known[0] if known else 0
            for cpu in unplaced:
                node_of[cpu], node_source[cpu] = single, BY_SINGLE
        else:
            _round_robin(
                unplaced,
                set(topo.present),
                topo.nodes_with_memory,
                topo.node_online,
                topo.nodes,
                node_of,
                node_source,
                notes,
            )
    node_of = dict(sorted(node_of.items()))
    all_nodes = sorted(set(topo.node_possible or []) | set(topo.nodes) | set(node_of.values()))
    serving_notes: list[str] = []
    missing: list[str] = []
    serving, order = _serving_nodes(
        all_nodes,
        node_of,
        topo.online,
        topo.nodes_with_memory,
        topo.nodes_with_normal_memory,
        topo.distance,
        serving_notes,
        missing,
    )
    return NodeMap(node_of, node_source, serving, order, notes, serving_notes, missing)


def _zonelists(
    possible_nodes: list[int],
    with_memory: list[int],
    distance: dict[int, dict[int, int]],
    has_cpus: Callable[[int], bool],
) -> tuple[dict[int, list[int]], dict[int, dict[int, list[int]]]]:
    """build_all_zonelists() (mm/page_alloc.c) over every possible node.

    __build_all_zonelists() clears node_load[] and then runs build_zonelists() for each
    possible node in ascending order; node_load[] carries over from one node's list to
    the next. Each list starts with the node itself when it has memory; a memoryless
    node is left out of its own list (find_next_best_node() skips it since "mm:
    page_alloc: skip memoryless nodes entirely", 2023). Then the list repeatedly takes,
    among the nodes with memory not yet used, the one with the smallest

        (node_distance(local, n) + (n < local) + PENALTY_FOR_NODE_WITH_CPUS * has_cpus(n))
            * MAX_NUMNODES + node_load[n]

    with a strict "<" over nodes in ascending order, so an exact tie goes to the lowest
    node id. build_zonelists() adds 1 to node_load[] of the first node of each new
    distance group, which spreads nodes at equal distance round-robin over the lists.

    Returns (order, ties): order[node] is the node's fallback list; ties[node] holds, for
    each pick, the other nodes whose value before node_load[] was equal.
    """

    def dist(a: int, b: int) -> int:
        row = distance.get(a)
        if row is not None and b in row:
            return row[b]
        return LOCAL_DISTANCE if a == b else REMOTE_DISTANCE

    memory = sorted(with_memory)
    node_load: dict[int, int] = {}
    order: dict[int, list[int]] = {}
    ties: dict[int, dict[int, list[int]]] = {}
    memory_set = set(memory)
    for local in sorted(possible_nodes):
        used, picks, prev = set(), [], local
        if local in memory_set:
            used.add(local)
            picks.append(local)
        ties[local] = {}
        while True:
            best, best_val, base_of = None, None, {}
            for n in memory:
                if n in used:
                    continue
                base = dist(local, n) + (n < local) + (PENALTY_FOR_NODE_WITH_CPUS if has_cpus(n) else 0)
                base_of[n] = base
                val = base * MAX_NUMNODES + node_load.get(n, 0)
                if best_val is None or val < best_val:
                    best, best_val = n, val
            if best is None:
                break
            used.add(best)
            ties[local][best] = [n for n, b in base_of.items() if b == base_of[best] and n != best]
            if dist(local, best) != dist(local, prev):
                node_load[best] = node_load.get(best, 0) + 1
            picks.append(best)
            prev = best
        order[local] = picks
    return order, ties


def _round_robin(
    unplaced: list[int],
    present_set: set[int],
    with_memory: list[int] | None,
    node_online: list[int] | None,
    nodes: list[int],
    node_of: dict[int, int],
    node_source: dict[int, str],
    notes: list[str],
) -> None:
    """Place CPUs that sysfs puts in no node, as x86 boot code does.

    numa_init() (arch/x86/mm/numa.c) ends with numa_init_array(), which walks every CPU
    id from 0 and gives each CPU still without a node the next node of node_online_map,
    round-robin from the first. At that point SRAT has only filled __apicid_to_node[],
    so every CPU is still without a node: CPU i gets the (i mod k)-th of the k online
    nodes, and at that point only nodes with memory are online (numa_register_nodes()
    onlines a node when it spans memory; init_cpu_to_node() onlines memoryless CPU
    nodes later). init_cpu_to_node() then overwrites the CPUs whose APIC id has a node
    in SRAT. A possible but not present CPU has no APIC id yet (topology_init_possible_
    cpus() only reserves one in cpuid_to_apicid[], not x86_cpu_to_apicid), so it keeps
    the round-robin node until a hot-add sets its node from _PXM (acpi_map_cpu2node()).
    Read in mainline arch/x86/mm/numa.c and mm/numa_memblks.c (numa_memblks_init()) and
    in linux-next 0b17e729ed2c: numa_init_array() is still called from numa_init(), after
    the move of the memblock code to mm/numa_memblks.c.
    """
    if with_memory:
        rr_nodes, what = sorted(with_memory), "nodes with memory"
    elif node_online:
        rr_nodes, what = sorted(node_online), "online nodes (memory unknown)"
    elif nodes:
        rr_nodes, what = nodes, "node directories (memory unknown)"
    else:
        rr_nodes, what = sorted(set(node_of.values())) or [0], "nodes seen (memory unknown)"
    for cpu in unplaced:
        node_of[cpu], node_source[cpu] = rr_nodes[cpu % len(rr_nodes)], BY_ROUND_ROBIN
    absent = [c for c in unplaced if c not in present_set]
    placed = [c for c in unplaced if c in present_set]
    rule = (
        f"as numa_init_array() does: CPU i on the (i mod {len(rr_nodes)})-th of the "
        f"{what} {format_cpulist(rr_nodes)}"
    )
    if absent:
        notes.append(
            f"CPU(s) {format_cpulist(absent)} are possible but not present (no sysfs "
            f"entry): planned, and placed {rule}; a hot-add would move each to "
            "its firmware (_PXM) node"
        )
    if placed:
        notes.append(
            f"CPU(s) {format_cpulist(placed)} are present but in no node list and "
            f"have no cpuN/nodeM link: placed {rule}; the firmware's SRAT may have "
            "said otherwise"
        )


def _serving_nodes(
    all_nodes: list[int],
    node_of: dict[int, int],
    online: list[int],
    with_memory: list[int] | None,
    normal: list[int] | None,
    distance: dict[int, dict[int, int]],
    notes: list[str],
    missing: list[str],
) -> tuple[dict[int, int], dict[int, list[int]]]:
    """The node whose memory serves __alloc_pages_node(node, GFP_KERNEL, 0), per node.

    The allocation walks the node's fallback zonelist and takes the first zone a
    GFP_KERNEL request may use (ZONE_NORMAL or below), so the first node of the list
    that has normal memory (N_NORMAL_MEMORY) serves it: the node itself when it has
    such memory, else the nearest by find_next_best_node()'s order (see _zonelists()).

    Which zonelists: x86_vmx_init() allocates at boot, with the lists that mm_core_init()
    built via build_all_zonelists(NULL). That runs before arch_cpu_finalize_init() ->
    identify_boot_cpu() -> identify_cpu() -> numa_add_cpu() puts even the boot CPU in
    node_to_cpumask_map, so cpumask_of_node() is empty for every node then and
    PENALTY_FOR_NODE_WITH_CPUS adds nothing. A later memory hot-add rebuilds the lists
    with the CPUs counted; when that would change a CPU's serving node, a note says so.
    """
    serving = {n: n for n in all_nodes}
    if with_memory is None:
        return serving, {}
    if not with_memory:
        notes.append("no node has memory according to sysfs; serving nodes unknown")
        return serving, {}
    planned = sorted(set(node_of.values()))
    normal_set = set(normal or [])
    if all(n in normal_set for n in planned):
        # Every page is asked for on a node with normal memory: it serves itself, and
        # the zonelists (quadratic in the number of nodes) are not needed.
        return serving, {}
    order, ties = _zonelists(all_nodes, with_memory, distance, lambda n: False)

    def first_normal(lst: list[int]) -> int | None:
        return next((n for n in lst if n in normal_set), None)

    needy = [n for n in planned if n not in normal_set]
    unknown_rows = [n for n in needy if n not in distance]
    if unknown_rows:
        missing.append(
            f"/{NODE_DIR}/node{{{format_cpulist(unknown_rows)}}}/distance "
            "(taken as REMOTE_DISTANCE to every node)"
        )
    for n in all_nodes:
        s = first_normal(order[n])
        serving[n] = n if s is None else s
    rebuilt = None
    for n in needy:
        s = first_normal(order[n])
        if s is None:
            notes.append(
                f"node {n}: no node has normal memory in its fallback list; the page cannot be placed"
            )
            continue
        why = (
            "has no memory"
            if n not in with_memory
            else "has memory but none a GFP_KERNEL page may use (not in has_normal_memory)"
        )
        msg = (
            f"node {n} {why}: its pages come from node {s}, first usable in its fallback "
            f"order {' '.join(map(str, order[n]))}"
        )
        if ties[n].get(s):
            msg += (
                f" (tied with node(s) {format_cpulist(ties[n][s])} on distance; "
                "node_load[] and then the lower id decide, as in build_zonelists())"
            )
        notes.append(msg)
        if rebuilt is None:
            # cpumask_of_node() then holds the node's online CPUs (numa_remove_cpu()
            # takes a CPU out when it goes offline).
            with_cpus = {node_of[c] for c in online}
            rebuilt, _ = _zonelists(all_nodes, with_memory, distance, with_cpus.__contains__)
        r = first_normal(rebuilt[n])
        if r is not None and r != s:
            notes.append(
                f"node {n}: zonelists rebuilt after a memory hot-add count the "
                f"nodes' CPUs (PENALTY_FOR_NODE_WITH_CPUS) and would serve it from "
                f"node {r}; the boot-time lists, which x86_vmx_init() uses, give "
                f"node {s}"
            )
    return serving, order
