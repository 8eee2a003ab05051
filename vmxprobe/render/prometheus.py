"""The scan as node_exporter's textfile collector reads it (docs/fleet.md lists the
metrics). Writing the file atomically is the caller's job (vmxprobe.files.write_atomic,
whose temp file is named `.NAME.XXXX.tmp`: a name not ending in .prom, which the
collector skips)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from vmxprobe import __version__
from vmxprobe.arch.vmx import PAGE_SIZE
from vmxprobe.pipeline import ScanResult
from vmxprobe.printable import printable
from vmxprobe.render.report import SCHEMA_VERSION

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")

Samples = Iterable[tuple[dict[str, Any], Any]]


def _label_value(value: Any) -> str:
    # The text format's three escapes (backslash, double quote, line feed); anything
    # else is literal UTF-8. Other control characters from host data (a model name) are
    # first made visible escapes, whose backslash the format's escape then doubles.
    shown = "\n".join(printable(part) for part in str(value).split("\n"))
    return shown.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class _Families:
    """Metric families in the order they are added; a family is written only if it has
    a sample, so a value the scan could not read is an absent series (the Prometheus
    convention), never NaN or a made-up 0."""

    def __init__(self) -> None:
        self._families: list[tuple[str, str, list[str]]] = []

    def gauge(self, name: str, help_text: str, samples: Samples) -> None:
        assert _METRIC_NAME.fullmatch(name) and name.startswith("vmxprobe_"), name
        lines = []
        for labels, value in samples:
            if value is None:
                continue
            if isinstance(value, bool):
                value = int(value)
            label_text = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{label_text}}} {value}" if label_text else f"{name} {value}")
        if lines:
            self._families.append((name, help_text, lines))

    def text(self) -> str:
        out = []
        for name, help_text, lines in self._families:
            out.append(f"# HELP {name} {_help_text(help_text)}")
            out.append(f"# TYPE {name} gauge")
            out += lines
        return "\n".join(out) + "\n"


def _unset(value: int | None) -> Any:
    return "" if value is None else value


def render_prometheus(result: ScanResult) -> str:
    """The scan as gauges for node_exporter's textfile collector.

    No sample carries a timestamp: the collector rejects files that do. When the scan
    ran is the value of vmxprobe_last_scan_timestamp_seconds instead, so an alert can
    tell a stale file (the timer stopped) from a current one.
    """
    v, plan, scan = result.verdict, result.plan, result.readings
    basic, fc = v.basic, v.feature_control
    host = result.host
    topo = scan.topology
    f = _Families()
    f.gauge(
        "vmxprobe_info",
        "Which vmxprobe wrote these metrics, report schema and source; always 1.",
        [
            (
                {
                    "version": __version__,
                    "schema": SCHEMA_VERSION,
                    "source": scan.source_kind,
                    "source_name": scan.source_name,
                },
                1,
            )
        ],
    )
    f.gauge(
        "vmxprobe_ready",
        "1 if x86_vmx_init() and kvm_intel would both succeed (on AMD and Hygon hosts: "
        "x86_svm_init() and kvm_amd); 0 if not, or if it could not be determined (see "
        "vmxprobe_determined).",
        [({}, v.ready)],
    )
    f.gauge(
        "vmxprobe_determined",
        "1 if vmxprobe could read what the verdict depends on; 0 means "
        "vmxprobe_ready 0 is 'unknown', not 'not ready'.",
        [({}, v.determined)],
    )
    f.gauge(
        "vmxprobe_verdict_info",
        "What x86_vmx_init() and kvm_intel would return (ok or an errno, "
        "unknown if undetermined) and whether VMX is a hypervisor's emulation; always 1.",
        [
            (
                {
                    "x86_vmx_init": v.x86_vmx_init or "unknown",
                    "kvm_intel": v.kvm_intel or "unknown",
                    "emulated": v.emulated or "none",
                },
                1,
            )
        ],
    )
    f.gauge(
        "vmxprobe_svm_verdict_info",
        "What x86_svm_init() and kvm_amd would return (ok or an errno, unknown if undetermined), "
        "and which extension the readiness rests on: svm on AMD and Hygon hosts, vmx otherwise; "
        "always 1.",
        [
            (
                {
                    "x86_svm_init": v.x86_svm_init or "unknown",
                    "kvm_amd": v.kvm_amd or "unknown",
                    "virt": v.virt,
                },
                1,
            )
        ],
    )
    vm_cr = v.svm.vm_cr if v.svm is not None else None
    f.gauge(
        "vmxprobe_vm_cr_svmdis",
        "VM_CR (MSR 0xc0010114) SVMDIS bit (4) on the boot CPU of an AMD host: 1 means firmware "
        "disabled SVM (absent if unreadable or not AMD).",
        [({}, None if vm_cr is None else vm_cr.svmdis)],
    )
    f.gauge(
        "vmxprobe_vm_cr_locked",
        "VM_CR (MSR 0xc0010114) LOCK bit (3) on the boot CPU of an AMD host: 1 means SVMDIS "
        "cannot change until reset (absent if unreadable or not AMD).",
        [({}, None if vm_cr is None else vm_cr.lock)],
    )
    f.gauge(
        "vmxprobe_vm_cr_info",
        "VM_CR as the kernel reads it on an AMD host: enabled, disabled_locked (firmware turned "
        "SVM off for this boot), disabled_unlocked, or unreadable; always 1 (absent on other hosts).",
        [({"state": "unreadable" if vm_cr is None else vm_cr.state}, 1 if v.svm is not None else None)],
    )
    f.gauge(
        "vmxprobe_cpu_info",
        "The boot CPU: vendor, family/model/stepping, model name, and the "
        "hypervisor this host is a guest of (none on bare metal); always 1.",
        [
            (
                {
                    "vendor": host.vendor or "unknown",
                    "family": _unset(host.family),
                    "model": _unset(host.model),
                    "stepping": _unset(host.stepping),
                    "model_name": host.model_name or "",
                    "hypervisor": host.hypervisor or "none",
                },
                1,
            )
        ],
    )
    f.gauge(
        "vmxprobe_cpus",
        "CPUs by state: possible, present, online, and read (probed) by this scan.",
        [
            ({"state": state}, len(set(cpus)))
            for state, cpus in (
                ("possible", topo.possible),
                ("present", topo.present),
                ("online", topo.online),
                ("probed", scan.cpus),
            )
        ],
    )
    f.gauge(
        "vmxprobe_vmx_revision_id",
        "VMCS revision identifier, IA32_VMX_BASIC bits 30:0 (absent if unreadable).",
        [({}, None if basic is None else basic.revision_id)],
    )
    f.gauge(
        "vmxprobe_vmcs_size_bytes",
        "VMCS region size, IA32_VMX_BASIC bits 44:32 (absent if unreadable).",
        [({}, None if basic is None else basic.vmcs_size)],
    )
    f.gauge(
        "vmxprobe_feature_control_locked",
        "IA32_FEATURE_CONTROL lock bit (0) on the boot CPU (absent if unreadable).",
        [({}, None if fc is None else fc.locked)],
    )
    f.gauge(
        "vmxprobe_feature_control_vmx_outside_smx",
        "IA32_FEATURE_CONTROL 'VMX outside SMX' bit (2) on the boot CPU (absent if unreadable).",
        [({}, None if fc is None else fc.vmx_outside_smx)],
    )
    f.gauge(
        "vmxprobe_feature_control_info",
        "IA32_FEATURE_CONTROL as the kernel reads it: enabled_locked, "
        "disabled_locked (firmware turned VMX off), unlocked, or unreadable; always 1.",
        [({"state": "unreadable" if fc is None else fc.state}, 1)],
    )
    f.gauge(
        "vmxprobe_root_vmcs_pages",
        "Root VMCS pages x86_vmx_init() allocates: one per possible CPU (0 on a host judged "
        "by SVM, which has none).",
        [({}, len(plan.pages))],
    )
    f.gauge(
        "vmxprobe_root_vmcs_bytes", "Memory the root VMCS pages take.", [({}, len(plan.pages) * PAGE_SIZE)]
    )
    f.gauge(
        "vmxprobe_last_scan_timestamp_seconds",
        "When the scan ran, in seconds since the Unix epoch.",
        [({}, result.scanned_at)],
    )
    return f.text()


def output_note(path: str) -> str | None:
    """What would make the collector ignore the file at `path`, said before it does."""
    import os

    if not os.path.basename(path).endswith(".prom"):
        return f"{path}: node_exporter's textfile collector reads only *.prom files"
    return None
