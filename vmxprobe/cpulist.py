"""The kernel's CPU list and CPU mask text formats (lib/bitmap-str.c).

cpulist: "0-3,8,10-11" (what `possible`, `online`, `nodeN/cpulist` hold).
cpumap:  comma-separated 32-bit hex words, most significant first
         ("0000,55555555,55555555"), what `nodeN/cpumap` holds.
"""

# Upper bound on a CPU id we accept from text: the kernel's NR_CPUS is at most 8192 on
# x86 today; four times that leaves room while keeping a hostile "0-999999999" from
# allocating gigabytes.
MAX_CPU_ID = 32767


class CpulistError(ValueError):
    pass


def parse_cpulist(text: str, limit: int = MAX_CPU_ID) -> list[int]:
    """Parse a cpulist into a sorted list of unique CPU ids ("" and "\\n" give [])."""
    text = text.strip()
    if not text:
        return []
    cpus: set[int] = set()
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
            if not (used_s.isdigit() and group_s.isdigit() and 0 < int(used_s) <= int(group_s)):
                raise CpulistError(f"bad cpulist range {part!r}")
            used, group = int(used_s), int(group_s)
        else:
            used, group = 1, 1
        if not lo_s.isdigit() or (sep and not hi_s.isdigit()):
            raise CpulistError(f"bad cpulist element {part!r}")
        lo = int(lo_s)
        hi = int(hi_s) if sep else lo
        if hi < lo:
            raise CpulistError(f"bad cpulist range {part!r} (end before start)")
        if hi > limit:
            raise CpulistError(f"cpulist names CPU {hi}, beyond the limit of {limit}")
        for start in range(lo, hi + 1, group):
            cpus.update(range(start, min(start + used, hi + 1)))
    return sorted(cpus)


def format_cpulist(cpus) -> str:
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
    text = text.strip()
    if not text:
        return []
    words = text.split(",")
    cpus = []
    bit = 0
    for word in reversed(words):
        word = word.strip()
        if not word or len(word) > 8 or any(c not in "0123456789abcdefABCDEF" for c in word):
            raise CpulistError(f"bad cpumap word {word!r}")
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
