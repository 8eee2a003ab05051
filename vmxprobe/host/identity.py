"""What the host is, as a report names it: the boot CPU's vendor, family/model/stepping
and model name, the hypervisor it runs under, and the kernel release. CPUID answers
first; /proc/cpuinfo stands in where the cpuid device could not be read."""

from __future__ import annotations

import re
from dataclasses import dataclass

from vmxprobe.arch.cpuid import (
    CPUID_HV_LEAF,
    CPUID_HYPERVISOR_BIT,
    ECX,
    cpuid_signature,
    cpuid_vendor,
    hypervisor_name,
)
from vmxprobe.host.readings import HostReadings

_DIGITS = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class HostIdentity:
    vendor: str | None = None
    family: int | None = None
    model: int | None = None
    stepping: int | None = None
    model_name: str | None = None
    hypervisor: str | None = None  # "unknown" when present but unnamed
    kernel: str | None = None


def identify(scan: HostReadings, boot: int | None) -> HostIdentity:
    p = scan.cpus.get(boot) if boot is not None else None
    info = scan.cpuinfo.get(boot if boot is not None else 0, {})
    leaf0 = p.cpuid[0].value if p is not None else None
    leaf1 = p.cpuid[1].value if p is not None else None
    vendor = cpuid_vendor(leaf0) if leaf0 is not None else info.get("vendor_id")
    sig: dict[str, int | None] = {"family": None, "model": None, "stepping": None}
    if leaf1 is not None:
        sig.update(cpuid_signature(leaf1[0]))
    else:
        for key, name in (("family", "cpu family"), ("model", "model"), ("stepping", "stepping")):
            # ASCII digits, few enough for int(): "²" and a 5000-digit line are junk.
            if _DIGITS.fullmatch(str(info.get(name, ""))):
                sig[key] = int(info[name])
    hypervisor = None
    if p is not None:
        hv_bit = p.cpuid_bit(1, ECX, CPUID_HYPERVISOR_BIT)
        if hv_bit:
            r = p.cpuid.get(CPUID_HV_LEAF)
            hypervisor = (
                hypervisor_name(r.value) if r is not None and r.value is not None else None
            ) or "unknown"
        elif hv_bit is None and "hypervisor" in info.get("flags", ()):
            hypervisor = "unknown"
    return HostIdentity(
        vendor, sig["family"], sig["model"], sig["stepping"], info.get("model name"), hypervisor, scan.kernel
    )
