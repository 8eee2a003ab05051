"""The root-VMCS plan of x86_vmx_init(): for each possible CPU, one zeroed order-0 page
on cpu_to_node(cpu) with the VMCS revision id in its first 32 bits; all or nothing.

materialize() mirrors the allocation with one anonymous mmap of PAGE_SIZE per possible
CPU: mmap hands out page-aligned, zero-filled memory, as __GFP_ZERO does.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
from dataclasses import dataclass, field
from typing import Callable, Optional

from vmxprobe.topology import Topology
from vmxprobe.vmx import PAGE_SIZE

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

    @property
    def header(self) -> Optional[int]:
        # struct vmcs_hdr { u32 revision_id:31; u32 shadow_vmcs:1; }: bit 31 stays 0
        # in a root VMCS.
        return None if self.revision_id is None else self.revision_id & 0x7FFFFFFF

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
    return Plan(revision_id=revision_id, pages=pages)


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

    @property
    def ok(self) -> bool:
        return self.failed_cpu is None

    def address(self, cpu: int) -> int:
        return _address(self.pages[cpu])

    def verify(self, header: int) -> dict:
        """Check every page: aligned to PAGE_SIZE, PAGE_SIZE long, header then zeros."""
        want = struct.pack("<I", header)
        bad = []
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
                bad.append({"cpu": cpu, "problems": problems})
        return {"pages": len(self.pages), "ok": len(self.pages) - len(bad), "bad": bad}

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
    header = struct.pack("<I", plan.header or 0)
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
            m.error = str(e) or type(e).__name__
            return m
        buf[0:4] = header
        m.pages[page.cpu] = buf
    return m
