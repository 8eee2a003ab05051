"""The running kernel's feature flag in /proc/cpuinfo against what the registers imply on
this kernel release, per CPU: where the two disagree, and where the kernel hid a flag the
CPU has because firmware turned the feature off (feat_ctl.c for vmx, amd.c for svm)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from vmxprobe.host.readings import HostReadings

# predict(cpu) -> (the flag this kernel would show, or None where the registers cannot
# say; whether the CPU has the feature in CPUID but firmware turned it off)
Predict = Callable[[int], tuple[Optional[bool], bool]]  # evaluated at run time: no "X | None" on 3.9


@dataclass(frozen=True)
class FlagView:
    hidden: list[int]  # no flag as predicted, though CPUID has it: firmware turned it off
    missing: list[int]  # no flag where the registers allow it
    extra: list[int]  # the flag where the registers turn the feature off


def compare(scan: HostReadings, flag: str, predict: Predict) -> FlagView:
    """Every CPU with a /proc/cpuinfo block, in CPU order."""
    view = FlagView([], [], [])
    for cpu in sorted(scan.cpus):
        info = scan.cpuinfo.get(cpu)
        if info is None:
            continue
        shown = flag in info["flags"]
        predicted, firmware_off = predict(cpu)
        if predicted is None or shown == predicted:
            if not shown and firmware_off:
                view.hidden.append(cpu)
            continue
        (view.extra if shown else view.missing).append(cpu)
    return view
