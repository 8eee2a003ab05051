"""ACPI tables for the tests: the recorded ones (tests/data/acpi, README there), each with
the kernel's own answer from the same boot (/proc/root_vmcs_oracle), and builders of
synthetic tables with valid checksums, for the rules no QEMU table exercises (x2APIC
entries, online-capable, SRAT revision 2); synthetic tables are named as such and never
stand in for a machine's tables."""

from __future__ import annotations

import struct
from pathlib import Path

from tests import TESTS
from vmxprobe.host import acpi

DATA = Path(TESTS) / "data" / "acpi"
TOPOLOGIES = ["memoryless-absent-assigned", "four-node-absent-default", "no-numa-absent"]


def table(name: str, kind: str) -> bytes:
    return (DATA / f"{name}-{kind}.bin").read_bytes()


def oracle(name: str) -> dict[int, tuple[int, int]]:
    out = {}
    for line in (DATA / f"{name}-oracle.txt").read_text().splitlines():
        cpu, node, nid = map(int, line.split())
        out[cpu] = (node, nid)
    return out


def has_memory(name: str) -> list[int]:
    nodes = []
    for part in (DATA / f"{name}-has_memory.txt").read_text().strip().split(","):
        lo, _, hi = part.partition("-")
        nodes += range(int(lo), int(hi or lo) + 1)
    return nodes


def recorded(name: str):
    madt = acpi.parse_madt(table(name, "APIC"))
    srat_file = DATA / f"{name}-SRAT.bin"
    srat = acpi.parse_srat(srat_file.read_bytes()) if srat_file.exists() else None
    fadt = acpi.parse_fadt_revision(table(name, "FACP"))
    return madt, srat, fadt


# --- building synthetic tables -------------------------------------------------------


def build(signature: bytes, body: bytes, revision: int = 1) -> bytes:
    length = acpi.HEADER_LEN + len(body)
    head = struct.pack(
        "<4sIBB6s8sI4sI", signature, length, revision, 0, b"TEST  ", b"SYNTHETC", 1, b"TEST", 1
    )
    raw = bytearray(head + body)
    raw[9] = (-sum(raw)) % 256
    return bytes(raw)


def madt(*entries: bytes) -> bytes:
    return build(b"APIC", struct.pack("<II", 0xFEE00000, 1) + b"".join(entries))


def lapic(apic_id: int, flags: int = 1, uid: int | None = None) -> bytes:
    return struct.pack("<BBBBI", 0, 8, apic_id if uid is None else uid, apic_id, flags)


def x2apic(apic_id: int, flags: int = 1, uid: int = 0) -> bytes:
    return struct.pack("<BBHIII", 9, 16, 0, apic_id, flags, uid)


def srat(*entries: bytes, revision: int = 1) -> bytes:
    return build(b"SRAT", struct.pack("<IQ", 1, 0) + b"".join(entries), revision)


def cpu_aff(apic_id: int, pxm: int, flags: int = 1, hi: bytes = b"\0\0\0") -> bytes:
    return struct.pack("<BBBBIB3sI", 0, 16, pxm & 0xFF, apic_id, flags, 0, hi, 0)


def x2apic_aff(apic_id: int, pxm: int, flags: int = 1) -> bytes:
    return struct.pack("<BBHIIII4x", 2, 24, 0, pxm, apic_id, flags, 0)


def mem_aff(pxm: int, base: int, length: int, flags: int = 1) -> bytes:
    return struct.pack("<BBIHQQIIQ", 1, 40, pxm, 0, base, length, 0, flags, 0)


def gi_aff(pxm: int, flags: int = 1) -> bytes:
    return struct.pack("<BBBBI16sII", 5, 32, 0, 0, pxm, b"\0" * 16, flags, 0)


def fadt(major: int, minor: int) -> bytes:
    body = bytearray(244 - acpi.HEADER_LEN)
    body[131 - acpi.HEADER_LEN] = minor
    return build(b"FACP", bytes(body), major)


def nodes_of(result) -> list[tuple[int, int, str]]:
    return [(c.cpu, c.node, c.source) for c in result]


GIB = 1 << 30


# --- recorded tables -------------------------------------------------------------------
