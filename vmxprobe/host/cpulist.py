"""The kernel's CPU list and CPU mask text formats (lib/bitmap-str.c).

cpulist: "0-3,8,10-11" (what `possible`, `online`, `nodeN/cpulist` hold).
cpumap:  comma-separated 32-bit hex words, most significant first
         ("0000,55555555,55555555"), what `nodeN/cpumap` holds.

Both parsers take any text and either return a sorted list of unique CPU ids in
[0, limit] or raise CpulistError (a ValueError) with a one-line message; nothing else.
"""

import re
from collections.abc import Iterable

# Upper bound on a CPU id we accept from text: the kernel's NR_CPUS is at most 8192 on
# x86 today; four times that leaves room while keeping a hostile "0-999999999" from
# allocating gigabytes.
MAX_CPU_ID = 32767

# The kernel prints each CPU once, so the ids named by a list it wrote add up to at most
# limit + 1. Overlapping ranges are legal input to bitmap_parselist(), but a list whose
# ranges add up to many times the id space ("0-32767" repeated a million times) is a
# way to spend minutes of CPU: refuse it past this multiple.
MAX_OVERLAP = 4

# ASCII digits only: str.isdigit() also accepts "²" and "٣", which int() then rejects
# or reads as a number the kernel never wrote.
_NUMBER = re.compile(r"[0-9]+")
_HEX_WORD = re.compile(r"[0-9a-fA-F]{1,8}")
# Digits a number of a list may have. Past Python's int-string limit (4300 digits) int()
# raises; long before it, the number is past any limit a caller gives.
MAX_DIGITS = 10


class CpulistError(ValueError):
    pass


def _number(text: str) -> bool:
    if len(text) > MAX_DIGITS and _NUMBER.fullmatch(text):
        raise CpulistError(f"cpulist names a number of {len(text)} digits ({text[:12]}...), not a CPU id")
    return _NUMBER.fullmatch(text) is not None


def parse_cpulist(text: str, limit: int = MAX_CPU_ID) -> list[int]:
    """Parse a cpulist into a sorted list of unique CPU ids ("" and "\\n" give [])."""
    if not isinstance(text, str):
        raise CpulistError(f"a cpulist is text, not {type(text).__name__}")
    text = text.strip()
    if not text:
        return []
    cpus: set[int] = set()
    named = 0
    for part in text.split(","):
        part = part.strip()
        lo_s, sep, hi_s = part.partition("-")
        if sep and ":" in hi_s:
            # bitmap_parselist() accepts a group form the kernel never prints; lscpu
            # prints a stride form. Honour both rather than reject a valid list.
            # "a-b:used/group" (kernel), or "a-b:stride" (lscpu's own output).
            hi_s, _, grp = hi_s.partition(":")
            used_s, slash, group_s = grp.partition("/")
            if not slash:
                used_s, group_s = "1", used_s
            if not (_number(used_s) and _number(group_s) and 0 < int(used_s) <= int(group_s)):
                raise CpulistError(f"bad cpulist range {part[:40]!r}")
            used, group = int(used_s), int(group_s)
        else:
            used, group = 1, 1
        if not _number(lo_s) or (sep and not _number(hi_s)):
            raise CpulistError(f"bad cpulist element {part[:40]!r}")
        lo = int(lo_s)
        hi = int(hi_s) if sep else lo
        if hi < lo:
            raise CpulistError(f"bad cpulist range {part[:40]!r} (end before start)")
        if hi > limit:
            raise CpulistError(f"cpulist names CPU {hi}, beyond the limit of {limit}")
        # Ids this part names: whole groups of `used`, then what fits of the last one.
        span = hi - lo + 1
        named += (span // group) * used + min(used, span % group)
        if named > MAX_OVERLAP * (limit + 1):
            raise CpulistError(
                f"cpulist names more than {MAX_OVERLAP} times the "
                f"{limit + 1} possible CPU ids (overlapping ranges)"
            )
        for start in range(lo, hi + 1, group):
            cpus.update(range(start, min(start + used, hi + 1)))
    return sorted(cpus)


def format_cpulist(cpus: Iterable[int]) -> str:
    """Format CPU ids as the kernel does: ascending, runs collapsed ("0-3,8")."""
    out = []
    run_start = prev = None
    for cpu in sorted(set(cpus)):
        if prev is not None and cpu == prev + 1:
            prev = cpu
            continue
        if run_start is not None:
            out.append(f"{run_start}" if run_start == prev else f"{run_start}-{prev}")
        run_start = prev = cpu
    if run_start is not None:
        out.append(f"{run_start}" if run_start == prev else f"{run_start}-{prev}")
    return ",".join(out)


def parse_cpumap(text: str, limit: int = MAX_CPU_ID) -> list[int]:
    """Parse a hex cpumask of any width ("ff", "0000,55555555,55555555")."""
    if not isinstance(text, str):
        raise CpulistError(f"a cpumap is text, not {type(text).__name__}")
    text = text.strip()
    if not text:
        return []
    words = text.split(",")
    cpus = []
    bit = 0
    for word in reversed(words):
        word = word.strip()
        if not _HEX_WORD.fullmatch(word):
            raise CpulistError(f"bad cpumap word {word[:40]!r}")
        value = int(word, 16)
        while value:
            low = value & -value
            cpu = bit + low.bit_length() - 1
            if cpu > limit:
                raise CpulistError(f"cpumap names CPU {cpu}, beyond the limit of {limit}")
            cpus.append(cpu)
            value ^= low
        bit += 32
    return sorted(cpus)


def every_online(cpus: Iterable[int]) -> str:
    """The subject of a sentence about every online CPU, with its verb: "all 4 online CPUs
    (0-3) have", or "the one online CPU (0) has"."""
    ids = sorted(set(cpus))
    if len(ids) == 1:
        return f"the one online CPU ({ids[0]}) has"
    return f"all {len(ids)} online CPUs ({format_cpulist(ids)}) have"
