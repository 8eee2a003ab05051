"""The root-VMCS plan of x86_vmx_init(): for each possible CPU, one zeroed order-0 page
on cpu_to_node(cpu) with the VMCS revision id in its first 32 bits; all or nothing.

materialize() mirrors the allocation with one anonymous mmap of PAGE_SIZE per possible
CPU: mmap hands out page-aligned, zero-filled memory, as __GFP_ZERO does. On a live scan
of this machine each page is first bound to the node that serves it (Placement), so the
kernel itself puts it there and can be asked where it landed.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import mmap
import os
import struct
from dataclasses import dataclass, field
from typing import Callable, Optional

from vmxprobe.topology import Topology
from vmxprobe.vmx import PAGE_SIZE

# Placement modes (report["plan"]["placement"]).
BOUND = "bound"          # this machine, NUMA calls answered: bound, and checked by the kernel
UNBOUND = "unbound"      # this machine, but the kernel answers no NUMA calls
SIMULATED = "simulated"  # a fixture or another root: its nodes are not this machine's

POLICY = "mbind(MPOL_BIND, MPOL_MF_STRICT)"
BY_MOVE_PAGES = "move_pages"
BY_GET_MEMPOLICY = "get_mempolicy(MPOL_F_NODE|MPOL_F_ADDR)"
# Placement mismatches listed page by page; the rest are counted per node.
MAX_MISMATCHES = 64

_ZERO_TAIL = bytes(PAGE_SIZE - 4)


@dataclass
class PlannedPage:
    cpu: int
    node: int            # cpu_to_node(cpu): the node asked for
    serving_node: int    # the node whose memory serves it (differs for memoryless nodes)
    node_source: str     # how the node was found (topology.BY_*)
    present: bool
    online: bool


@dataclass
class Plan:
    revision_id: Optional[int]
    pages: list[PlannedPage]
    # N_MEMORY of the host the plan is for; None when its sysfs does not say.
    nodes_with_memory: Optional[list[int]] = None

    @property
    def header(self) -> Optional[int]:
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


def build_plan(topo: Topology, revision_id: Optional[int]) -> Plan:
    online, present = set(topo.online), set(topo.present)
    pages = [PlannedPage(cpu=cpu, node=topo.node_of[cpu],
                         serving_node=topo.serving_node.get(topo.node_of[cpu], topo.node_of[cpu]),
                         node_source=topo.node_source[cpu], present=cpu in present,
                         online=cpu in online)
             for cpu in topo.possible]
    return Plan(revision_id=revision_id, pages=pages,
                nodes_with_memory=None if topo.nodes_with_memory is None
                else list(topo.nodes_with_memory))


def _address(buf: mmap.mmap) -> int:
    ref = ctypes.c_char.from_buffer(buf)
    try:
        return ctypes.addressof(ref)
    finally:
        del ref  # an exported buffer cannot be closed


@dataclass
class Materialized:
    """The allocated pages, cpu -> mmap. Use as a context manager: pages are released
    when it exits, deterministically, not at garbage collection."""
    pages: dict[int, mmap.mmap] = field(default_factory=dict)
    failed_cpu: Optional[int] = None
    error: Optional[str] = None
    errno: Optional[str] = None   # errno name of the failure (ENOMEM, EINVAL, ...)

    @property
    def ok(self) -> bool:
        return self.failed_cpu is None

    def address(self, cpu: int) -> int:
        return _address(self.pages[cpu])

    def verify(self, header: int, plan: Optional[Plan] = None,
               placement: Optional["Placement"] = None) -> dict:
        """Check every page: aligned to PAGE_SIZE, PAGE_SIZE long, header then zeros; and,
        given the plan and its placement, where the kernel says each page is."""
        want = struct.pack("<I", header)
        problems_of: dict[int, list[str]] = {}
        for cpu, buf in self.pages.items():
            problems = []
            if _address(buf) % PAGE_SIZE:
                problems.append("not page-aligned")
            if len(buf) != PAGE_SIZE:
                problems.append(f"size {len(buf)}")
            if buf[:4] != want:
                problems.append(f"header {buf[:4].hex()}")
            if buf[4:] != _ZERO_TAIL:
                problems.append("non-zero tail")
            if problems:
                problems_of[cpu] = problems
        where = None
        if plan is not None and placement is not None:
            where = placement.check(self, plan)
            for miss in where["mismatches"]:
                kernel = miss["kernel"]
                problems_of.setdefault(miss["cpu"], []).append(
                    f"on node {kernel}, not node {miss['serving_node']}" if isinstance(kernel, int)
                    else f"the kernel gives no node ({kernel})")
            where["mismatches"] = where["mismatches"][:MAX_MISMATCHES]
        bad = [{"cpu": cpu, "problems": problems_of[cpu]} for cpu in sorted(problems_of)]
        result = {"pages": len(self.pages), "ok": len(self.pages) - len(bad), "bad": bad}
        if where is not None:
            result["placement"] = where
        return result

    def release(self) -> None:
        for buf in self.pages.values():
            buf.close()
        self.pages.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _anonymous_page() -> mmap.mmap:
    return mmap.mmap(-1, PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                     prot=mmap.PROT_READ | mmap.PROT_WRITE)


def materialize(plan: Plan, allocate: Callable[[], mmap.mmap] = _anonymous_page,
                place: Optional[Callable[[mmap.mmap, PlannedPage], None]] = None) -> Materialized:
    """Allocate one page per possible CPU and stamp the header, or nothing at all.

    `place` (optional) is called on each fresh page before it is first written, to bind
    it to its node; an OSError from it counts as a failed allocation, as a page the
    kernel cannot get on the node would.
    """
    m = Materialized()
    header = struct.pack("<I", plan.stamp)
    for page in plan.pages:
        try:
            buf = allocate()
            if place is not None:
                try:
                    place(buf, page)
                except BaseException:
                    buf.close()
                    raise
        except (OSError, MemoryError, ValueError) as e:
            # x86_vmx_exit(): free every page taken so far; the caller reports -ENOMEM.
            m.release()
            m.failed_cpu = page.cpu
            if isinstance(e, OSError) and e.errno:
                m.errno = errno_mod.errorcode.get(e.errno, str(e.errno))
                m.error = e.strerror or str(e)
            else:
                m.errno = "ENOMEM" if isinstance(e, MemoryError) else None
                m.error = str(e) or type(e).__name__
            return m
        buf[0:4] = header
        m.pages[page.cpu] = buf
    return m


def _errno_name(code: Optional[int]) -> str:
    return errno_mod.errorcode.get(code or 0, str(code))


def _bind_failure(code: Optional[int], page: PlannedPage) -> str:
    """Why mbind(2) refused a page, in words that keep a misfit apart from a shortage."""
    s = page.serving_node
    head = f"mbind(2) of CPU {page.cpu}'s page to node {s} failed with {_errno_name(code)}"
    if code == errno_mod.EINVAL:
        exists = os.path.isdir(f"/sys/devices/system/node/node{s}")
        return (f"{head}: node {s} {'has no memory' if exists else 'does not exist'} on this "
                "machine, so the plan does not fit it (not a shortage of memory)")
    if code == errno_mod.ENOMEM:
        return f"{head}: the kernel is out of memory"
    if code == errno_mod.EIO:
        return f"{head}: the page was already present on another node (MPOL_MF_STRICT)"
    if code == errno_mod.EPERM:
        return f"{head}: a seccomp filter or the cpuset forbids binding memory to node {s}"
    return f"{head}: {os.strerror(code) if code else 'unknown error'}"


def failure_reason(m: Materialized) -> str:
    """One line: which page could not be had, and why."""
    if m.error and m.error.startswith("mbind(2)"):
        return m.error
    what = f"mmap(2) of CPU {m.failed_cpu}'s page failed"
    if m.errno:
        what += f" with {m.errno}"
    return f"{what}: {m.error}" if m.error else what


class Placement:
    """Where materialize() puts the pages, and how the kernel is asked afterwards.

    BOUND: each page is bound with mbind(MPOL_BIND, MPOL_MF_STRICT) to the node that
    serves it before it is first touched, then the kernel says where every page landed
    (move_pages(2), or get_mempolicy(2) where move_pages is unavailable).
    UNBOUND: the kernel answers no NUMA policy call here; `why` says why.
    SIMULATED: the plan is another host's (fixture, --root): binding to this machine's
    nodes of the same numbers would prove nothing about that host, so nothing is bound.
    """

    SIMULATED_WHY = ("the plan is for another host (a fixture or a --root tree): its nodes "
                     "are not this machine's, so no page was bound to a node here")

    def __init__(self, mode: str, why: str = ""):
        self.mode, self.why = mode, why

    @classmethod
    def for_source(cls, live_here: bool) -> "Placement":
        if not live_here:
            return cls(SIMULATED, cls.SIMULATED_WHY)
        from vmxprobe import numa
        available, why = numa.numa_status()
        if not available:
            return cls(UNBOUND, f"{why}; pages are not bound")
        # A sandbox may answer get_mempolicy(2) and still refuse mbind(2): that says
        # nothing about the host's nodes and must not become a failed page (-ENOMEM).
        buf = _anonymous_page()
        try:
            numa.bind_local(_address(buf), PAGE_SIZE)
        except OSError as e:
            if e.errno in (errno_mod.EPERM, errno_mod.ENOSYS):
                return cls(UNBOUND, f"mbind(2) fails with {_errno_name(e.errno)} here (a "
                                    "seccomp filter); pages are not bound")
        finally:
            buf.close()
        return cls(BOUND)

    @property
    def place(self) -> Optional[Callable[[mmap.mmap, PlannedPage], None]]:
        return self._bind if self.mode == BOUND else None

    @staticmethod
    def _bind(buf: mmap.mmap, page: PlannedPage) -> None:
        from vmxprobe import numa
        try:
            numa.bind_to_node(_address(buf), PAGE_SIZE, page.serving_node)
        except OSError as e:
            raise OSError(e.errno, _bind_failure(e.errno, page)) from None

    def check(self, m: Materialized, plan: Plan) -> dict:
        """Per node: pages planned, bound, and found by the kernel on the serving node."""
        out = {"mode": self.mode, "policy": POLICY if self.mode == BOUND else None,
               "method": None, "why": self.why or None}
        pages = [p for p in plan.pages if p.cpu in m.pages]
        answers: dict[int, int] = {}
        if self.mode == BOUND:
            out["method"], answers = _ask_kernel([p.cpu for p in pages], m)
        nodes: dict[int, dict] = {}
        mismatches = []
        for p in pages:
            entry = nodes.setdefault(p.node, {
                "node": p.node, "serving_node": p.serving_node, "pages": 0, "placed": 0,
                "verified_on_node": 0 if self.mode == BOUND else None,
                "elsewhere": {}, "unanswered": {}})
            entry["pages"] += 1
            if self.mode != BOUND:
                continue
            entry["placed"] += 1
            got = answers[p.cpu]
            if got == p.serving_node:
                entry["verified_on_node"] += 1
                continue
            if got >= 0:
                entry["elsewhere"][str(got)] = entry["elsewhere"].get(str(got), 0) + 1
                kernel = got
            else:
                kernel = _errno_name(-got)
                entry["unanswered"][kernel] = entry["unanswered"].get(kernel, 0) + 1
            mismatches.append({"cpu": p.cpu, "node": p.node, "serving_node": p.serving_node,
                               "kernel": kernel})
        if self.mode == BOUND:
            for entry in nodes.values():
                if entry["serving_node"] != entry["node"]:
                    entry["kernel_fallback"] = _fallback_check(plan, entry["node"],
                                                               entry["serving_node"])
        out["nodes"] = [nodes[n] for n in sorted(nodes)]
        out["placed"] = sum(e["placed"] for e in out["nodes"])
        out["verified_on_node"] = (sum(e["verified_on_node"] for e in out["nodes"])
                                   if self.mode == BOUND else None)
        # Listed in full here; verify() keeps the first MAX_MISMATCHES in the report.
        out["mismatches"] = mismatches
        out["mismatches_total"] = len(mismatches)
        return out


def _ask_kernel(cpus: list[int], m: Materialized) -> tuple[str, dict[int, int]]:
    """cpu -> node the kernel reports for its page (or -errno). move_pages(2) answers for
    every page in one call and faults nothing in; get_mempolicy(2) is the fallback for
    kernels without CONFIG_MIGRATION."""
    from vmxprobe import numa
    addrs = [m.address(c) for c in cpus]
    try:
        return BY_MOVE_PAGES, dict(zip(cpus, numa.page_status(addrs)))
    except OSError:
        pass
    answers = {}
    for cpu, addr in zip(cpus, addrs):
        try:
            answers[cpu] = numa.node_of_address(addr)
        except OSError as e:
            answers[cpu] = -(e.errno or errno_mod.EINVAL)
    return BY_GET_MEMPOLICY, answers


def _fallback_check(plan: Plan, node: int, serving: int) -> dict:
    """Ask the kernel which node it falls back to for `node`, independently of the plan.

    A page with the MPOL_LOCAL policy, first touched by a thread pinned to an online
    CPU of `node`, is allocated through node_zonelist(node), the fallback list
    __alloc_pages_node(node, ...) walks in x86_vmx_init(). For a node without memory
    the node it lands on is therefore the kernel's own choice of serving node. Only
    memoryless nodes are asked: a node whose memory is all ZONE_MOVABLE would take a
    user page itself, where a GFP_KERNEL page may not go.
    """
    from vmxprobe import numa
    result = {"cpu": None, "landed_on": None, "agrees": None}
    if plan.nodes_with_memory is None or node in plan.nodes_with_memory:
        result["unchecked"] = (f"node {node} has memory that a user page may use but "
                               "GFP_KERNEL may not (ZONE_MOVABLE): a user page would not "
                               "show the kernel's fallback") if plan.nodes_with_memory \
            is not None else "which nodes have memory is unknown"
        return result
    try:
        allowed = os.sched_getaffinity(0)
    except OSError as e:
        result["unchecked"] = f"sched_getaffinity(2) failed with {_errno_name(e.errno)}"
        return result
    cpu = next((p.cpu for p in plan.pages if p.node == node and p.online and p.cpu in allowed),
               None)
    if cpu is None:
        result["unchecked"] = (f"no online CPU of node {node} is in this process's affinity "
                               "mask to fault a page from")
        return result
    result["cpu"] = cpu
    buf = _anonymous_page()
    try:
        addr = _address(buf)
        numa.bind_local(addr, PAGE_SIZE)
        try:
            # sched_setaffinity(2) moves the thread onto the CPU before it returns.
            os.sched_setaffinity(0, {cpu})
            buf[0] = 1
        finally:
            os.sched_setaffinity(0, allowed)
        landed = numa.page_status([addr])[0]
        if landed < 0:
            landed = numa.node_of_address(addr)
    except OSError as e:
        result["unchecked"] = f"the probe page failed with {_errno_name(e.errno)}"
        return result
    finally:
        buf.close()
    result["landed_on"] = landed
    result["agrees"] = landed == serving
    return result
