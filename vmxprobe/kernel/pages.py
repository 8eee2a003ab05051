"""The root-VMCS plan made real: materialize() mirrors x86_vmx_init()'s allocation with
one anonymous mmap of PAGE_SIZE per possible CPU (mmap hands out page-aligned,
zero-filled memory, as __GFP_ZERO does), all or nothing; verify() checks every page.

On a live scan of this machine each page is first bound to the node that serves it
(Placement), so the kernel itself puts it there and can be asked where it landed.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno as errno_mod
import mmap
import os
import struct
from dataclasses import dataclass, field
from typing import Callable

from vmxprobe.arch.vmx import PAGE_SIZE
from vmxprobe.host import mempolicy
from vmxprobe.kernel.root_vmcs import Plan, PlannedPage

# Placement modes (report["plan"]["placement"]).
BOUND = "bound"  # this machine, NUMA calls answered: bound, and checked by the kernel
UNBOUND = "unbound"  # this machine, but the kernel answers no NUMA calls
SIMULATED = "simulated"  # a fixture or another root: its nodes are not this machine's

POLICY = "mbind(MPOL_BIND, MPOL_MF_STRICT)"
BY_MOVE_PAGES = "move_pages"
BY_GET_MEMPOLICY = "get_mempolicy(MPOL_F_NODE|MPOL_F_ADDR)"
# Placement mismatches listed page by page; the rest are counted per node.
MAX_MISMATCHES = 64

_ZERO_TAIL = bytes(PAGE_SIZE - 4)

PlaceFn = Callable[[mmap.mmap, PlannedPage], None]


@dataclass(frozen=True)
class Allocation:
    """The outcome of the allocation loop: every page, or the page that failed (after
    which every page taken was released, as x86_vmx_exit() does)."""

    ok: bool
    cpu: int | None = None
    node: int | None = None
    serving_node: int | None = None
    errno: str | None = None  # errno name of the failure (ENOMEM, EINVAL, ...)
    reason: str | None = None  # one line: which page, and why
    released: bool = True


@dataclass(frozen=True)
class BadPage:
    cpu: int
    problems: tuple[str, ...]


@dataclass(frozen=True)
class FallbackCheck:
    """The kernel's own fallback for a memoryless node, asked with a probe page."""

    cpu: int | None = None
    landed_on: int | None = None
    agrees: bool | None = None
    unchecked: str | None = None


@dataclass(frozen=True)
class NodePlacement:
    node: int
    serving_node: int
    pages: int
    placed: int
    verified_on_node: int | None
    elsewhere: dict[str, int]  # node -> pages the kernel found there instead
    unanswered: dict[str, int]  # errno name -> pages the kernel gave no node for
    kernel_fallback: FallbackCheck | None = None


@dataclass(frozen=True)
class Mismatch:
    cpu: int
    node: int
    serving_node: int
    kernel: int | str  # the node the kernel reports, or its errno name


@dataclass(frozen=True)
class PlacementCheck:
    mode: str
    policy: str | None
    method: str | None
    why: str | None
    nodes: tuple[NodePlacement, ...]
    placed: int
    verified_on_node: int | None
    mismatches: tuple[Mismatch, ...]  # the first MAX_MISMATCHES
    mismatches_total: int


@dataclass(frozen=True)
class Verification:
    """Every materialised page checked: aligned, PAGE_SIZE long, header then zeros, and
    where the kernel put it."""

    pages: int
    ok: int
    bad: tuple[BadPage, ...]
    placement: PlacementCheck | None
    stamped: int  # the header written into every page
    stamp_note: str | None
    kernel_allocates: bool  # False: x86_vmx_init() stops before allocating


def page_address(buf: mmap.mmap) -> int:
    """The address of the page an mmap holds."""
    ref = ctypes.c_char.from_buffer(buf)
    try:
        return ctypes.addressof(ref)
    finally:
        del ref  # an exported buffer cannot be closed


def _errno_name(code: int | None) -> str:
    return errno_mod.errorcode.get(code or 0, str(code))


@dataclass
class Materialized:
    """The allocated pages, cpu -> mmap. Use as a context manager: pages are released
    when it exits, deterministically, not at garbage collection."""

    pages: dict[int, mmap.mmap] = field(default_factory=dict)
    failed: PlannedPage | None = None
    error: str | None = None
    errno: str | None = None  # errno name of the failure (ENOMEM, EINVAL, ...)

    @property
    def ok(self) -> bool:
        return self.failed is None

    @property
    def failed_cpu(self) -> int | None:
        return None if self.failed is None else self.failed.cpu

    def address(self, cpu: int) -> int:
        return page_address(self.pages[cpu])

    def outcome(self) -> Allocation:
        """The allocation's outcome, as a value."""
        page = self.failed
        if page is None:
            return Allocation(ok=True)
        return Allocation(
            False,
            page.cpu,
            page.node,
            page.serving_node,
            self.errno,
            failure_reason(self),
            released=not self.pages,
        )

    def verify(
        self, plan: Plan, placement: Placement | None = None, kernel_allocates: bool = True
    ) -> Verification:
        """Check every page: aligned to PAGE_SIZE, PAGE_SIZE long, header then zeros; and,
        given the placement, where the kernel says each page is."""
        want = struct.pack("<I", plan.stamp)
        problems_of: dict[int, list[str]] = {}
        for cpu, buf in self.pages.items():
            problems = []
            if page_address(buf) % PAGE_SIZE:
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
        if placement is not None:
            where = placement.check(self, plan)
            for miss in where.mismatches:
                kernel = miss.kernel
                problems_of.setdefault(miss.cpu, []).append(
                    f"on node {kernel}, not node {miss.serving_node}"
                    if isinstance(kernel, int)
                    else f"the kernel gives no node ({kernel})"
                )
            where = dataclasses.replace(where, mismatches=where.mismatches[:MAX_MISMATCHES])
        bad = tuple(BadPage(cpu, tuple(problems_of[cpu])) for cpu in sorted(problems_of))
        note = None
        if plan.header is None:
            note = "revision id unknown (IA32_VMX_BASIC unreadable or 0): pages stamped 0x00000000"
        return Verification(
            len(self.pages), len(self.pages) - len(bad), bad, where, plan.stamp, note, kernel_allocates
        )

    def release(self) -> None:
        for buf in self.pages.values():
            buf.close()
        self.pages.clear()

    def __enter__(self) -> Materialized:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def anonymous_page() -> mmap.mmap:
    """One private, zero-filled, page-aligned page: what __GFP_ZERO gives the kernel."""
    return mmap.mmap(
        -1, PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=mmap.PROT_READ | mmap.PROT_WRITE
    )


def materialize(
    plan: Plan, allocate: Callable[[], mmap.mmap] = anonymous_page, place: PlaceFn | None = None
) -> Materialized:
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
            m.failed = page
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


def bind_failure(code: int | None, page: PlannedPage) -> str:
    """Why mbind(2) refused a page, in words that keep a misfit apart from a shortage."""
    s = page.serving_node
    head = f"mbind(2) of CPU {page.cpu}'s page to node {s} failed with {_errno_name(code)}"
    if code == errno_mod.EINVAL:
        exists = os.path.isdir(f"/sys/devices/system/node/node{s}")
        return (
            f"{head}: node {s} {'has no memory' if exists else 'does not exist'} on this "
            "machine, so the plan does not fit it (not a shortage of memory)"
        )
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

    SIMULATED_WHY = (
        "the plan is for another host (a fixture or a --root tree): its nodes "
        "are not this machine's, so no page was bound to a node here"
    )

    def __init__(self, mode: str, why: str = ""):
        self.mode, self.why = mode, why

    @classmethod
    def for_source(cls, live_here: bool) -> Placement:
        if not live_here:
            return cls(SIMULATED, cls.SIMULATED_WHY)
        available, why = mempolicy.numa_status()
        if not available:
            return cls(UNBOUND, f"{why}; pages are not bound")
        # A sandbox may answer get_mempolicy(2) and still refuse mbind(2): that says
        # nothing about the host's nodes and must not become a failed page (-ENOMEM).
        buf = anonymous_page()
        try:
            mempolicy.bind_local(page_address(buf), PAGE_SIZE)
        except OSError as e:
            if e.errno in (errno_mod.EPERM, errno_mod.ENOSYS):
                return cls(
                    UNBOUND,
                    f"mbind(2) fails with {_errno_name(e.errno)} here (a "
                    "seccomp filter); pages are not bound",
                )
        finally:
            buf.close()
        return cls(BOUND)

    @property
    def place(self) -> PlaceFn | None:
        return self._bind if self.mode == BOUND else None

    @staticmethod
    def _bind(buf: mmap.mmap, page: PlannedPage) -> None:
        try:
            mempolicy.bind_to_node(page_address(buf), PAGE_SIZE, page.serving_node)
        except OSError as e:
            raise OSError(e.errno, bind_failure(e.errno, page)) from None

    def check(self, m: Materialized, plan: Plan) -> PlacementCheck:
        """Per node: pages planned, bound, and found by the kernel on the serving node.
        Every mismatch is listed; verify() keeps the first MAX_MISMATCHES."""
        pages = [p for p in plan.pages if p.cpu in m.pages]
        answers: dict[int, int] = {}
        method = None
        if self.mode == BOUND:
            method, answers = _ask_kernel([p.cpu for p in pages], m)
        counts: dict[int, dict[str, int]] = {}
        elsewhere: dict[int, dict[str, int]] = {}
        unanswered: dict[int, dict[str, int]] = {}
        serving_of: dict[int, int] = {}
        mismatches = []
        for p in pages:
            c = counts.setdefault(p.node, {"pages": 0, "placed": 0, "verified": 0})
            serving_of.setdefault(p.node, p.serving_node)
            elsewhere.setdefault(p.node, {})
            unanswered.setdefault(p.node, {})
            c["pages"] += 1
            if self.mode != BOUND:
                continue
            c["placed"] += 1
            got = answers[p.cpu]
            if got == p.serving_node:
                c["verified"] += 1
                continue
            kernel: int | str
            if got >= 0:
                elsewhere[p.node][str(got)] = elsewhere[p.node].get(str(got), 0) + 1
                kernel = got
            else:
                kernel = _errno_name(-got)
                unanswered[p.node][kernel] = unanswered[p.node].get(kernel, 0) + 1
            mismatches.append(Mismatch(p.cpu, p.node, p.serving_node, kernel))
        nodes = []
        for n in sorted(counts):
            c, serving = counts[n], serving_of[n]
            fallback = None
            if self.mode == BOUND and serving != n:
                fallback = fallback_check(plan, n, serving)
            nodes.append(
                NodePlacement(
                    n,
                    serving,
                    c["pages"],
                    c["placed"],
                    c["verified"] if self.mode == BOUND else None,
                    elsewhere[n],
                    unanswered[n],
                    fallback,
                )
            )
        return PlacementCheck(
            mode=self.mode,
            policy=POLICY if self.mode == BOUND else None,
            method=method,
            why=self.why or None,
            nodes=tuple(nodes),
            placed=sum(n.placed for n in nodes),
            verified_on_node=(sum(n.verified_on_node or 0 for n in nodes) if self.mode == BOUND else None),
            mismatches=tuple(mismatches),
            mismatches_total=len(mismatches),
        )


def _ask_kernel(cpus: list[int], m: Materialized) -> tuple[str, dict[int, int]]:
    """cpu -> node the kernel reports for its page (or -errno). move_pages(2) answers for
    every page in one call and faults nothing in; get_mempolicy(2) is the fallback for
    kernels without CONFIG_MIGRATION."""
    addrs = [m.address(c) for c in cpus]
    try:
        return BY_MOVE_PAGES, dict(zip(cpus, mempolicy.page_status(addrs)))
    except OSError:
        pass
    answers = {}
    for cpu, addr in zip(cpus, addrs):
        try:
            answers[cpu] = mempolicy.node_of_address(addr)
        except OSError as e:
            answers[cpu] = -(e.errno or errno_mod.EINVAL)
    return BY_GET_MEMPOLICY, answers


def fallback_check(plan: Plan, node: int, serving: int) -> FallbackCheck:
    """Ask the kernel which node it falls back to for `node`, independently of the plan.

    A page with the MPOL_LOCAL policy, first touched by a thread pinned to an online
    CPU of `node`, is allocated through node_zonelist(node), the fallback list
    __alloc_pages_node(node, ...) walks in x86_vmx_init(). For a node without memory
    the node it lands on is therefore the kernel's own choice of serving node. Only
    memoryless nodes are asked: a node whose memory is all ZONE_MOVABLE would take a
    user page itself, where a GFP_KERNEL page may not go.
    """
    if plan.nodes_with_memory is None or node in plan.nodes_with_memory:
        return FallbackCheck(
            unchecked=(
                f"node {node} has memory that a user page may use but GFP_KERNEL may not "
                "(ZONE_MOVABLE): a user page would not show the kernel's fallback"
            )
            if plan.nodes_with_memory is not None
            else "which nodes have memory is unknown"
        )
    try:
        allowed = os.sched_getaffinity(0)
    except OSError as e:
        return FallbackCheck(unchecked=f"sched_getaffinity(2) failed with {_errno_name(e.errno)}")
    cpu = next((p.cpu for p in plan.pages if p.node == node and p.online and p.cpu in allowed), None)
    if cpu is None:
        return FallbackCheck(
            unchecked=f"no online CPU of node {node} is in this process's affinity mask to fault a page from"
        )
    buf = anonymous_page()
    try:
        addr = page_address(buf)
        mempolicy.bind_local(addr, PAGE_SIZE)
        try:
            # sched_setaffinity(2) moves the thread onto the CPU before it returns.
            os.sched_setaffinity(0, {cpu})
            buf[0] = 1
        finally:
            os.sched_setaffinity(0, allowed)
        landed = mempolicy.page_status([addr])[0]
        if landed < 0:
            landed = mempolicy.node_of_address(addr)
    except OSError as e:
        return FallbackCheck(cpu=cpu, unchecked=f"the probe page failed with {_errno_name(e.errno)}")
    finally:
        buf.close()
    return FallbackCheck(cpu, landed, landed == serving)
