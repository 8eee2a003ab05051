"""The firmware's CPU and memory tables (ACPI SRAT, MADT and FADT), parsed as the x86
kernel parses them. Pure functions on bytes: the tables are what root reads from
/sys/firmware/acpi/tables/SRAT, APIC (the MADT) and FACP. Nothing here opens a file.

    parse_srat(data)  -> Srat    processor (Local APIC, x2APIC) and memory affinity,
                                 generic initiators
    parse_madt(data)  -> Madt    Local APIC and Local x2APIC entries with their
                                 enabled and online-capable flags
    parse_fadt_revision(data)    FADT major and minor revision

Bad input raises AcpiTableError (a ValueError) with a one-line message naming the
table, what is wrong and what to do. What the kernel makes of the tables is
vmxprobe.kernel.acpi_numa.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

# include/acpi/actbl.h: struct acpi_table_header.
HEADER_LEN = 36
_HEADER = struct.Struct("<4sIBB6s8sI4sI")

# include/acpi/actbl2.h, ACPI 6.5 section 5.2.12 (MADT) and 5.2.16 (SRAT).
MADT_LOCAL_APIC, MADT_LOCAL_X2APIC = 0, 9
MADT_ENABLED, MADT_ONLINE_CAPABLE = 1 << 0, 1 << 1
SRAT_CPU_AFFINITY, SRAT_MEMORY_AFFINITY, SRAT_X2APIC_AFFINITY = 0, 1, 2
SRAT_GENERIC_AFFINITY = 5
SRAT_CPU_ENABLED = 1 << 0
SRAT_MEM_ENABLED, SRAT_MEM_HOT_PLUGGABLE, SRAT_MEM_NON_VOLATILE = 1 << 0, 1 << 1, 1 << 2
SRAT_GENERIC_AFFINITY_ENABLED = 1 << 0

# sizeof() of each structure; a shorter entry is BAD_MADT_ENTRY() or bad_srat().
_MADT_SIZES = {MADT_LOCAL_APIC: 8, MADT_LOCAL_X2APIC: 16}
_SRAT_SIZES = {
    SRAT_CPU_AFFINITY: 16,
    SRAT_MEMORY_AFFINITY: 40,
    SRAT_X2APIC_AFFINITY: 24,
    SRAT_GENERIC_AFFINITY: 32,
}
_MADT_BODY = HEADER_LEN + 8  # local APIC address, flags
_SRAT_BODY = HEADER_LEN + 12  # table revision (reserved, 1), reserved u64
# The FADT's minor version is byte 131 (ACPI 5.1 and later; absent before).
_FADT_MINOR_OFFSET = 131


class AcpiTableError(ValueError):
    """A table that is not what its signature promises; the message is one line."""


@dataclass(frozen=True)
class TableHeader:
    signature: str
    length: int
    revision: int
    oem_id: str
    oem_table_id: str


@dataclass(frozen=True)
class LocalApic:
    """One MADT Processor Local APIC (type 0) or Local x2APIC (type 9) entry."""

    kind: str  # "lapic" or "x2apic"
    apic_id: int
    processor_uid: int  # ACPI processor UID (the 8-bit processor id for a Local APIC)
    flags: int
    offset: int  # byte offset in the table, for messages

    @property
    def enabled(self) -> bool:
        return bool(self.flags & MADT_ENABLED)

    @property
    def online_capable(self) -> bool:
        return bool(self.flags & MADT_ONLINE_CAPABLE)


@dataclass(frozen=True)
class Madt:
    header: TableHeader
    local_apic_address: int
    flags: int
    cpus: tuple[LocalApic, ...]  # in table order


@dataclass(frozen=True)
class CpuAffinity:
    """SRAT Processor Local APIC/SAPIC (type 0) or x2APIC (type 2) affinity."""

    kind: str  # "lapic" or "x2apic"
    apic_id: int
    proximity_domain: int  # as the table's revision lets the kernel read it
    flags: int
    offset: int

    @property
    def enabled(self) -> bool:
        return bool(self.flags & SRAT_CPU_ENABLED)


@dataclass(frozen=True)
class MemoryAffinity:
    proximity_domain: int
    base: int
    length: int
    flags: int
    offset: int

    @property
    def enabled(self) -> bool:
        return bool(self.flags & SRAT_MEM_ENABLED)

    @property
    def hot_pluggable(self) -> bool:
        return bool(self.flags & SRAT_MEM_HOT_PLUGGABLE)

    @property
    def non_volatile(self) -> bool:
        return bool(self.flags & SRAT_MEM_NON_VOLATILE)


@dataclass(frozen=True)
class GenericInitiator:
    proximity_domain: int
    flags: int
    offset: int

    @property
    def enabled(self) -> bool:
        return bool(self.flags & SRAT_GENERIC_AFFINITY_ENABLED)


@dataclass(frozen=True)
class Srat:
    header: TableHeader
    cpus: tuple[CpuAffinity, ...]  # in table order
    memory: tuple[MemoryAffinity, ...]  # in table order
    initiators: tuple[GenericInitiator, ...]  # in table order
    # The order the kernel meets proximity domains in (see pxm_to_node()).
    cpu_pass: tuple[CpuAffinity | GenericInitiator, ...] = ()


def _table(data: bytes, signature: str, sysfs_name: str) -> tuple[TableHeader, bytes]:
    """Check signature, length and checksum as acpi_tb_verify_checksum() would."""
    where = f"{signature} table"
    hint = f"dump it again as root from /sys/firmware/acpi/tables/{sysfs_name}"
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AcpiTableError(f"{where}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_LEN:
        raise AcpiTableError(
            f"{where}: {len(data)} bytes is shorter than the {HEADER_LEN}-byte ACPI table header; {hint}"
        )
    sig, length, revision, _checksum, oem_id, oem_table_id, _, _, _ = _HEADER.unpack_from(data)
    if sig != signature.encode():
        shown = sig.decode("ascii", "replace")
        raise AcpiTableError(
            f"{where}: signature is {shown!r}, not {signature!r}: this is "
            f"another table; read /sys/firmware/acpi/tables/{sysfs_name}"
        )
    if length != len(data):
        what = "truncated" if length > len(data) else "followed by extra bytes"
        raise AcpiTableError(
            f"{where}: its header says {length} bytes but {len(data)} were given ({what}); {hint}"
        )
    if sum(data) % 256:
        raise AcpiTableError(
            f"{where}: bytes sum to {sum(data) % 256:#04x} mod 256, not 0 (bad "
            f"checksum: corrupt or edited); {hint}"
        )
    header = TableHeader(
        signature,
        length,
        revision,
        oem_id.rstrip(b"\0 ").decode("ascii", "replace"),
        oem_table_id.rstrip(b"\0 ").decode("ascii", "replace"),
    )
    return header, data


def _entries(data: bytes, start: int, where: str, sizes: dict[int, int]) -> Iterator[tuple[int, int, bytes]]:
    """Walk subtables as acpi_parse_entries_array() does: type, length, body."""
    offset = start
    while offset < len(data):
        if offset + 2 > len(data):
            raise AcpiTableError(
                f"{where}: a subtable header at offset {offset:#x} runs past "
                f"the end of the table ({len(data)} bytes): malformed table"
            )
        kind, length = data[offset], data[offset + 1]
        if length < 2:
            raise AcpiTableError(
                f"{where}: subtable at offset {offset:#x} has length {length}: "
                "the kernel stops parsing here (malformed table)"
            )
        if offset + length > len(data):
            raise AcpiTableError(
                f"{where}: subtable type {kind} at offset {offset:#x} is "
                f"{length} bytes and runs past the end of the table: "
                "truncated or malformed"
            )
        need = sizes.get(kind)
        if need is not None and length < need:
            raise AcpiTableError(
                f"{where}: subtable type {kind} at offset {offset:#x} is "
                f"{length} bytes, shorter than its {need}-byte structure "
                "(the kernel rejects the table)"
            )
        yield kind, offset, data[offset : offset + length]
        offset += length


def parse_madt(data: bytes) -> Madt:
    """The MADT ("APIC"): its Local APIC and Local x2APIC entries, in table order."""
    header, data = _table(data, "APIC", "APIC")
    if len(data) < _MADT_BODY:
        raise AcpiTableError(
            f"APIC table: {len(data)} bytes is too short for the MADT's "
            f"{_MADT_BODY}-byte fixed part; dump it again as root from "
            "/sys/firmware/acpi/tables/APIC"
        )
    address, flags = struct.unpack_from("<II", data, HEADER_LEN)
    cpus = []
    for kind, offset, entry in _entries(data, _MADT_BODY, "APIC table", _MADT_SIZES):
        if kind == MADT_LOCAL_APIC:
            uid, apic_id, eflags = struct.unpack_from("<BBI", entry, 2)
            cpus.append(LocalApic("lapic", apic_id, uid, eflags, offset))
        elif kind == MADT_LOCAL_X2APIC:
            apic_id, eflags, uid = struct.unpack_from("<III", entry, 4)
            cpus.append(LocalApic("x2apic", apic_id, uid, eflags, offset))
    return Madt(header, address, flags, tuple(cpus))


def parse_srat(data: bytes) -> Srat:
    """The SRAT: processor and memory affinity and generic initiators, in table order.

    A Local APIC affinity's proximity domain has 8 bits in SRAT revision 1 and 32 from
    revision 2 (acpi_numa_processor_affinity_init() adds proximity_domain_hi only when
    acpi_srat_revision >= 2); a memory affinity's is cut to 8 bits in revision 1
    (acpi_numa_memory_affinity_init()). The values here are the ones the kernel uses.
    """
    header, data = _table(data, "SRAT", "SRAT")
    if len(data) < _SRAT_BODY:
        raise AcpiTableError(
            f"SRAT table: {len(data)} bytes is too short for the SRAT's "
            f"{_SRAT_BODY}-byte fixed part; dump it again as root from "
            "/sys/firmware/acpi/tables/SRAT"
        )
    wide = header.revision >= 2
    cpus: list[CpuAffinity] = []
    memory: list[MemoryAffinity] = []
    initiators: list[GenericInitiator] = []
    cpu_pass: list[CpuAffinity | GenericInitiator] = []
    for kind, offset, entry in _entries(data, _SRAT_BODY, "SRAT table", _SRAT_SIZES):
        if kind == SRAT_CPU_AFFINITY:
            if len(entry) != _SRAT_SIZES[kind]:
                # acpi_numa_processor_affinity_init(): length != sizeof -> bad_srat().
                raise AcpiTableError(
                    f"SRAT table: Local APIC affinity at offset {offset:#x} "
                    f"is {len(entry)} bytes, not 16 (the kernel rejects "
                    "the table)"
                )
            lo, apic_id, eflags, _eid = struct.unpack_from("<BBIB", entry, 2)
            pxm = lo | (int.from_bytes(entry[9:12], "little") << 8 if wide else 0)
            item = CpuAffinity("lapic", apic_id, pxm, eflags, offset)
            cpus.append(item)
            cpu_pass.append(item)
        elif kind == SRAT_X2APIC_AFFINITY:
            pxm, apic_id, eflags = struct.unpack_from("<III", entry, 4)
            item = CpuAffinity("x2apic", apic_id, pxm, eflags, offset)
            cpus.append(item)
            cpu_pass.append(item)
        elif kind == SRAT_MEMORY_AFFINITY:
            (pxm,) = struct.unpack_from("<I", entry, 2)
            base, length = struct.unpack_from("<QQ", entry, 8)
            (eflags,) = struct.unpack_from("<I", entry, 28)
            memory.append(MemoryAffinity(pxm if wide else pxm & 0xFF, base, length, eflags, offset))
        elif kind == SRAT_GENERIC_AFFINITY:
            (pxm,) = struct.unpack_from("<I", entry, 4)
            (eflags,) = struct.unpack_from("<I", entry, 24)
            initiator = GenericInitiator(pxm, eflags, offset)
            initiators.append(initiator)
            cpu_pass.append(initiator)
    return Srat(header, tuple(cpus), tuple(memory), tuple(initiators), tuple(cpu_pass))


def parse_fadt_revision(data: bytes) -> tuple[int, int]:
    """(major, minor) of the FADT ("FACP"), which decides whether the kernel honours the
    MADT's online-capable bit: acpi_parse_madt() sets acpi_support_online_capable for
    FADT 6.3 and later."""
    header, data = _table(data, "FACP", "FACP")
    minor = data[_FADT_MINOR_OFFSET] & 0x0F if len(data) > _FADT_MINOR_OFFSET else 0
    return header.revision, minor
