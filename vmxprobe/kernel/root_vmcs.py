"""The root-VMCS plan of x86_vmx_init(): for each possible CPU, one zeroed order-0 page
on cpu_to_node(cpu) with the VMCS revision id in its first 32 bits; all or nothing.
vmxprobe.kernel.pages materialises it."""

from __future__ import annotations

from dataclasses import dataclass

from vmxprobe.host.topology import Topology
from vmxprobe.kernel.numa import NodeMap


@dataclass(frozen=True)
class PlannedPage:
    cpu: int
    node: int  # cpu_to_node(cpu): the node asked for
    serving_node: int  # the node whose memory serves it (differs for memoryless nodes)
    node_source: str  # how the node was found (host.topology.BY_*, kernel.numa.BY_*)
    present: bool
    online: bool


@dataclass(frozen=True)
class Plan:
    revision_id: int | None
    pages: tuple[PlannedPage, ...]
    # N_MEMORY of the host the plan is for; None when its sysfs does not say.
    nodes_with_memory: tuple[int, ...] | None = None
    # cpu/possible was not read: the pages cover the CPUs seen (present or online), and
    # the kernel, which allocates one per possible CPU, may allocate more.
    lower_bound: bool = False

    @property
    def header(self) -> int | None:
        # struct vmcs_hdr { u32 revision_id:31; u32 shadow_vmcs:1; }: bit 31 stays 0
        # in a root VMCS.
        return None if self.revision_id is None else self.revision_id & 0x7FFFFFFF

    @property
    def stamp(self) -> int:
        """What materialize() writes: the header, or 0 while the revision id is unknown."""
        return self.header or 0

    def by_node(self) -> dict[int, list[PlannedPage]]:
        out: dict[int, list[PlannedPage]] = {}
        for p in self.pages:
            out.setdefault(p.node, []).append(p)
        return dict(sorted(out.items()))


def build_plan(topo: Topology, nodes: NodeMap, revision_id: int | None) -> Plan:
    """One page per possible CPU, on cpu_to_node(cpu), served where the kernel serves it."""
    online, present = set(topo.online), set(topo.present)
    pages = tuple(
        PlannedPage(
            cpu=cpu,
            node=nodes.node_of[cpu],
            serving_node=nodes.serving_node.get(nodes.node_of[cpu], nodes.node_of[cpu]),
            node_source=nodes.node_source[cpu],
            present=cpu in present,
            online=cpu in online,
        )
        for cpu in topo.possible
    )
    return Plan(
        revision_id=revision_id,
        pages=pages,
        nodes_with_memory=None if topo.nodes_with_memory is None else tuple(topo.nodes_with_memory),
        lower_bound=not topo.possible_known,
    )
