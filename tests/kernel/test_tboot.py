"""Tests for vmxprobe.kernel.tboot: was the kernel launched by tboot (tboot_enabled(),
arch/x86/kernel/tboot.c, 6.1 and mainline alike)? Each host is a tree of real files read
through --root's reader (LiveHost): sys/kernel/boot_params/data as
arch/x86/kernel/ksysfs.c exposes struct boot_params, and debugfs's x86 directory, where
tboot_late_init() creates tboot_log only when tboot_enabled()."""

import struct

import pytest

from tests import hostgen
from vmxprobe.host.readings import read_host
from vmxprobe.host.sources import LiveHost
from vmxprobe.kernel import tboot

# arch/x86/include/uapi/asm/bootparam.h struct boot_params: "__u64 tboot_addr; /* 0x058 */",
# after screen_info (0x000), apm_bios_info (0x040) and _pad2[4] (0x054).
TBOOT_ADDR_OFFSET = 0x58
SHARED_PAGE = 0x8A8A0000  # a page-aligned physical address, as tboot hands over
BOOT_PARAMS = "sys/kernel/boot_params/data"
DEBUGFS_X86 = "sys/kernel/debug/x86"


def boot_params(tboot_addr=0, size=4096, **other):
    """struct boot_params with tboot_addr at 0x58 and any other u64 at its offset."""
    data = bytearray(size)
    if size >= TBOOT_ADDR_OFFSET + 8:
        struct.pack_into("<Q", data, TBOOT_ADDR_OFFSET, tboot_addr)
    for offset, value in other.items():
        struct.pack_into("<Q", data, int(offset[1:], 16), value)
    return bytes(data)


def host(tmp_path, data=None, debugfs=None):
    """A synthetic 2-CPU tree; data replaces boot_params (b"" removes it); debugfs lists
    the entries of sys/kernel/debug/x86 (None: debugfs not mounted)."""
    root = tmp_path / "root"
    hostgen.write_tree(hostgen.synthetic(2, 1), str(root))
    path = root / BOOT_PARAMS
    if data == b"":
        path.unlink()
    elif data is not None:
        path.write_bytes(data)
    if debugfs is not None:
        x86 = root / DEBUGFS_X86
        x86.mkdir(parents=True)
        for name in debugfs:
            (x86 / name).write_bytes(b"")
    return read_host(LiveHost(str(root)))


def test_composed_boot_params_have_tboot_addr_zero(tmp_path):
    # tboot_probe(): "if (!boot_params.tboot_addr) return;" so tboot stays NULL.
    t = tboot.detect(host(tmp_path))
    assert t.launched is False
    assert "boot_params.tboot_addr is 0" in t.evidence


def test_the_offset_is_0x58(tmp_path):
    # The u64 around it (apm_bios_info's end, ist_info at 0x060) do not count.
    data = boot_params(0, o50=0xFFFFFFFFFFFFFFFF, o60=0xFFFFFFFFFFFFFFFF)
    assert tboot.detect(host(tmp_path, data)).launched is False
    # Little-endian: a value only in the top byte of the u64 is still non-zero.
    data = bytearray(boot_params(0))
    data[TBOOT_ADDR_OFFSET + 7] = 0x01
    t = tboot.detect(host(tmp_path / "b", bytes(data)))
    assert t.launched is None and "0x100000000000000" in t.evidence


def test_non_zero_tboot_addr_without_debugfs_is_not_settled(tmp_path):
    # tboot_probe() may still refuse the page (not E820_TYPE_RESERVED, wrong UUID,
    # version < 5): a non-zero address alone does not make tboot_enabled().
    t = tboot.detect(host(tmp_path, boot_params(SHARED_PAGE)))
    assert t.launched is None
    assert f"0x{SHARED_PAGE:x}" in t.evidence and "not mounted" in t.evidence


def test_tboot_log_in_debugfs_settles_it(tmp_path):
    # tboot_late_init(): "if (!tboot_enabled()) return 0; ... debugfs_create_file(
    # "tboot_log", S_IRUSR, arch_debugfs_dir, ...)".
    t = tboot.detect(host(tmp_path, boot_params(SHARED_PAGE), debugfs=["tboot_log", "pat_memtype_list"]))
    assert t.launched is True and "tboot_log exists" in t.evidence


def test_debugfs_without_tboot_log_settles_it_the_other_way(tmp_path):
    # A shared page the kernel rejected: tboot NULL, no tboot_log.
    t = tboot.detect(host(tmp_path, boot_params(SHARED_PAGE), debugfs=["pat_memtype_list"]))
    assert t.launched is False and "no x86/tboot_log" in t.evidence


@pytest.mark.parametrize(
    "debugfs,launched",
    [(["tboot_log"], True), ([], False), (None, None)],
)
def test_without_boot_params_debugfs_decides(tmp_path, debugfs, launched):
    t = tboot.detect(host(tmp_path, b"", debugfs))
    assert t.launched is launched
    if launched is None:
        assert "boot_params/data was not read and debugfs is not mounted" in t.evidence


def test_a_short_boot_params_is_not_read_as_zero(tmp_path):
    # Fewer than 0x60 bytes hold no tboot_addr: nothing is concluded from them.
    t = tboot.detect(host(tmp_path, boot_params(size=TBOOT_ADDR_OFFSET + 4)))
    assert t.launched is None


def test_zero_tboot_addr_wins_over_a_stray_tboot_log(tmp_path):
    # With tboot_addr 0, tboot_probe() returns before mapping anything: tboot_enabled() is
    # false whatever a directory says.
    t = tboot.detect(host(tmp_path, boot_params(0), debugfs=["tboot_log"]))
    assert t.launched is False


def test_the_reader_takes_only_tboot_log_from_debugfs(tmp_path):
    scan = host(tmp_path, boot_params(SHARED_PAGE), debugfs=["tboot_log", "pat_memtype_list", "split_huge"])
    assert scan.debugfs_x86 == ["tboot_log"]
    assert len(scan.boot_params) == 4096
