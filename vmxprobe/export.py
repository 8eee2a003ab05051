"""Exports of one scan report for the tools fleets already run.

prometheus: node_exporter's textfile collector format (docs/fleet.md lists the metrics).
nfd:        a Kubernetes node-feature-discovery features.d file (labels in vmxprobe.io/).

Both take the report dict that `vmxprobe scan` builds (schema/report-v1.json) and
return text; writing it atomically is the caller's job (vmxprobe.output.write_atomic,
whose temp file is named `.NAME.XXXX.tmp`: a dot-file that NFD skips, and a name not
ending in .prom that the textfile collector skips).
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone

# --- shared ----------------------------------------------------------------------------


class ExportError(ValueError):
    """A setting (an environment variable) that an export cannot use."""


_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> int:
    """'90s', '15m', '3h', '7d', '2w', or a sum such as '1d12h' -> seconds (> 0).

    A bare number is refused: '7' could mean seconds or days, and guessing wrong
    would silently expire labels or keep stale reports.
    """
    s = (text or "").strip().lower()
    pos, total = 0, 0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ExportError(f"{text!r} is not a duration: use a number with a unit, "
                          "s, m, h, d or w (e.g. 90m, 7d, 1d12h)")
    if total <= 0:
        raise ExportError(f"{text!r}: the duration must be longer than zero")
    return total


def _generated_at(report: dict) -> datetime:
    return datetime.strptime(report["generated_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


# --- Prometheus textfile ---------------------------------------------------------------

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def _label_value(value) -> str:
    # The text format's three escapes; anything else (UTF-8 included) is literal.
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class _Families:
    """Metric families in the order they are added; a family is written only if it has
    a sample, so a value the scan could not read is an absent series (the Prometheus
    convention), never NaN or a made-up 0."""

    def __init__(self):
        self._families: list[tuple[str, str, list[str]]] = []

    def gauge(self, name: str, help_text: str, samples):
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


def render_prometheus(report: dict) -> str:
    """The report as gauges for node_exporter's textfile collector.

    No sample carries a timestamp: the collector rejects files that do. When the scan
    ran is the value of vmxprobe_last_scan_timestamp_seconds instead, so an alert can
    tell a stale file (the timer stopped) from a current one.
    """
    v, plan, host = report["verdict"], report["plan"], report["host"]
    basic, fc, cpus, src = report["vmx_basic"], report["feature_control"], report["cpus"], report["source"]
    determined = v.get("determined", True)
    f = _Families()
    f.gauge("vmxprobe_info", "Which vmxprobe wrote these metrics, report schema and source; always 1.",
            [({"version": report["tool"]["version"], "schema": report["schema_version"],
               "source": src["kind"], "source_name": src["name"]}, 1)])
    f.gauge("vmxprobe_ready", "1 if x86_vmx_init() and kvm_intel would both succeed; 0 if not, "
            "or if it could not be determined (see vmxprobe_determined).", [({}, bool(v["ready"]))])
    f.gauge("vmxprobe_determined", "1 if vmxprobe could read what the verdict depends on; 0 means "
            "vmxprobe_ready 0 is 'unknown', not 'not ready'.", [({}, bool(determined))])
    f.gauge("vmxprobe_verdict_info", "What x86_vmx_init() and kvm_intel would return (ok or an errno, "
            "unknown if undetermined) and whether VMX is a hypervisor's emulation; always 1.",
            [({"x86_vmx_init": v["x86_vmx_init"] or "unknown", "kvm_intel": v["kvm_intel"] or "unknown",
               "emulated": v.get("emulated") or "none"}, 1)])
    f.gauge("vmxprobe_cpu_info", "The boot CPU: vendor, family/model/stepping, model name, and the "
            "hypervisor this host is a guest of (none on bare metal); always 1.",
            [({"vendor": host["vendor"] or "unknown",
               "family": "" if host["family"] is None else host["family"],
               "model": "" if host["model"] is None else host["model"],
               "stepping": "" if host["stepping"] is None else host["stepping"],
               "model_name": host.get("model_name") or "",
               "hypervisor": host["hypervisor"] or "none"}, 1)])
    f.gauge("vmxprobe_cpus", "CPUs by state: possible, present, online, and read (probed) by this scan.",
            [({"state": state}, _cpulist_count(cpus[state]))
             for state in ("possible", "present", "online", "probed")])
    f.gauge("vmxprobe_vmx_revision_id", "VMCS revision identifier, IA32_VMX_BASIC bits 30:0 "
            "(absent if unreadable).", [({}, None if basic is None else basic["revision_id"])])
    f.gauge("vmxprobe_vmcs_size_bytes", "VMCS region size, IA32_VMX_BASIC bits 44:32 (absent if unreadable).",
            [({}, None if basic is None else basic["vmcs_size"])])
    f.gauge("vmxprobe_feature_control_locked", "IA32_FEATURE_CONTROL lock bit (0) on the boot CPU "
            "(absent if unreadable).", [({}, None if fc is None else bool(fc["locked"]))])
    f.gauge("vmxprobe_feature_control_vmx_outside_smx", "IA32_FEATURE_CONTROL 'VMX outside SMX' bit (2) "
            "on the boot CPU (absent if unreadable).", [({}, None if fc is None else bool(fc["vmx_outside_smx"]))])
    f.gauge("vmxprobe_feature_control_info", "IA32_FEATURE_CONTROL as the kernel reads it: enabled_locked, "
            "disabled_locked (firmware turned VMX off), unlocked, or unreadable; always 1.",
            [({"state": "unreadable" if fc is None else fc["state"]}, 1)])
    f.gauge("vmxprobe_root_vmcs_pages", "Root VMCS pages x86_vmx_init() allocates: one per possible CPU.",
            [({}, plan["pages"])])
    f.gauge("vmxprobe_root_vmcs_bytes", "Memory the root VMCS pages take.", [({}, plan["bytes"])])
    f.gauge("vmxprobe_last_scan_timestamp_seconds", "When the scan ran, in seconds since the Unix epoch.",
            [({}, int(_generated_at(report).timestamp()))])
    return f.text()


def _cpulist_count(text: str) -> int:
    from vmxprobe.cpulist import parse_cpulist
    return len(parse_cpulist(text))


# --- Kubernetes node-feature-discovery features.d --------------------------------------

# Not kubernetes.io: nfd-master always denies *.kubernetes.io except its own feature
# namespaces, and labels there would claim to come from NFD itself. nfd-master 0.13 and
# later allow any other namespace; older ones need -extra-label-ns=vmxprobe.io.
NFD_NAMESPACE = "vmxprobe.io"
NFD_EXPIRY_ENV = "VMXPROBE_NFD_EXPIRY"
NFD_DEFAULT_EXPIRY = "24h"
# nfd-worker skips a features.d file larger than this.
NFD_MAX_FILE_BYTES = 65536

LABEL_VALUE_MAX = 63
_LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_.-]+")


def label_value(value) -> str:
    """Any value as a valid Kubernetes label value: characters outside [A-Za-z0-9_.-]
    become '-', at most 63 characters, starting and ending alphanumeric ('' if nothing
    is left: the caller then leaves the label out)."""
    if isinstance(value, bool):
        value = "true" if value else "false"
    text = _NOT_ALLOWED.sub("-", str(value))
    text = re.sub(r"^[^A-Za-z0-9]+", "", text)[:LABEL_VALUE_MAX]
    return re.sub(r"[^A-Za-z0-9]+$", "", text)


def valid_label(name: str, value: str) -> bool:
    prefix, slash, key = name.rpartition("/")
    if not slash or len(prefix) > 253 or not all(_LABEL_NAME.fullmatch(p) for p in prefix.split(".")):
        return False
    return (bool(_LABEL_NAME.fullmatch(key)) and len(value) <= LABEL_VALUE_MAX
            and bool(_LABEL_VALUE.fullmatch(value)))


def nfd_labels(report: dict) -> dict[str, str]:
    """The labels, name -> value, all in NFD_NAMESPACE and all valid."""
    v, host, basic, fc, plan = (report["verdict"], report["host"], report["vmx_basic"],
                                report["feature_control"], report["plan"])
    raw = {
        "ready": bool(v["ready"]),
        "determined": bool(v.get("determined", True)),
        "x86-vmx-init": v["x86_vmx_init"] or "unknown",
        "kvm-intel": v["kvm_intel"] or "unknown",
        "nested-vmx": v.get("emulated") is not None,
        "feature-control": "unreadable" if fc is None else fc["state"],
        "vmcs-revision": None if basic is None else f"0x{basic['revision_id']:x}",
        "vmcs-size": None if basic is None else basic["vmcs_size"],
        "root-vmcs-pages": plan["pages"],
        "hypervisor": host["hypervisor"] or "none",
        "cpu-vendor": host["vendor"],
        "version": report["tool"]["version"],
        "source": report["source"]["kind"],
    }
    labels = {}
    for key, value in raw.items():
        if value is None:
            continue
        text = label_value(value)
        if text:
            labels[f"{NFD_NAMESPACE}/{key}"] = text
    return labels


def nfd_expiry_seconds(environ=os.environ) -> int:
    text = environ.get(NFD_EXPIRY_ENV) or NFD_DEFAULT_EXPIRY
    try:
        return parse_duration(text)
    except ExportError as e:
        raise ExportError(f"{NFD_EXPIRY_ENV}: {e}") from None


def render_nfd(report: dict, environ=os.environ) -> str:
    """A features.d file: a comment, the expiry directive, then name=value lines.

    The expiry directive comes first because nfd-worker applies it to the lines after
    it. Expiry counts from the scan, so labels from a scanner that stopped running drop
    off the node instead of describing it forever.
    """
    expires = _generated_at(report) + timedelta(seconds=nfd_expiry_seconds(environ))
    lines = [f"# vmxprobe {report['tool']['version']}: VMX readiness of this node, "
             f"scanned {report['generated_at']} (report schema {report['schema_version']})",
             f"# +expiry-time={expires.strftime('%Y-%m-%dT%H:%M:%SZ')}"]
    lines += [f"{name}={value}" for name, value in nfd_labels(report).items()]
    text = "\n".join(lines) + "\n"
    assert len(text.encode()) <= NFD_MAX_FILE_BYTES
    return text


RENDERERS = {"prometheus": render_prometheus, "nfd": render_nfd}


def output_notes(fmt: str, output) -> list[str]:
    """What would make the consumer ignore the file at `output`, said before it does."""
    if output is None:
        return []
    base = os.path.basename(output)
    if fmt == "prometheus" and not base.endswith(".prom"):
        return [f"{output}: node_exporter's textfile collector reads only *.prom files"]
    if fmt == "nfd" and base.startswith("."):
        return [f"{output}: nfd-worker ignores features.d files whose names start with '.'"]
    return []
