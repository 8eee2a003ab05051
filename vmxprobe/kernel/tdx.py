"""TDX: the seamret_invd_vmcs erratum. arch/x86/virt/vmx/tdx/tdx.c check_tdx_erratum()
reads IA32_VMX_BASIC on a TDX host and, when bit 60 (VMX_BASIC_NO_SEAMRET_INVD_VMCS) is
clear, sets X86_BUG_SEAMRET_INVD_VMCS ("seamret_invd_vmcs" in /proc/cpuinfo bugs):
SEAMRET from the P-SEAMLDR clears the current VMCS, so the tdx-host driver hides the
P-SEAMLDR sysfs files and TDX module runtime updates."""

from __future__ import annotations

from dataclasses import dataclass

VMX_BASIC_NO_SEAMRET_INVD_VMCS = 1 << 60

KEEPS = (
    "IA32_VMX_BASIC bit 60 set: SEAMRET from the P-SEAMLDR keeps the current VMCS; a "
    "TDX host may call the P-SEAMLDR (TDX module runtime update)"
)
CLEARS = (
    "IA32_VMX_BASIC bit 60 clear: SEAMRET from the P-SEAMLDR clears the current VMCS; "
    'on a TDX host the kernel sets X86_BUG_SEAMRET_INVD_VMCS ("seamret_invd_vmcs") and '
    "hides the P-SEAMLDR (no TDX module runtime update); it means nothing on a CPU "
    "without TDX"
)


@dataclass(frozen=True)
class Seamret:
    """Bit 60 of IA32_VMX_BASIC, and, where /proc/cpuinfo was read, whether this host is
    a TDX host and whether its kernel lists the erratum."""

    keeps_current_vmcs: bool
    tdx_host_platform: bool | None = None
    kernel_reports_bug: bool | None = None

    @property
    def kernel_bug(self) -> str | None:
        return None if self.keeps_current_vmcs else "X86_BUG_SEAMRET_INVD_VMCS"

    @property
    def meaning(self) -> str:
        return KEEPS if self.keeps_current_vmcs else CLEARS


def seamret_erratum(
    basic: int, flags: frozenset[str] | None = None, bugs: frozenset[str] | None = None
) -> Seamret:
    """check_tdx_erratum() on this IA32_VMX_BASIC; flags and bugs are the boot CPU's
    /proc/cpuinfo "flags" and "bugs" (None when it was not read)."""
    return Seamret(
        keeps_current_vmcs=bool(basic & VMX_BASIC_NO_SEAMRET_INVD_VMCS),
        tdx_host_platform=None if flags is None else "tdx_host_platform" in flags,
        kernel_reports_bug=None if bugs is None else "seamret_invd_vmcs" in bugs,
    )
