"""NUMA placement of memory pages through the raw Linux syscalls.

Uses ctypes on libc's syscall(), so it needs neither libnuma nor any Python
package. Only x86_64 syscall numbers are known; elsewhere every call fails
with ENOSYS and numa_available() returns False.

Why ctypes and not a library: the two Python bindings on PyPI ("numa" 1.4.6 of
2019, "py-libnuma" 1.2 of 2021) are unmaintained wrappers of libnuma.so, which
stock installations (containers, minimal VMs) often lack, and libnuma's
numa_*() helpers report failures by printing to stderr and returning -1 where
vmxprobe needs the errno itself: EINVAL (no such node) and ENOMEM must be told
apart, and move_pages(2)'s per-page status is the kernel's evidence. Three
system calls with fixed x86_64 numbers are less to trust than either binding.

References: mbind(2), get_mempolicy(2), move_pages(2).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import sys
from typing import Any

__all__ = [
    "MPOL_BIND",
    "MPOL_LOCAL",
    "MPOL_MF_STRICT",
    "MPOL_F_NODE",
    "MPOL_F_ADDR",
    "bind_local",
    "bind_to_node",
    "node_of_address",
    "nodes_of_pages",
    "numa_available",
    "numa_status",
    "page_status",
]

# <linux/mempolicy.h>
MPOL_BIND = 2
MPOL_LOCAL = 4
MPOL_MF_STRICT = 1 << 0
MPOL_F_NODE = 1 << 0
MPOL_F_ADDR = 1 << 1

# arch/x86/entry/syscalls/syscall_64.tbl
_SYSCALLS_X86_64 = {"mbind": 237, "get_mempolicy": 239, "move_pages": 279}

_ULONG_BITS = ctypes.sizeof(ctypes.c_ulong) * 8
_PAGE_SIZE = mmap.PAGESIZE

_libc = None


def _syscall_numbers() -> dict[str, int] | None:
    if not sys.platform.startswith("linux"):
        return None
    if platform.machine() != "x86_64" or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    return _SYSCALLS_X86_64


def _syscall(name: str, *args: Any) -> int:
    """Call syscall(2) by name; raise OSError(errno) when it returns -1."""
    global _libc
    numbers = _syscall_numbers()
    if numbers is None:
        raise OSError(errno.ENOSYS, f"{name}: no syscall number for {platform.machine()}")
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    # syscall() is variadic: every argument is passed as a full 64-bit word.
    ret = _libc.syscall(ctypes.c_long(numbers[name]), *args)
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return int(ret)


def _page_range(addr: int, length: int) -> tuple[int, int]:
    """Widen [addr, addr+length) to whole pages; mbind(2) wants a page-aligned addr."""
    start = addr & ~(_PAGE_SIZE - 1)
    end = (addr + length + _PAGE_SIZE - 1) & ~(_PAGE_SIZE - 1)
    return start, end - start


def _nodemask(node: int) -> tuple[ctypes.Array[ctypes.c_ulong], int]:
    """Return (unsigned long array with only `node` set, maxnode to pass).

    mbind(2): "nodemask points to a bit mask of nodes containing up to maxnode
    bits". The kernel decrements maxnode before reading the mask (get_nodes()
    in mm/mempolicy.c), so the last bit would be dropped if maxnode were the
    exact bit count; libnuma passes size + 1 for the same reason.
    """
    nlongs = node // _ULONG_BITS + 1
    mask = (ctypes.c_ulong * nlongs)()
    mask[node // _ULONG_BITS] = 1 << (node % _ULONG_BITS)
    return mask, nlongs * _ULONG_BITS + 1


def bind_to_node(addr: int, length: int, node: int) -> None:
    """Bind the pages covering [addr, addr+length) to `node` with MPOL_BIND.

    The range is widened to whole pages. MPOL_MF_STRICT makes the call fail
    with EIO if a page in the range is already present on another node.
    A node that does not exist or is not allowed gives EINVAL.
    Raises OSError carrying the errno on failure.
    """
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    if node < 0:
        raise ValueError(f"node must be >= 0, got {node}")
    start, size = _page_range(addr, length)
    mask, maxnode = _nodemask(node)
    _syscall(
        "mbind",
        ctypes.c_void_p(start),
        ctypes.c_ulong(size),
        ctypes.c_long(MPOL_BIND),
        mask,
        ctypes.c_ulong(maxnode),
        ctypes.c_ulong(MPOL_MF_STRICT),
    )


def bind_local(addr: int, length: int) -> None:
    """Give the pages covering [addr, addr+length) the MPOL_LOCAL policy.

    A page is then allocated as for the node of the CPU that faults it in,
    through that node's fallback zonelist: from a CPU of a memoryless node,
    the kernel itself picks the nearest node with memory. Set per mapping, so
    a process policy (numactl --membind) does not change the answer.
    """
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    start, size = _page_range(addr, length)
    _syscall(
        "mbind",
        ctypes.c_void_p(start),
        ctypes.c_ulong(size),
        ctypes.c_long(MPOL_LOCAL),
        None,  # MPOL_LOCAL takes an empty nodemask
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )


def node_of_address(addr: int) -> int:
    """Return the node holding the page that contains `addr`.

    get_mempolicy(2) with MPOL_F_NODE|MPOL_F_ADDR "will return the node ID of
    the node on which the address addr is allocated". Write to the page first:
    an anonymous page that was never touched is faulted in by this call as a
    read, which maps the shared zero page, whose node says nothing about the
    mapping's policy.
    """
    mode = ctypes.c_int(-1)
    _syscall(
        "get_mempolicy",
        ctypes.byref(mode),
        None,  # nodemask not wanted
        ctypes.c_ulong(0),  # maxnode
        ctypes.c_void_p(addr),
        ctypes.c_ulong(MPOL_F_NODE | MPOL_F_ADDR),
    )
    return mode.value


def nodes_of_pages(addrs: list[int]) -> list[int]:
    """Return the node of the page containing each address, in order.

    move_pages(2) with nodes == NULL only reports the status of each page.
    A negative status is -errno (for example -ENOENT: page not present,
    -EFAULT: zero page or address not mapped); the first one found is raised
    as OSError with that errno.
    """
    result = []
    for addr, st in zip(addrs, page_status(addrs)):
        if st < 0:
            raise OSError(-st, f"move_pages: page at {addr:#x}: {os.strerror(-st)}")
        result.append(st)
    return result


def page_status(addrs: list[int]) -> list[int]:
    """move_pages(2) status of the page containing each address, in order.

    As nodes_of_pages(), but nothing is raised for a single page: each entry is
    the node id (>= 0) or -errno (-ENOENT: not present, -EFAULT: the zero page
    or nothing mapped). OSError only when the call itself fails (ENOSYS without
    CONFIG_MIGRATION, EPERM under a seccomp filter).
    """
    count = len(addrs)
    if count == 0:
        return []
    pages = (ctypes.c_void_p * count)(*[a & ~(_PAGE_SIZE - 1) for a in addrs])
    status = (ctypes.c_int * count)(*([-errno.EINVAL] * count))
    _syscall(
        "move_pages",
        ctypes.c_long(0),  # pid 0: the calling process
        ctypes.c_ulong(count),
        pages,
        None,  # nodes == NULL: query only, move nothing
        status,
        ctypes.c_long(0),
    )
    return list(status)


def numa_status() -> tuple[bool, str]:
    """(available, why): whether the kernel answers NUMA policy calls, and if not, why.

    get_mempolicy(NULL, NULL, 0, NULL, 0) fails with ENOSYS on a kernel built
    without CONFIG_NUMA, and with EPERM where a seccomp filter forbids it
    (container runtimes' default profiles allow the NUMA calls only with
    CAP_SYS_NICE).
    """
    try:
        _syscall("get_mempolicy", None, None, ctypes.c_ulong(0), None, ctypes.c_ulong(0))
    except OSError as e:
        name = errno.errorcode.get(e.errno or 0, str(e.errno))
        if e.errno == errno.ENOSYS:
            if _syscall_numbers() is None:
                return False, f"no NUMA system call numbers for {platform.machine()}"
            return (
                False,
                "get_mempolicy(2) fails with ENOSYS: the kernel is built "
                "without CONFIG_NUMA, so all memory is one node's",
            )
        if e.errno == errno.EPERM:
            return (
                False,
                "get_mempolicy(2) fails with EPERM: a seccomp filter forbids "
                "the NUMA policy calls (a container's default profile does, "
                "without CAP_SYS_NICE)",
            )
        return False, f"get_mempolicy(2) fails with {name}"
    return True, ""


def numa_available() -> bool:
    """True if the kernel answers NUMA policy calls (as libnuma's numa_available())."""
    return numa_status()[0]
