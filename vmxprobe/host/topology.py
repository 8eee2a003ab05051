"""CPUs and NUMA nodes as sysfs shows them: possible/present/online, the node of each
CPU that sysfs places (the cpuN/nodeM links, the node lists), node memory and the node
distance table. Where sysfs places no CPU, and which node really serves a page, are the
kernel's rules: vmxprobe.kernel.numa.

Facts a dump may lack are listed in Topology.missing; disagreements between the facts
that are there, and the fallbacks taken, in Topology.notes (the CPU and node lists) and
Topology.node_notes (offline CPUs, node directories, distances).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from vmxprobe.host.cpulist import MAX_CPU_ID, CpulistError, format_cpulist, parse_cpulist, parse_cpumap
from vmxprobe.host.sources import CPU_DIR, NODE_DIR, Source

# ASCII digits only (\d would take "٣"), and never more than a u64's 20: int() of a
# longer string is a step from Python's int-string limit, and no kernel prints one.
_NODE_ENTRY = re.compile(r"node[0-9]+")
_CPU_ENTRY = re.compile(r"cpu[0-9]+")
_MEMTOTAL = re.compile(r"MemTotal:\s+([0-9]{1,20})\s+kB")
_NUMBER = re.compile(r"[0-9]{1,20}")

# How the node of a CPU was found, best evidence first.
BY_LINK = "link"  # cpuN/nodeM: exactly cpu_to_node() (register_cpu_under_node())
BY_CPULIST = "cpulist"  # nodeM/cpulist holds the CPU
BY_CPUMAP = "cpumap"  # nodeM/cpumap holds the CPU

_MORE = 4  # examples shown in a note before "and N more"
T = TypeVar("T")


@dataclass
class Topology:
    """What sysfs shows of the host's CPUs and nodes."""

    possible: list[int]
    present: list[int]
    online: list[int]
    node_of: dict[int, int]  # the CPUs sysfs places: cpu -> node
    node_source: dict[int, str]  # how node_of[cpu] was found (BY_*)
    nodes: list[int]  # node ids known to sysfs (nodeN directories)
    node_possible: list[int] | None
    node_online: list[int] | None
    nodes_with_memory: list[int] | None  # N_MEMORY; None when sysfs does not say
    nodes_with_normal_memory: list[int] | None  # N_NORMAL_MEMORY
    distance: dict[int, dict[int, int]]
    node_lists_seen: bool = False  # some node listed CPUs (cpulist or cpumap)
    links_seen: bool = False  # some CPU had a cpuN/nodeM link
    kernel_max: int | None = None
    beyond_kernel_max: list[int] = field(default_factory=list)  # named by a list, ignored
    notes: list[str] = field(default_factory=list)  # the CPU and node lists
    node_notes: list[str] = field(default_factory=list)  # offline CPUs, nodes, distances
    missing: list[str] = field(default_factory=list)  # facts sysfs did not have
    # cpu/possible was read: without it the possible CPUs are only those seen present or
    # online, a lower bound of the kernel's cpu_possible_mask.
    possible_known: bool = True


def _read(source: Source, path: str) -> str | None:
    # Node-state files of 2.6-era kernels end in "\n\0" (the terminating NUL was
    # counted in the length); the NUL is not part of the value.
    text = source.read_text(path)
    return None if text is None else text.replace("\x00", "")


def _cpulist_file(source: Source, path: str, notes: list[str]) -> list[int] | None:
    text = _read(source, path)
    if text is None:
        return None
    try:
        return parse_cpulist(text)
    except CpulistError as e:
        notes.append(f"/{path}: {e}; ignored")
        return None


def _ids(entries: Iterable[str], prefix: str, where: str, notes: list[str]) -> list[int]:
    """The numbers of `cpuN` or `nodeN` directory entries. A number no kernel could
    have (past MAX_CPU_ID, or long enough to be past Python's int-string limit) is not
    a CPU or node: noted and ignored."""
    ids, junk = [], []
    for e in entries:
        digits = e[len(prefix) :]
        if len(digits) <= len(str(MAX_CPU_ID)) and int(digits) <= MAX_CPU_ID:
            ids.append(int(digits))
        else:
            junk.append(e if len(e) <= 20 else f"{e[:20]}... ({len(digits)} digits)")
    if junk:
        notes.append(f"/{where}: {', '.join(junk)}: not a {prefix} id a kernel could have; ignored")
    return sorted(ids)


def _examples(items: Iterable[T], render: Callable[[T], str], limit: int = _MORE) -> str:
    items = list(items)
    shown = ", ".join(render(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _cpu_sets(source: Source, notes: list[str], missing: list[str]) -> tuple[list[int], list[int], list[int]]:
    """possible, present, online; with the fallbacks old kernels and partial dumps need."""
    possible = _cpulist_file(source, f"{CPU_DIR}/possible", notes)
    present = _cpulist_file(source, f"{CPU_DIR}/present", notes)
    online = _cpulist_file(source, f"{CPU_DIR}/online", notes)
    for name, value in (("possible", possible), ("present", present), ("online", online)):
        if value is None:
            missing.append(f"/{CPU_DIR}/{name}")
    cpu_dirs: list[int] = []
    if present is None or online is None:
        entries = source.list_dir(CPU_DIR, _CPU_ENTRY) or []
        cpu_dirs = _ids(entries, "cpu", CPU_DIR, notes)
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


def _node_lists(
    source: Source, nodes: list[int], notes: list[str], missing: list[str]
) -> dict[int, tuple[str, list[int]]]:
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
        missing.append(
            f"/{NODE_DIR}/nodeM/cpulist for node(s) {format_cpulist(from_map)} "
            "(read the hex nodeM/cpumap instead)"
        )
    if without:
        missing.append(f"/{NODE_DIR}/nodeM/cpulist and cpumap for node(s) {format_cpulist(without)}")
    return node_cpus


def _memory_nodes(
    source: Source, nodes: list[int], notes: list[str], missing: list[str]
) -> tuple[list[int] | None, list[int] | None]:
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
        totals: dict[int, int] | None = {}
        for n in nodes:
            text = _read(source, f"{NODE_DIR}/node{n}/meminfo")
            m = _MEMTOTAL.search(text or "")
            if m is None or totals is None:
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


def _read_distances(
    source: Source, nodes: list[int], columns: list[tuple[str, list[int]]], notes: list[str]
) -> dict[int, dict[int, int]]:
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
            notes.append(
                f"/{NODE_DIR}/node{n}/distance: {len(values)} entries for "
                f"{len(columns[0][1])} online nodes; ignored"
            )
            continue
        what, cols = match
        if what != columns[0][0]:
            notes.append(
                f"/{NODE_DIR}/node{n}/distance has {len(values)} entries, one per "
                f"{what} ({format_cpulist(cols)}), not one per online node: read "
                "it that way"
            )
        distance[n] = dict(zip(cols, (int(v) for v in values)))
    return distance


@dataclass
class CpuSets:
    """The CPU lists, the first part of the topology: enough to start reading the
    online CPUs while the rest is read."""

    possible: list[int]
    present: list[int]
    online: list[int]
    kernel_max: int | None
    beyond_kernel_max: list[int]
    notes: list[str]
    missing: list[str]


def read_cpu_sets(source: Source) -> CpuSets:
    notes: list[str] = []
    missing: list[str] = []

    possible, present, online = _cpu_sets(source, notes, missing)
    kmax_text = source.read_text(f"{CPU_DIR}/kernel_max")
    kernel_max = int(kmax_text) if kmax_text and _NUMBER.fullmatch(kmax_text.strip()) else None
    if kernel_max is None and kmax_text and kmax_text.strip():
        notes.append(f"/{CPU_DIR}/kernel_max: not a number; ignored")
    beyond: list[int] = []
    if kernel_max is not None:
        # kernel_max is NR_CPUS - 1 and nr_cpu_ids <= NR_CPUS: no kernel has a CPU above
        # it, so a list naming one is not the kernel's. Nothing is read or planned for
        # such ids; the verdict says the host could not be determined.
        beyond = sorted({c for c in possible if c > kernel_max})
        if beyond:
            notes.append(
                f"CPU(s) {format_cpulist(beyond)} are named by /{CPU_DIR}/possible, "
                f"present or online but are beyond kernel_max {kernel_max} "
                "(NR_CPUS - 1): no kernel can have them; ignored"
            )
            possible = [c for c in possible if c <= kernel_max]
            present = [c for c in present if c <= kernel_max]
            online = [c for c in online if c <= kernel_max]
    return CpuSets(possible, present, online, kernel_max, beyond, notes, missing)


def read_topology(source: Source, cpu_sets: CpuSets | None = None) -> Topology:
    """The whole topology; `cpu_sets` when read_cpu_sets() already read the CPU lists."""
    sets = cpu_sets if cpu_sets is not None else read_cpu_sets(source)
    possible, present, online = sets.possible, sets.present, sets.online
    kernel_max, beyond = sets.kernel_max, sets.beyond_kernel_max
    notes, missing = list(sets.notes), list(sets.missing)

    node_entries = source.list_dir(NODE_DIR, _NODE_ENTRY)
    nodes = _ids(node_entries or [], "node", NODE_DIR, notes)
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
        link_nodes = _ids(links, "node", f"{CPU_DIR}/cpu{cpu}", notes) if links else []
        if link_nodes:
            links_seen += 1
            node = link_nodes[0]
            if len(link_nodes) > 1:
                notes.append(
                    f"CPU {cpu} has links to several nodes ({format_cpulist(link_nodes)}); taking node {node}"
                )
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
            + "); following the links, which are what cpu_to_node() returns"
        )
    if unlisted_online:
        targets = sorted({node_of[c] for c in unlisted_online})
        notes.append(
            f"CPU(s) {format_cpulist(unlisted_online)} are online and linked to node(s) "
            f"{format_cpulist(targets)}, but no node list holds them; following the "
            "links, which are what cpu_to_node() returns"
        )
    if several:
        notes.append(
            f"CPU(s) {format_cpulist(several)} are listed by several nodes ("
            + _examples(several, lambda c: f"cpu{c} in {format_cpulist(listed[c])}")
            + ") and have no cpuN/nodeM link; taking the lowest node, as lscpu does"
        )

    node_possible = _cpulist_file(source, f"{NODE_DIR}/possible", notes)
    node_online = _cpulist_file(source, f"{NODE_DIR}/online", notes)
    with_memory, normal = _memory_nodes(source, nodes, notes, missing)

    node_notes: list[str] = []
    offline_present = [cpu for cpu in present if cpu not in online_set]
    if offline_present:
        node_notes.append(
            f"CPU(s) {format_cpulist(offline_present)} are present but offline: "
            "planned (x86_vmx_init() allocates for every possible CPU), not probed"
        )
    stray = sorted({n for n in node_of.values() if nodes and n not in nodes})
    if stray:
        cpus = [c for c in possible if node_source.get(c) == BY_LINK and node_of[c] in stray]
        if cpus:
            node_notes.append(
                f"node(s) {format_cpulist(stray)} of CPU(s) {format_cpulist(cpus)} "
                f"have no /{NODE_DIR}/nodeM directory (the node is not online)"
            )

    # The distance file has one entry per online node; a dump edited after the fact
    # may still hold one per possible node.
    columns = [("online node", node_online if node_online is not None else nodes)]
    for what, alt in (("node directory", nodes), ("possible node", node_possible)):
        if alt is not None and all(alt != c for _, c in columns):
            columns.append((what, alt))
    distance = _read_distances(source, nodes, columns, node_notes)

    return Topology(
        possible=possible,
        present=present,
        online=online,
        node_of=node_of,
        node_source=node_source,
        nodes=nodes,
        node_possible=node_possible,
        node_online=node_online,
        nodes_with_memory=with_memory,
        nodes_with_normal_memory=normal,
        distance=distance,
        node_lists_seen=bool(node_cpus),
        links_seen=bool(links_seen),
        kernel_max=kernel_max,
        beyond_kernel_max=beyond,
        notes=notes,
        node_notes=node_notes,
        missing=missing,
        possible_known=f"/{CPU_DIR}/possible" not in missing,
    )
