"""CPUs and NUMA nodes as sysfs shows them: possible/present/online, cpu_to_node(),
node memory, the node distance table, and the node each page is really served from.

Every rule here is the x86_64 kernel's, so that the plan matches what x86_vmx_init()
(arch/x86/virt/hw.c) does at boot:

    for_each_possible_cpu(cpu)
        __alloc_pages_node(cpu_to_node(cpu), GFP_KERNEL | __GFP_ZERO, 0);

Read in the kernel sources: arch/x86/virt/hw.c (mainline 920da4f75519),
arch/x86/mm/numa.c (linux-next 0b17e729ed2c), mm/numa_memblks.c (mainline
1260ed777985), mm/page_alloc.c (linux-next c375bc2e935c), mm/mm_init.c and
init/main.c for the boot order.

Facts a dump may lack are listed in Topology.missing; disagreements between the facts
that are there, and the fallbacks taken, in Topology.notes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from vmxprobe.cpulist import CpulistError, format_cpulist, parse_cpulist, parse_cpumap
from vmxprobe.sources import CPU_DIR, NODE_DIR

_NODE_ENTRY = re.compile(r"node\d+")
_CPU_ENTRY = re.compile(r"cpu\d+")
_MEMTOTAL = re.compile(r"MemTotal:\s+([0-9]+)\s+kB")
_NUMBER = re.compile(r"[0-9]+")

# How the node of a CPU was found, best evidence first.
BY_LINK = "link"          # cpuN/nodeM: exactly cpu_to_node() (register_cpu_under_node())
BY_CPULIST = "cpulist"    # nodeM/cpulist holds the CPU
BY_CPUMAP = "cpumap"      # nodeM/cpumap holds the CPU
BY_SINGLE = "single-node" # no NUMA information: the kernel has only node 0
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

_MORE = 4  # examples shown in a note before "and N more"


@dataclass
class Topology:
    possible: list[int]
    present: list[int]
    online: list[int]
    node_of: dict[int, int]          # cpu_to_node(cpu), for every possible CPU
    node_source: dict[int, str]      # how node_of[cpu] was found
    nodes: list[int]                 # node ids known to sysfs (nodeN directories)
    nodes_with_memory: Optional[list[int]]  # N_MEMORY; None when sysfs does not say
    distance: dict[int, dict[int, int]]
    serving_node: dict[int, int]     # node a GFP_KERNEL page asked for on node N comes from
    kernel_max: Optional[int] = None
    beyond_kernel_max: list[int] = field(default_factory=list)  # named by a list, ignored
    notes: list[str] = field(default_factory=list)    # disagreements, fallbacks
    missing: list[str] = field(default_factory=list)  # facts sysfs did not have
    # The boot-time zonelist order of every possible node, as build_zonelists() prints
    # it ("Fallback order for Node N: ..."); computed when some CPU's node lacks normal
    # memory, empty otherwise.
    fallback_order: dict[int, list[int]] = field(default_factory=dict)
    nodes_with_normal_memory: Optional[list[int]] = None  # N_NORMAL_MEMORY


def _read(source, path) -> Optional[str]:
    # Node-state files of 2.6-era kernels end in "\n\0" (the terminating NUL was
    # counted in the length); the NUL is not part of the value.
    text = source.read_text(path)
    return None if text is None else text.replace("\x00", "")


def _cpulist_file(source, path, notes) -> Optional[list[int]]:
    text = _read(source, path)
    if text is None:
        return None
    try:
        return parse_cpulist(text)
    except CpulistError as e:
        notes.append(f"/{path}: {e}; ignored")
        return None


def _examples(items, render, limit=_MORE) -> str:
    items = list(items)
    shown = ", ".join(render(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _cpu_sets(source, notes, missing):
    """possible, present, online; with the fallbacks old kernels and partial dumps need."""
    possible = _cpulist_file(source, f"{CPU_DIR}/possible", notes)
    present = _cpulist_file(source, f"{CPU_DIR}/present", notes)
    online = _cpulist_file(source, f"{CPU_DIR}/online", notes)
    for name, value in (("possible", possible), ("present", present), ("online", online)):
        if value is None:
            missing.append(f"/{CPU_DIR}/{name}")
    cpu_dirs = None
    if present is None or online is None:
        entries = source.list_dir(CPU_DIR, _CPU_ENTRY) or []
        cpu_dirs = sorted(int(e[3:]) for e in entries)
    if present is None:
        # register_cpu() creates cpuN for every present CPU.
        present = cpu_dirs
    if online is None:
        # cpuN/online exists for every hot-pluggable CPU ("0" or "1"); the boot CPU
        # usually cannot be offlined and has none, so no file means online.
        online = []
        for cpu in cpu_dirs:
            state = source.read_text(f"{CPU_DIR}/cpu{cpu}/online")
            if state is None or state.strip() != "0":
                online.append(cpu)
    present = sorted(set(present) | set(online))
    if possible is None:
        possible = sorted(set(present) | set(online))
    possible = sorted(set(possible) | set(present))
    return possible, present, online


def _node_lists(source, nodes, notes, missing):
    """node -> (how, cpus) from nodeM/cpulist, or nodeM/cpumap (any width) without it."""
    node_cpus: dict[int, tuple[str, list[int]]] = {}
    from_map, without = [], []
    for n in nodes:
        cpus = _cpulist_file(source, f"{NODE_DIR}/node{n}/cpulist", notes)
        how = BY_CPULIST
        if cpus is None:
            text = _read(source, f"{NODE_DIR}/node{n}/cpumap")
            if text is not None:
                try:
                    cpus, how = parse_cpumap(text), BY_CPUMAP
                    from_map.append(n)
                except CpulistError as e:
                    notes.append(f"/{NODE_DIR}/node{n}/cpumap: {e}; ignored")
        if cpus is None:
            without.append(n)
        else:
            node_cpus[n] = (how, cpus)
    if from_map:
        missing.append(f"/{NODE_DIR}/nodeM/cpulist for node(s) {format_cpulist(from_map)} "
                       "(read the hex nodeM/cpumap instead)")
    if without:
        missing.append(f"/{NODE_DIR}/nodeM/cpulist and cpumap for node(s) "
                       f"{format_cpulist(without)}")
    return node_cpus


def _memory_nodes(source, nodes, notes, missing):
    """N_MEMORY and N_NORMAL_MEMORY, from has_memory and has_normal_memory.

    Kernels before 2.6.32 have has_normal_memory but no has_memory; on x86_64, which
    has no highmem, the two were the same set then. Without either, a node has memory
    when its meminfo says MemTotal > 0.
    """
    with_memory = _cpulist_file(source, f"{NODE_DIR}/has_memory", notes)
    normal = _cpulist_file(source, f"{NODE_DIR}/has_normal_memory", notes)
    if with_memory is None and normal is not None:
        with_memory = list(normal)
        missing.append(f"/{NODE_DIR}/has_memory (has_normal_memory used)")
    if with_memory is None and nodes:
        totals = {}
        for n in nodes:
            text = _read(source, f"{NODE_DIR}/node{n}/meminfo")
            m = _MEMTOTAL.search(text or "")
            if m is None:
                totals = None
                break
            totals[n] = int(m.group(1))
        if totals is not None:
            with_memory = [n for n in nodes if totals[n] > 0]
            missing.append(f"/{NODE_DIR}/has_memory (MemTotal of nodeM/meminfo used)")
    if with_memory is None:
        missing.append(f"/{NODE_DIR}/has_memory")
    elif normal is None:
        normal = list(with_memory)
        missing.append(f"/{NODE_DIR}/has_normal_memory")
    return with_memory, normal


def _read_distances(source, nodes, columns, notes) -> dict[int, dict[int, int]]:
    """nodeN/distance: node_read_distance() prints one entry per online node, ascending."""
    distance: dict[int, dict[int, int]] = {}
    for n in nodes:
        text = _read(source, f"{NODE_DIR}/node{n}/distance")
        if text is None:
            continue
        values = text.split()
        if not all(_NUMBER.fullmatch(v) for v in values):
            notes.append(f"/{NODE_DIR}/node{n}/distance: not a list of numbers; ignored")
            continue
        match = next(((what, c) for what, c in columns if len(c) == len(values)), None)
        if match is None:
            notes.append(f"/{NODE_DIR}/node{n}/distance: {len(values)} entries for "
                         f"{len(columns[0][1])} online nodes; ignored")
            continue
        what, cols = match
        if what != columns[0][0]:
            notes.append(f"/{NODE_DIR}/node{n}/distance has {len(values)} entries, one per "
                         f"{what} ({format_cpulist(cols)}), not one per online node: read "
                         "it that way")
        distance[n] = dict(zip(cols, (int(v) for v in values)))
    return distance


def _zonelists(possible_nodes, with_memory, distance, has_cpus):
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
    def dist(a, b):
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


def read_topology(source) -> Topology:
    notes: list[str] = []
    missing: list[str] = []

    possible, present, online = _cpu_sets(source, notes, missing)
    kmax_text = source.read_text(f"{CPU_DIR}/kernel_max")
    kernel_max = int(kmax_text) if kmax_text and _NUMBER.fullmatch(kmax_text.strip()) else None
    beyond: list[int] = []
    if kernel_max is not None:
        # kernel_max is NR_CPUS - 1 and nr_cpu_ids <= NR_CPUS: no kernel has a CPU above
        # it, so a list naming one is not the kernel's. Nothing is read or planned for
        # such ids; the verdict says the host could not be determined.
        beyond = sorted({c for c in possible if c > kernel_max})
        if beyond:
            notes.append(f"CPU(s) {format_cpulist(beyond)} are named by /{CPU_DIR}/possible, "
                         f"present or online but are beyond kernel_max {kernel_max} "
                         "(NR_CPUS - 1): no kernel can have them; ignored")
            possible = [c for c in possible if c <= kernel_max]
            present = [c for c in present if c <= kernel_max]
            online = [c for c in online if c <= kernel_max]

    node_entries = source.list_dir(NODE_DIR, _NODE_ENTRY)
    nodes = sorted(int(e[4:]) for e in node_entries or [])
    if node_entries is None:
        missing.append(f"/{NODE_DIR}")
    node_cpus = _node_lists(source, nodes, notes, missing)
    listed: dict[int, list[int]] = {}
    for n, (_, cpus) in sorted(node_cpus.items()):
        for cpu in cpus:
            listed.setdefault(cpu, []).append(n)

    # cpu_to_node(). The cpuN/nodeM link is the kernel's own answer: register_cpu()
    # makes it with register_cpu_under_node(cpu, cpu_to_node(cpu)). The node lists come
    # from node_to_cpumask_map (numa_add_cpu()), filled separately; they can disagree on
    # broken firmware, and they only show online CPUs, so they only fill gaps.
    node_of: dict[int, int] = {}
    node_source: dict[int, str] = {}
    links_seen = 0
    disagree: list[int] = []
    unlisted_online: list[int] = []
    several: list[int] = []
    present_set, online_set = set(present), set(online)
    for cpu in possible:
        links = source.list_dir(f"{CPU_DIR}/cpu{cpu}", _NODE_ENTRY) if cpu in present_set else None
        in_lists = listed.get(cpu, [])
        if links:
            links_seen += 1
            link_nodes = sorted(int(x[4:]) for x in links)
            node = link_nodes[0]
            if len(link_nodes) > 1:
                notes.append(f"CPU {cpu} has links to several nodes "
                             f"({format_cpulist(link_nodes)}); taking node {node}")
            node_of[cpu], node_source[cpu] = node, BY_LINK
            if in_lists and in_lists != [node]:
                disagree.append(cpu)
            elif not in_lists and cpu in online_set and node_cpus:
                unlisted_online.append(cpu)
        elif in_lists:
            node_of[cpu] = in_lists[0]
            node_source[cpu] = node_cpus[in_lists[0]][0]
            if len(in_lists) > 1:
                several.append(cpu)
    if present and links_seen == 0:
        missing.append(f"/{CPU_DIR}/cpuN/nodeM links")
    if disagree:
        notes.append(
            f"CPU(s) {format_cpulist(disagree)}: the cpuN/nodeM links ("
            + _examples(disagree, lambda c: f"cpu{c} -> node{node_of[c]}")
            + ") disagree with the node lists ("
            + _examples(disagree, lambda c: f"cpu{c} in node(s) {format_cpulist(listed[c])}")
            + "); following the links, which are what cpu_to_node() returns")
    if unlisted_online:
        targets = sorted({node_of[c] for c in unlisted_online})
        notes.append(
            f"CPU(s) {format_cpulist(unlisted_online)} are online and linked to node(s) "
            f"{format_cpulist(targets)}, but no node list holds them; following the "
            "links, which are what cpu_to_node() returns")
    if several:
        notes.append(f"CPU(s) {format_cpulist(several)} are listed by several nodes ("
                     + _examples(several, lambda c: f"cpu{c} in {format_cpulist(listed[c])}")
                     + ") and have no cpuN/nodeM link; taking the lowest node, as lscpu does")

    node_possible = _cpulist_file(source, f"{NODE_DIR}/possible", notes)
    node_online = _cpulist_file(source, f"{NODE_DIR}/online", notes)
    with_memory, normal = _memory_nodes(source, nodes, notes, missing)

    unplaced = [cpu for cpu in possible if cpu not in node_of]
    if unplaced:
        known = sorted(set(nodes) | set(node_online or []) | set(node_of.values()))
        if len(known) <= 1 and not node_cpus and not links_seen:
            # No NUMA information at all: a kernel without CONFIG_NUMA, or with one node
            # (dummy_numa_init()), has every CPU on node 0.
            single = known[0] if known else 0
            for cpu in unplaced:
                node_of[cpu], node_source[cpu] = single, BY_SINGLE
        else:
            _round_robin(unplaced, present_set, with_memory, node_online, nodes,
                         node_of, node_source, notes)

    offline_present = [cpu for cpu in present if cpu not in online_set]
    if offline_present:
        notes.append(f"CPU(s) {format_cpulist(offline_present)} are present but offline: "
                     "planned (x86_vmx_init() allocates for every possible CPU), not probed")
    stray = sorted({n for n in node_of.values() if nodes and n not in nodes})
    if stray:
        cpus = [c for c in possible if node_of[c] in stray and node_source[c] == BY_LINK]
        if cpus:
            notes.append(f"node(s) {format_cpulist(stray)} of CPU(s) {format_cpulist(cpus)} "
                         f"have no /{NODE_DIR}/nodeM directory (the node is not online)")

    # The distance file has one entry per online node; a dump edited after the fact
    # may still hold one per possible node.
    columns = [("online node", node_online if node_online is not None else nodes)]
    for what, alt in (("node directory", nodes), ("possible node", node_possible)):
        if alt is not None and all(alt != c for _, c in columns):
            columns.append((what, alt))
    distance = _read_distances(source, nodes, columns, notes)

    all_nodes = sorted(set(node_possible or []) | set(nodes) | set(node_of.values()))
    serving, order = _serving_nodes(all_nodes, node_of, online, with_memory, normal, distance,
                                    notes, missing)
    return Topology(possible=possible, present=present, online=online, node_of=node_of,
                    node_source=node_source, nodes=nodes, nodes_with_memory=with_memory,
                    distance=distance, serving_node=serving, kernel_max=kernel_max, beyond_kernel_max=beyond,
                    notes=notes, missing=missing, fallback_order=order,
                    nodes_with_normal_memory=normal)


def _round_robin(unplaced, present_set, with_memory, node_online, nodes, node_of,
                 node_source, notes):
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
    rule = (f"as numa_init_array() does: CPU i on the (i mod {len(rr_nodes)})-th of the "
            f"{what} {format_cpulist(rr_nodes)}")
    if absent:
        notes.append(f"CPU(s) {format_cpulist(absent)} are possible but not present (no sysfs "
                     f"entry): planned, and placed {rule}; a hot-add would move each to "
                     "its firmware (_PXM) node")
    if placed:
        notes.append(f"CPU(s) {format_cpulist(placed)} are present but in no node list and "
                     f"have no cpuN/nodeM link: placed {rule}; the firmware's SRAT may have "
                     "said otherwise")


def _serving_nodes(all_nodes, node_of, online, with_memory, normal, distance, notes,
                   missing):
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
    normal_set = set(normal)
    if all(n in normal_set for n in planned):
        # Every page is asked for on a node with normal memory: it serves itself, and
        # the zonelists (quadratic in the number of nodes) are not needed.
        return serving, {}
    order, ties = _zonelists(all_nodes, with_memory, distance, lambda n: False)

    def first_normal(lst):
        return next((n for n in lst if n in normal_set), None)

    needy = [n for n in planned if n not in normal_set]
    unknown_rows = [n for n in needy if n not in distance]
    if unknown_rows:
        missing.append(f"/{NODE_DIR}/node{{{format_cpulist(unknown_rows)}}}/distance "
                       "(taken as REMOTE_DISTANCE to every node)")
    for n in all_nodes:
        s = first_normal(order[n])
        serving[n] = n if s is None else s
    rebuilt = None
    for n in needy:
        s = first_normal(order[n])
        if s is None:
            notes.append(f"node {n}: no node has normal memory in its fallback list; the "
                         "page cannot be placed")
            continue
        why = "has no memory" if n not in with_memory else \
            "has memory but none a GFP_KERNEL page may use (not in has_normal_memory)"
        msg = f"node {n} {why}: its pages come from node {s}, first usable in its fallback " \
              f"order {' '.join(map(str, order[n]))}"
        if ties[n].get(s):
            msg += (f" (tied with node(s) {format_cpulist(ties[n][s])} on distance; "
                    "node_load[] and then the lower id decide, as in build_zonelists())")
        notes.append(msg)
        if rebuilt is None:
            # cpumask_of_node() then holds the node's online CPUs (numa_remove_cpu()
            # takes a CPU out when it goes offline).
            with_cpus = {node_of[c] for c in online}
            rebuilt, _ = _zonelists(all_nodes, with_memory, distance, lambda m: m in with_cpus)
        r = first_normal(rebuilt[n])
        if r is not None and r != s:
            notes.append(f"node {n}: zonelists rebuilt after a memory hot-add count the "
                         f"nodes' CPUs (PENALTY_FOR_NODE_WITH_CPUS) and would serve it from "
                         f"node {r}; the boot-time lists, which x86_vmx_init() uses, give "
                         f"node {s}")
    return serving, order
