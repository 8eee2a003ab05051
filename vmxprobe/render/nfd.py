"""The scan as a Kubernetes node-feature-discovery features.d file (labels in
vmxprobe.io/). Writing it atomically is the caller's job (vmxprobe.files.write_atomic,
whose temp file is a dot-file, which nfd-worker skips)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from vmxprobe import __version__
from vmxprobe.durations import DurationError, parse_duration
from vmxprobe.pipeline import ScanResult
from vmxprobe.render.report import SCHEMA_VERSION


class ExportError(ValueError):
    """A setting (an environment variable) that the export cannot use."""


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


def label_value(value: Any) -> str:
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
    return (
        bool(_LABEL_NAME.fullmatch(key))
        and len(value) <= LABEL_VALUE_MAX
        and bool(_LABEL_VALUE.fullmatch(value))
    )


def nfd_labels(result: ScanResult) -> dict[str, str]:
    """The labels, name -> value, all in NFD_NAMESPACE and all valid."""
    v = result.verdict
    basic, fc = v.basic, v.feature_control
    host = result.host
    raw: dict[str, Any] = {
        "ready": v.ready,
        "determined": v.determined,
        "x86-vmx-init": v.x86_vmx_init or "unknown",
        "kvm-intel": v.kvm_intel or "unknown",
        "x86-svm-init": v.x86_svm_init or "unknown",
        "kvm-amd": v.kvm_amd or "unknown",
        "virt": v.virt,
        "nested-vmx": v.emulated is not None,
        "feature-control": "unreadable" if fc is None else fc.state,
        "vm-cr": None if v.svm is None else ("unreadable" if v.svm.vm_cr is None else v.svm.vm_cr.state),
        "vmcs-revision": None if basic is None else f"0x{basic.revision_id:x}",
        "vmcs-size": None if basic is None else basic.vmcs_size,
        "root-vmcs-pages": len(result.plan.pages),
        "hypervisor": host.hypervisor or "none",
        "cpu-vendor": host.vendor,
        "version": __version__,
        "source": result.readings.source_kind,
    }
    labels = {}
    for key, value in raw.items():
        if value is None:
            continue
        text = label_value(value)
        if text:
            labels[f"{NFD_NAMESPACE}/{key}"] = text
    return labels


def nfd_expiry_seconds(environ: Mapping[str, str] = os.environ) -> int:
    text = environ.get(NFD_EXPIRY_ENV) or NFD_DEFAULT_EXPIRY
    try:
        return parse_duration(text)
    except DurationError as e:
        raise ExportError(f"{NFD_EXPIRY_ENV}: {e}") from None


def render_nfd(result: ScanResult, environ: Mapping[str, str] = os.environ) -> str:
    """A features.d file: a comment, the expiry directive, then name=value lines.

    The expiry directive comes first because nfd-worker applies it to the lines after
    it. Expiry counts from the scan, so labels from a scanner that stopped running drop
    off the node instead of describing it forever.
    """
    scanned = datetime.fromtimestamp(result.scanned_at, timezone.utc)
    expires = scanned + timedelta(seconds=nfd_expiry_seconds(environ))
    lines = [
        f"# vmxprobe {__version__}: VMX/SVM readiness of this node, "
        f"scanned {result.generated_at} (report schema {SCHEMA_VERSION})",
        f"# +expiry-time={expires.strftime('%Y-%m-%dT%H:%M:%SZ')}",
    ]
    lines += [f"{name}={value}" for name, value in nfd_labels(result).items()]
    text = "\n".join(lines) + "\n"
    assert len(text.encode()) <= NFD_MAX_FILE_BYTES
    return text


def output_note(path: str) -> str | None:
    """What would make nfd-worker ignore the file at `path`, said before it does."""
    if os.path.basename(path).startswith("."):
        return f"{path}: nfd-worker ignores features.d files whose names start with '.'"
    return None
