"""AMD SVM (AMD-V): the registers that say whether a CPU may run SVM and whether the
kernel runs as an SEV guest. Names and bits from AMD's APM Vol. 2 (24593) 15.30.1
"VM_CR MSR (C001_0114h)", 15.4 "Enabling SVM" and 15.34 "Secure Encrypted Virtualization";
APM Vol. 3 E.4 (CPUID Fn8000_0001, Fn8000_001F); Linux asm/svm.h and msr-index.h."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vmxprobe.arch.vmx import M64

# APM Vol. 2 15.30.1; Linux msr-index.h MSR_VM_CR.
MSR_VM_CR = 0xC0010114
VM_CR_DPD = 0  # debug port disable
VM_CR_R_INIT = 1  # INIT redirected to #SX
VM_CR_DIS_A20M = 2  # A20 masking disabled
# LOCK set makes LOCK and SVMDIS read-only until reset (or until the SVM_KEY MSR unlocks
# them, where firmware provides a key): firmware that sets it has fixed SVMDIS for this boot.
VM_CR_LOCK = 3  # asm/svm.h SVM_VM_CR_SVM_LOCK_MASK 0x0008
# SVMDIS set makes EFER.SVME must-be-zero: SVM cannot be turned on on this CPU.
VM_CR_SVMDIS = 4  # asm/svm.h SVM_VM_CR_SVM_DIS_MASK 0x0010
SVM_VM_CR_VALID_MASK = 0x1F  # asm/svm.h: bits 63:5 are reserved

# APM Vol. 2 15.34.10 "SEV_STATUS MSR"; Linux msr-index.h MSR_AMD64_SEV. Readable only in
# a guest of a hypervisor that launched it with SEV (bare metal Zen reads 0).
MSR_AMD64_SEV = 0xC0010131
SEV_ENABLED = 0  # MSR_AMD64_SEV_ENABLED_BIT
SEV_ES_ENABLED = 1  # MSR_AMD64_SEV_ES_ENABLED_BIT
SEV_SNP_ENABLED = 2  # MSR_AMD64_SEV_SNP_ENABLED_BIT

# APM Vol. 3 E.4.17 "Function 8000_001Fh—Encrypted Memory Capabilities".
LEAF_MEM_ENCRYPT = 0x8000001F
ME_SME = 0  # EAX[0] Secure Memory Encryption
ME_SEV = 1  # EAX[1] Secure Encrypted Virtualization
ME_SEV_ES = 3  # EAX[3]
ME_SEV_SNP = 4  # EAX[4]

# What the report calls VM_CR's state, after the kernel's reading of it (SVMDIS decides;
# LOCK only says whether software could still clear SVMDIS).
VM_CR_ENABLED = "enabled"
VM_CR_DISABLED_LOCKED = "disabled_locked"
VM_CR_DISABLED_UNLOCKED = "disabled_unlocked"


def _bit(value: int, n: int) -> bool:
    return bool(value >> n & 1)


@dataclass(frozen=True)
class VmCr:
    """VM_CR (MSR 0xc0010114) decoded, APM Vol. 2 15.30.1."""

    value: int
    dpd: bool
    r_init: bool
    dis_a20m: bool
    lock: bool
    svmdis: bool
    reserved: tuple[int, ...]  # set bits in 63:5, which the APM reserves

    @property
    def raw(self) -> str:
        return f"0x{self.value:016x}"

    @property
    def state(self) -> str:
        if not self.svmdis:
            return VM_CR_ENABLED
        return VM_CR_DISABLED_LOCKED if self.lock else VM_CR_DISABLED_UNLOCKED

    def fields(self) -> dict[str, Any]:
        return {
            "raw": self.raw,
            "lock": self.lock,
            "svmdis": self.svmdis,
            "r_init": self.r_init,
            "dpd": self.dpd,
            "dis_a20m": self.dis_a20m,
            "reserved": list(self.reserved),
            "state": self.state,
        }


def decode_vm_cr(value: int) -> VmCr:
    value &= M64
    return VmCr(
        value,
        dpd=_bit(value, VM_CR_DPD),
        r_init=_bit(value, VM_CR_R_INIT),
        dis_a20m=_bit(value, VM_CR_DIS_A20M),
        lock=_bit(value, VM_CR_LOCK),
        svmdis=_bit(value, VM_CR_SVMDIS),
        reserved=tuple(b for b in range(5, 64) if _bit(value, b)),
    )


@dataclass(frozen=True)
class SevStatus:
    """SEV_STATUS (MSR 0xc0010131) decoded: which SEV features the hypervisor turned on
    for this guest."""

    value: int
    sev: bool
    sev_es: bool
    sev_snp: bool

    @property
    def raw(self) -> str:
        return f"0x{self.value:016x}"

    @property
    def active(self) -> str:
        """What Linux prints ("Memory Encryption Features active: AMD SEV SEV-ES"), or ""."""
        names = [n for n, on in (("SEV", self.sev), ("SEV-ES", self.sev_es), ("SEV-SNP", self.sev_snp)) if on]
        return " ".join(names)

    def fields(self) -> dict[str, Any]:
        return {"raw": self.raw, "sev": self.sev, "sev_es": self.sev_es, "sev_snp": self.sev_snp}


def decode_sev_status(value: int) -> SevStatus:
    value &= M64
    return SevStatus(
        value,
        sev=_bit(value, SEV_ENABLED),
        sev_es=_bit(value, SEV_ES_ENABLED),
        sev_snp=_bit(value, SEV_SNP_ENABLED),
    )


@dataclass(frozen=True)
class MemEncrypt:
    """CPUID Fn8000_001F EAX: the memory-encryption features the CPU offers."""

    eax: int
    sme: bool
    sev: bool
    sev_es: bool
    sev_snp: bool

    @property
    def reads_sev_status(self) -> bool:
        """Does Linux read SEV_STATUS at boot? sme_enable() (arch/x86/mm/mem_encrypt_identity.c)
        reads it only when EAX bit 0 (SME) or bit 1 (SEV) is set."""
        return self.sme or self.sev

    def fields(self) -> dict[str, Any]:
        return {
            "eax": f"0x{self.eax:08x}",
            "sme": self.sme,
            "sev": self.sev,
            "sev_es": self.sev_es,
            "sev_snp": self.sev_snp,
        }


def decode_mem_encrypt(eax: int) -> MemEncrypt:
    return MemEncrypt(
        eax,
        sme=_bit(eax, ME_SME),
        sev=_bit(eax, ME_SEV),
        sev_es=_bit(eax, ME_SEV_ES),
        sev_snp=_bit(eax, ME_SEV_SNP),
    )
