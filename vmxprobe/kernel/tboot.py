"""Was the kernel launched by tboot (Intel TXT)? init_ia32_feat_ctl()
(arch/x86/kernel/cpu/feat_ctl.c) then needs IA32_FEATURE_CONTROL bit 1 (VMX inside SMX)
where it otherwise needs bit 2 (VMX outside SMX).

tboot_enabled() (arch/x86/kernel/tboot.c) is true when tboot_probe() accepted the shared
page that boot_params.tboot_addr points to. What a host shows of that, as root:

* sys/kernel/boot_params/data (arch/x86/kernel/ksysfs.c) holds struct boot_params;
  tboot_addr is the u64 at offset 0x58 (arch/x86/include/uapi/asm/bootparam.h). 0 means
  no tboot. Non-zero is what tboot_probe() starts from; it may still reject the page
  (not E820-reserved, a wrong UUID, version < 5: "tboot: ... is invalid").
* sys/kernel/debug/x86/tboot_log exists only when tboot_enabled() (tboot_late_init(),
  with CONFIG_DEBUG_FS): with debugfs mounted, its presence settles it either way.

Nothing else settles it: tboot also starts kernels without a measured launch (no SMX, TXT
disabled) and still hands them its shared page, so CPUID SMX and the SENTER bits of
IA32_FEATURE_CONTROL say nothing about tboot_enabled().
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vmxprobe.host.readings import HostReadings

TBOOT_ADDR_OFFSET = 0x58
TBOOT_LOG = "tboot_log"


@dataclass(frozen=True)
class Tboot:
    launched: bool | None  # tboot_enabled(); None when the host cannot tell
    evidence: str


def detect(scan: HostReadings) -> Tboot:
    addr = None
    data = scan.boot_params
    if data is not None and len(data) >= TBOOT_ADDR_OFFSET + 8:
        (addr,) = struct.unpack_from("<Q", data, TBOOT_ADDR_OFFSET)
    log = None if scan.debugfs_x86 is None else TBOOT_LOG in scan.debugfs_x86
    if addr == 0:
        return Tboot(False, "boot_params.tboot_addr is 0 (sys/kernel/boot_params/data): no tboot")
    if log is True:
        return Tboot(True, "sys/kernel/debug/x86/tboot_log exists: the kernel runs under tboot")
    if log is False:
        return Tboot(False, "debugfs shows no x86/tboot_log: the kernel did not accept a tboot launch")
    if addr is not None:
        return Tboot(
            None,
            f"boot_params.tboot_addr is 0x{addr:x}: a tboot launch that the kernel accepts "
            "unless the shared page is invalid; debugfs (sys/kernel/debug/x86/tboot_log) is "
            "not mounted to tell",
        )
    return Tboot(None, "sys/kernel/boot_params/data was not read and debugfs is not mounted")
