"""CPUs and NUMA nodes as sysfs shows them: possible/present/online, cpu_to_node(),
node memory and the node distance table."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from vmxprobe.cpulist import CpulistError, format_cpulist, parse_cpulist, parse_cpumap
from vmxprobe.sources import CPU_DIR, NODE_DIR

_NODE_ENTRY = re.compile(r"node\d+")
_CPU_ENTRY = re.compile(r"cpu\d+")

# How the node of a CPU was found, best evidence first.
BY_LINK = "link"          # cpuN/nodeM: exactly cpu_to_node(cpu)
BY_CPULIST = "cpulist"    # nodeM/cpulist holds the CPU
BY_CPUMAP = "cpumap"      # nodeM/cpumap holds the CPU
BY_SINGLE = "single-node" # no NUMA information: the kernel has only node 0
BY_ROUND_ROBIN = "round-robin"  # present in no node: numa_init_array()'s placement


@dataclass
class Topology:
    possible: list[int]
    present: list[int]
    online: list[int]
    node_of: dict[int, int]          # cpu_to_node(cpu), for every possible CPU
    node_source: dict[int, str]      # how node_of[cpu] was found
    nodes: list[int]                 # node ids known to sysfs
    nodes_with_memory: Optional[list[int]]  # None when sysfs does not say
    distance: dict[int, dict[int, int]]
    serving_node: dict[int, int]     # node a page asked for on node N comes from
    kernel_max: Optional[int] = None
    notes: list[str] = field(default_factory=list)    # disagreements, fallbacks
    missing: list[str] = field(default_factory=list)  # facts sysfs did not have


def _cpulist_file(source, path, notes) -> Optional[list[int]]:
    text = source.read_text(path)
    if text is None:
        return None
    try:
        return parse_cpulist(text)
    except CpulistError as e:
        notes.append(f"/{path}: {e}; ignored")
        return None


def read_topology(source) -> Topology:
    notes: list[str] = []
    missing: list[str] = []

    possible = _cpulist_file(source, f"{CPU_DIR}/possible", notes)
    present = _cpulist_file(source, f"{CPU_DIR}/present", notes)
    online = _cpulist_file(source, f"{CPU_DIR}/online", notes)
    cpu_dirs = None
    if possible is None or present is None or online is None:
        entries = source.list_dir(CPU_DIR, _CPU_ENTRY) or []
        cpu_dirs = sorted(int(e[3:]) for e in entries)
    for name, value in (("possible", possible), ("present", present), ("online", online)):
        if value is None:
            missing.append(f"/{CPU_DIR}/{name}")
    # Older dumps lack these files; each falls back to the next best evidence.
    if present is None:
        present = cpu_dirs
    if online is None:
        online = present
    if possible is None:
        possible = sorted(set(present) | set(online))
    present = sorted(set(present) | set(online))
    possible = sorted(set(possible) | set(present))

    kmax_text = source.read_text(f"{CPU_DIR}/kernel_max")
    kernel_max = int(kmax_text) if kmax_text and kmax_text.strip().isdigit() else None

    # Nodes and their CPUs, from node directories.
    node_entries = source.list_dir(NODE_DIR, _NODE_ENTRY)
    nodes = sorted(int(e[4:]) for e in node_entries or [])
    node_cpus: dict[int, tuple[str, list[int]]] = {}
    for n in nodes:
        cpus = _cpulist_file(source, f"{NODE_DIR}/node{n}/cpulist", notes)
        how = BY_CPULIST
        if cpus is None:
            text = source.read_text(f"{NODE_DIR}/node{n}/cpumap")
            if text is not None:
                try:
                    cpus, how = parse_cpumap(text), BY_CPUMAP
                except CpulistError as e:
                    notes.append(f"/{NODE_DIR}/node{n}/cpumap: {e}; ignored")
        if cpus is not None:
            node_cpus[n] = (how, cpus)
    if node_entries is None:
        missing.append(f"/{NODE_DIR}")
    elif nodes and len(node_cpus) < len(nodes):
        missing.append("node cpulist/cpumap for node(s) "
                       + ",".join(str(n) for n in nodes if n not in node_cpus))

    # cpu_to_node(): the cpuN/nodeM link is the kernel's own answer; the node lists are
    # built separately and can disagree on buggy firmware, so they only fill gaps.
    listed: dict[int, list[int]] = {}
    for n, (_, cpus) in node_cpus.items():
        for cpu in cpus:
            listed.setdefault(cpu, []).append(n)
    node_of: dict[int, int] = {}
    node_source: dict[int, str] = {}
    links_seen = 0
    for cpu in possible:
        links = source.list_dir(f"{CPU_DIR}/cpu{cpu}", _NODE_ENTRY)
        if links:
            links_seen += 1
            node = int(links[0][4:])
            node_of[cpu], node_source[cpu] = node, BY_LINK
            in_lists = listed.get(cpu, [])
            if in_lists and node not in in_lists:
                notes.append(f"CPU {cpu}: link cpu{cpu}/node{node} disagrees with the node "
                             f"list(s) of node {','.join(map(str, in_lists))}; following the "
                             "link, which is what cpu_to_node() returns")
        elif cpu in listed:
            node_of[cpu] = listed[cpu][0]
            node_source[cpu] = node_cpus[listed[cpu][0]][0]
            if len(listed[cpu]) > 1:
                notes.append(f"CPU {cpu} is listed by several nodes ({listed[cpu]}); "
                             f"taking node {listed[cpu][0]}")
    if present and links_seen == 0:
        missing.append(f"/{CPU_DIR}/cpuN/nodeM links")

    online_nodes = _cpulist_file(source, f"{NODE_DIR}/online", notes)
    if online_nodes is None:
        online_nodes = nodes or [0]
    unplaced = [cpu for cpu in possible if cpu not in node_of]
    if unplaced:
        if len(online_nodes) <= 1 and not node_cpus:
            # No NUMA information at all: a kernel without NUMA (or with one node)
            # maps every CPU to node 0.
            for cpu in unplaced:
                node_of[cpu], node_source[cpu] = (online_nodes or [0])[0], BY_SINGLE
        else:
            # sysfs shows no node for CPUs that are possible but not present. The kernel
            # took their node from the firmware's SRAT at boot (init_cpu_to_node()); for
            # CPUs SRAT does not name, numa_init_array() (arch/x86/mm/numa.c) dealt them
            # round-robin over the online nodes in CPU order. SRAT is not visible from
            # userspace, so the plan uses the round-robin placement and flags it.
            rr = 0
            for cpu in unplaced:
                node_of[cpu], node_source[cpu] = online_nodes[rr % len(online_nodes)], BY_ROUND_ROBIN
                rr += 1
            notes.append(f"CPU(s) {format_cpulist(unplaced)} have no node in sysfs (possible but not "
                         "present, or in no node list): placed round-robin over the online "
                         "nodes as numa_init_array() does; the firmware's SRAT may say otherwise")

    with_memory = _cpulist_file(source, f"{NODE_DIR}/has_memory", notes)
    if with_memory is None and node_entries is not None:
        missing.append(f"/{NODE_DIR}/has_memory")
    distance = _read_distances(source, nodes, notes)
    serving = _serving_nodes(sorted(set(node_of.values()) | set(nodes)), with_memory,
                             distance, node_cpus, notes)
    return Topology(possible=possible, present=present, online=online, node_of=node_of,
                    node_source=node_source, nodes=nodes, nodes_with_memory=with_memory,
                    distance=distance, serving_node=serving, kernel_max=kernel_max,
                    notes=notes, missing=missing)


def _read_distances(source, nodes, notes) -> dict[int, dict[int, int]]:
    distance: dict[int, dict[int, int]] = {}
    for n in nodes:
        text = source.read_text(f"{NODE_DIR}/node{n}/distance")
        if text is None:
            continue
        values = text.split()
        if len(values) != len(nodes) or not all(v.isdigit() for v in values):
            notes.append(f"/{NODE_DIR}/node{n}/distance: {len(values)} entries for "
                         f"{len(nodes)} nodes; ignored")
            continue
        # The distance file lists one entry per online node in ascending node order.
        distance[n] = dict(zip(nodes, (int(v) for v in values)))
    return distance


def _serving_nodes(nodes, with_memory, distance, node_cpus, notes) -> dict[int, int]:
    """The node whose memory serves an order-0 allocation asked for on each node.

    A node with memory serves itself. A memoryless node has no zones of its own, so the
    allocation falls to the first node of its zonelist, which build_zonelists() orders
    with find_next_best_node() (mm/page_alloc.c): smallest distance, a penalty of one
    for a node below it and one for a node with CPUs; ties go to the lower id.
    """
    serving = {}
    if with_memory is None:
        return {n: n for n in nodes}
    for n in nodes:
        if n in with_memory:
            serving[n] = n
            continue
        if not with_memory:
            serving[n] = n
            continue
        row = distance.get(n)
        if row is None:
            best = min(with_memory)
            notes.append(f"node {n} has no memory and no distance table; assuming node "
                         f"{best} serves it")
        else:
            def cost(m):
                has_cpus = bool(node_cpus.get(m, (None, []))[1])
                return (row.get(m, 255) + (m < n) + has_cpus, m)
            best = min(with_memory, key=cost)
        serving[n] = best
    return serving
