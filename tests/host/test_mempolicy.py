"""vmxprobe.numa on the machine the tests run on (node 0 always exists).

numa.py is loaded by path so that these tests do not depend on the rest of the
package being importable.
"""

from __future__ import annotations

import ctypes
import errno
import importlib.util
import mmap
import os

import pytest

from tests import REPO as _REPO

_PATH = os.path.join(_REPO, "vmxprobe", "host", "mempolicy.py")
_spec = importlib.util.spec_from_file_location("vmxprobe_numa_under_test", _PATH)
numa = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(numa)

pytestmark = pytest.mark.skipif(
    not numa.numa_available(),
    reason="NUMA syscalls unavailable here (kernel without CONFIG_NUMA, seccomp, or not x86_64 Linux)",
)


@pytest.fixture
def page():
    """A fresh anonymous page, not yet faulted in: yields (mmap, address)."""
    m = mmap.mmap(-1, mmap.PAGESIZE)
    c = ctypes.c_char.from_buffer(m)
    addr = ctypes.addressof(c)
    try:
        yield m, addr
    finally:
        # The exported buffer must be released before the mmap can close.
        del c
        m.close()


def test_numa_available():
    assert numa.numa_available() is True


def test_bind_to_node0_then_query(page):
    m, addr = page
    numa.bind_to_node(addr, mmap.PAGESIZE, 0)
    m[0] = 1  # fault the page in under the new policy
    assert numa.node_of_address(addr) == 0
    assert numa.nodes_of_pages([addr]) == [0]


def test_unaligned_range_is_widened_to_pages(page):
    m, addr = page
    numa.bind_to_node(addr + 100, 10, 0)
    m[200] = 1
    assert numa.node_of_address(addr + 200) == 0
    assert numa.nodes_of_pages([addr + 200, addr]) == [0, 0]


def test_bind_to_nonexistent_node_is_einval(page):
    _, addr = page
    with pytest.raises(OSError) as exc:
        numa.bind_to_node(addr, mmap.PAGESIZE, 63)
    assert exc.value.errno == errno.EINVAL


def test_bind_beyond_first_mask_word_is_einval(page):
    # Node 64 needs a two-word mask; still a node that does not exist here.
    _, addr = page
    with pytest.raises(OSError) as exc:
        numa.bind_to_node(addr, mmap.PAGESIZE, 64)
    assert exc.value.errno == errno.EINVAL


def test_untouched_page_has_no_node(page):
    # move_pages(2) status -ENOENT: "The page is not present."
    _, addr = page
    with pytest.raises(OSError) as exc:
        numa.nodes_of_pages([addr])
    assert exc.value.errno == errno.ENOENT


def test_nodes_of_no_pages():
    assert numa.nodes_of_pages([]) == []


def test_bad_arguments(page):
    _, addr = page
    with pytest.raises(ValueError):
        numa.bind_to_node(addr, 0, 0)
    with pytest.raises(ValueError):
        numa.bind_to_node(addr, mmap.PAGESIZE, -1)


def test_nodemask_layout():
    mask, maxnode = numa._nodemask(0)
    assert list(mask) == [1] and maxnode == 65
    mask, maxnode = numa._nodemask(65)
    assert list(mask) == [0, 2] and maxnode == 129


def test_unmapped_address_is_efault():
    # Nothing is mapped below vm.mmap_min_addr (64 KiB by default), so
    # get_mempolicy(2) finds no mapping at 0x1000 and fails with EFAULT.
    with pytest.raises(OSError) as exc:
        numa.node_of_address(0x1000)
    assert exc.value.errno == errno.EFAULT


def test_page_status_reports_each_page_without_raising(page):
    m, addr = page
    other = mmap.mmap(-1, mmap.PAGESIZE)
    c = ctypes.c_char.from_buffer(other)
    other_addr = ctypes.addressof(c)
    try:
        other[0] = 1
        # The untouched page is not present (-ENOENT); the touched one is on a node.
        status = numa.page_status([addr, other_addr])
        assert status[0] == -errno.ENOENT and status[1] >= 0
        assert numa.page_status([]) == []
    finally:
        del c
        other.close()


def test_local_policy_page_lands_on_a_node_with_memory(page):
    # MPOL_LOCAL: the page comes from the faulting CPU's node, or the nearest node
    # with memory; either way a node that has memory.
    m, addr = page
    numa.bind_local(addr, mmap.PAGESIZE)
    m[0] = 1
    assert numa.node_of_address(addr) in _memory_nodes()
    with pytest.raises(ValueError):
        numa.bind_local(addr, 0)


def _memory_nodes():
    try:
        text = open("/sys/devices/system/node/has_memory").read().strip()
    except OSError:
        return {0}
    out = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def test_numa_status_says_why_not(monkeypatch):
    assert numa.numa_status() == (True, "")

    def fail(code):
        def syscall(name, *args):
            raise OSError(code, os.strerror(code))

        return syscall

    monkeypatch.setattr(numa, "_syscall", fail(errno.ENOSYS))
    ok, why = numa.numa_status()
    assert not ok and "CONFIG_NUMA" in why
    monkeypatch.setattr(numa, "_syscall", fail(errno.EPERM))
    ok, why = numa.numa_status()
    assert not ok and "seccomp" in why
    assert numa.numa_available() is False
