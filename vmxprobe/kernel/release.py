"""Which kernel's rules a verdict applies: the host's release (proc/sys/kernel/osrelease),
mapped to the rules of that version, or current upstream when the release is unknown.

Each rule that changed between releases names the first release that has the new form
(CHANGES below); a model is "version >= change" for each of them. The versions are those
of the kernel.org releases the changes were merged for; docs/kernel-model.md gives the
commit or series behind each, and how sure each date is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Version = tuple[int, int]

# The oldest kernel whose rules are modelled. Before 6.1, setup_vmcs_config() built its
# masks inline, with rules 6.1 dropped (arch/x86/kvm/vmx/vmx.c in 6.0: TPR shadow drops CR8
# exiting, EPT drops CR3/INVLPG exiting): an older host is judged by 6.1's rules, and the
# verdict says so.
OLDEST: Version = (6, 1)
# Current upstream: torvalds/linux with arch/x86/virt/hw.c (commit 0eaed89c18ae), first
# released in 7.1.
MAINLINE: Version = (7, 1)

# First release with each change (docs/kernel-model.md, "Change points").
KVM_PER_CPU_SUPPORT: Version = (6, 3)  # kvm_is_vmx_supported()/this_cpu_has(); compat on online
EVMCS_SANITIZE: Version = (6, 3)  # evmcs_sanitize_exec_ctrls() back in setup_vmcs_config()
SVM_PER_CPU: Version = (6, 3)  # kvm_is_svm_supported() per CPU, VM_CR read on each CPU
SVMDIS_CLEARS_FLAG: Version = (6, 6)  # init_amd() clears X86_FEATURE_SVM on VM_CR.SVMDIS
CR4_LAM: Version = (6, 8)  # X86_FEATURE_LAM in __cr4_reserved_bits()
EPT_VIOLATION_VE: Version = (6, 10)  # SECONDARY_EXEC_EPT_VIOLATION_VE optional
PERF_GLOBAL_ERRATUM: Version = (6, 13)  # Nehalem/Westmere clear LOAD_PERF_GLOBAL_CTRL in vmcs_config
PAIRS_ALL: Version = (6, 15)  # vmx_check_entry_exit_pairs(): every pair, new message
KVM_CET: Version = (6, 18)  # CET entry/exit pair, CET in CR4 reserved bits
HW_C: Version = (7, 1)  # arch/x86/virt/hw.c: root VMCS at boot, VMX flag cleared on failure


@dataclass(frozen=True)
class KernelModel:
    """The rules a verdict applies."""

    version: Version  # the release whose rules apply
    release: str | None  # osrelease as the host gave it; None when unknown
    note: str | None = None  # why the rules differ from the release's own, if they do

    def has(self, change: Version) -> bool:
        return self.version >= change

    @property
    def name(self) -> str:
        """What the report calls the model: "Linux 6.1" or "Linux 7.1 (mainline)"."""
        major, minor = self.version
        return f"Linux {major}.{minor}" + (" (mainline)" if self.version == MAINLINE else "")

    @property
    def kvm_prefix(self) -> str:
        """The prefix of kvm_intel's and kvm_amd's messages: 6.3 gave every KVM module its
        own pr_fmt ("KVM: x86: Unify pr_fmt to use module name for all KVM modules")."""
        return "" if self.has(KVM_PER_CPU_SUPPORT) else "kvm: "

    @property
    def root_vmcs_by(self) -> str:
        """Which code allocates the root VMCS pages on this kernel."""
        if self.has(HW_C):
            return "x86_vmx_init() at boot (arch/x86/virt/hw.c)"
        return "kvm_intel's alloc_kvm_area() when the module loads (arch/x86/kvm/vmx/vmx.c)"

    def line(self) -> str:
        """The one line the text output gives."""
        where = f"release {self.release}" if self.release else "release unknown: current upstream"
        text = f"kernel model: {self.name} rules ({where}); root VMCS pages by {self.root_vmcs_by}"
        return text + (f"; {self.note}" if self.note else "")


_RELEASE = re.compile(r"(\d+)\.(\d+)")


def model_for(release: str | None) -> KernelModel:
    """The model for a host's osrelease ("6.1.0-57-amd64"); current upstream when the
    release is unknown or unreadable."""
    m = _RELEASE.match(release or "")
    if m is None or len(m.group(1)) > 3 or len(m.group(2)) > 3:
        if not release:
            return KernelModel(MAINLINE, None)
        # A release the kernel's own "MAJOR.MINOR" scheme cannot give: say so, rather than
        # name the current upstream rules as though they were this kernel's.
        return KernelModel(MAINLINE, release, "release not understood: judged by current upstream")
    version = (int(m.group(1)), int(m.group(2)))
    if version < OLDEST:
        return KernelModel(
            OLDEST,
            release,
            f"kernels before {OLDEST[0]}.{OLDEST[1]} are judged by its rules: their "
            "setup_vmcs_config() masks differ in ways not modelled",
        )
    if version > MAINLINE:
        return KernelModel(
            MAINLINE,
            release,
            f"newer than the newest modelled ({MAINLINE[0]}.{MAINLINE[1]}): judged by its rules",
        )
    return KernelModel(version, release)
