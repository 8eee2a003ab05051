"""Fleet inventory: many scan reports summarised in constant memory.

    vmxprobe fleet REPORT...|DIR        (the same as `vmxprobe fleet summary ...`)

The summary streams. Each report is read, parsed, checked and folded into counters,
then dropped. Lists of problem hosts are capped (--limit) and say how many were cut;
they keep the first hosts by name, so the output does not depend on directory order.
The only per-report state is one 8-byte slot in the duplicate-name table. docs/fleet.md
is the user's guide.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, Callable, TextIO

from vmxprobe import __version__
from vmxprobe.exitcodes import EXIT_NOT_READY, EXIT_READY, EXIT_UNKNOWN
from vmxprobe.files import write_atomic
from vmxprobe.fleet import bounded
from vmxprobe.fleet.bounded import OTHER, Capped, Counter, NameSet
from vmxprobe.fleet.check import (
    SUMMARY_KIND,
    Invalid,
    UnknownSchema,
    Unreadable,
    parse_timestamp,
    read_report,
)
from vmxprobe.fleet.inputs import iter_paths
from vmxprobe.host.cpulist import parse_cpulist
from vmxprobe.printable import printable

DEFAULT_LIMIT = 20
# Below this many reports a progress bar is noise.
PROGRESS_MIN = 200

OUTPUT_VERSION = 1

STATUSES = ("ready", "not_ready", "undetermined")
SKIPPED = ("unreadable", "invalid", "unknown_schema")

Style = Callable[..., str]


def plain(text: str, **kw: Any) -> str:
    return text


HOST_FROM = ("filename", "source")


def host_name(path: str, doc: dict | None, host_from: str) -> str:
    """The host a report is about. The report itself does not name the machine (a live
    scan's source.name is the root it read, "/"), so by default the file name says it:
    `web01.json` is web01, which is how the Ansible playbook names what it fetches."""
    if host_from == "source" and doc is not None and doc["source"]["name"]:
        return doc["source"]["name"]
    base = os.path.basename(path)
    return base[:-5] if base.lower().endswith(".json") and len(base) > 5 else base


def status_of(doc: dict) -> str:
    v = doc["verdict"]
    if v["ready"]:
        return "ready"
    return "not_ready" if v.get("determined", True) else "undetermined"


def first_reason(doc: dict) -> str:
    v = doc["verdict"]
    items = (v.get("undetermined") or v["reasons"]) if status_of(doc) == "undetermined" else v["reasons"]
    return items[0] if items else ""


def virt_of(doc: dict) -> str:
    """The extension a report's verdict rests on: "svm" on AMD hosts, "vmx" otherwise and
    in reports written before the field existed."""
    return doc["verdict"].get("virt") or "vmx"


def verdict_key(doc: dict) -> str:
    """The kernel's two steps for the host's extension, as one group key."""
    v = doc["verdict"]
    if virt_of(doc) == "svm":
        pairs = (("x86_svm_init", v.get("x86_svm_init")), ("kvm_amd", v.get("kvm_amd")))
    else:
        pairs = (("x86_vmx_init", v["x86_vmx_init"]), ("kvm_intel", v["kvm_intel"]))
    return ", ".join(f"{name} {_errno(e)}" for name, e in pairs)


def _errno(e: str | None) -> str:
    return "unknown" if e is None else ("ok" if e == "ok" else f"-{e}")


def vm_cr_state(doc: dict) -> str:
    svm = doc.get("svm")
    if not isinstance(svm, dict):
        return "unreadable"
    vm_cr = svm.get("vm_cr")
    return vm_cr["state"] if isinstance(vm_cr, dict) else "unreadable"


def possible_count(doc: dict) -> int:
    """Possible CPUs: the plan's pages on a VMX host, the CPU list where no plan applies."""
    if doc["plan"].get("applies", True):
        return doc["plan"]["pages"]
    return len(parse_cpulist(doc["cpus"]["possible"]))


def revision_of(doc: dict) -> int | None:
    basic = doc["vmx_basic"]
    if basic is not None:
        return basic["revision_id"]
    return doc["plan"].get("revision_id")


def revision_text(rid: int | None) -> str:
    return "unknown" if rid is None else f"0x{rid:08x}"


def cpu_signature(host: dict) -> str:
    sig = [host[k] for k in ("family", "model", "stepping")]
    return "" if all(s is None for s in sig) else "/".join("?" if s is None else str(s) for s in sig)


def cpu_model(host: dict) -> str:
    sig = cpu_signature(host)
    name = host.get("model_name") or host["vendor"]
    if name and sig:
        return f"{name} ({sig})"
    return name or sig or "unknown"


# --- the summary -------------------------------------------------------------------------

CSV_COLUMNS = (
    "host",
    "file",
    "status",
    "ready",
    "determined",
    "x86_vmx_init",
    "kvm_intel",
    "revision_id",
    "vmcs_size",
    "feature_control",
    "cpu_vendor",
    "cpu_signature",
    "cpu_model_name",
    "hypervisor",
    "emulated",
    "possible_cpus",
    "kernel",
    "tool_version",
    "generated_at",
    "source_kind",
    "source_name",
    "stale",
    "duplicate",
    "reason",
    # Added with the AMD verdict, at the end so that columns keep their positions.
    "virt",
    "x86_svm_init",
    "kvm_amd",
    "vm_cr",
)


class Summary:
    """Folds reports in one at a time; holds counters and capped lists only."""

    def __init__(
        self,
        limit: int | None = DEFAULT_LIMIT,
        stale_after: int | None = None,
        host_from: str = "filename",
        now: float | None = None,
    ):
        self.limit = limit
        self.stale_after = stale_after
        self.host_from = host_from
        self.now = time.time() if now is None else now
        self.files = 0
        self.readiness = dict.fromkeys(STATUSES, 0)
        self.groups = {
            name: Counter()
            for name in (
                "verdict",
                "virt",
                "revision_id",
                "vmcs_size",
                "feature_control",
                "vm_cr",
                "cpu_model",
                "hypervisor",
                "tool_version",
            )
        }
        self.lists = {
            name: Capped(limit)
            for name in ("not_ready", "undetermined", "stale", "fixtures", "duplicates") + SKIPPED
        }
        self.names = NameSet()
        self.duplicate_reports = 0
        self.oldest: tuple[float, str] | None = None
        self.newest: tuple[float, str] | None = None

    def add_path(self, path: str) -> dict:
        """Read, check and count one file; returns its CSV row."""
        self.files += 1
        try:
            doc = read_report(path)
        except Unreadable as e:
            return self._skip("unreadable", path, str(e))
        except UnknownSchema as e:
            return self._skip("unknown_schema", path, str(e), schema_version=e.version)
        except Invalid as e:
            return self._skip("invalid", path, str(e))
        return self.add(doc, path)

    def add_error(self, path: str, message: str) -> dict:
        self.files += 1
        return self._skip("unreadable", path, message)

    def _skip(self, what, path, message, **extra) -> dict:
        host = host_name(path, None, "filename")
        self.lists[what].add((host, path), {"host": host, "file": path, "error": message, **extra})
        return {"host": host, "file": path, "status": what, "reason": message}

    def add(self, doc: dict, path: str) -> dict:
        host = host_name(path, doc, self.host_from)
        status = status_of(doc)
        self.readiness[status] += 1
        v, hostinfo, basic, fc, src = (
            doc["verdict"],
            doc["host"],
            doc["vmx_basic"],
            doc["feature_control"],
            doc["source"],
        )
        rid = revision_of(doc)
        virt = virt_of(doc)
        g = self.groups
        g["verdict"].add(verdict_key(doc))
        g["virt"].add(virt)
        # The VMX registers say nothing about a host judged by SVM, and VM_CR nothing
        # about one judged by VMX: each host is counted under its own extension's.
        if virt == "svm":
            g["vm_cr"].add(vm_cr_state(doc))
        else:
            g["revision_id"].add(revision_text(rid))
            g["vmcs_size"].add("unknown" if basic is None else str(basic["vmcs_size"]))
            g["feature_control"].add("unreadable" if fc is None else fc["state"])
        g["cpu_model"].add(cpu_model(hostinfo))
        g["hypervisor"].add(hostinfo["hypervisor"] or "none")
        g["tool_version"].add(doc["tool"]["version"])
        key = (host, path)
        reason = first_reason(doc) if status != "ready" else ""
        if status != "ready":
            self.lists[status].add(
                key,
                {
                    "host": host,
                    "file": path,
                    "reason": reason,
                    "x86_vmx_init": v["x86_vmx_init"],
                    "kvm_intel": v["kvm_intel"],
                    "x86_svm_init": v.get("x86_svm_init"),
                    "kvm_amd": v.get("kvm_amd"),
                    "virt": virt,
                },
            )
        when = parse_timestamp(doc["generated_at"])
        if self.oldest is None or when < self.oldest[0]:
            self.oldest = (when, doc["generated_at"])
        if self.newest is None or when > self.newest[0]:
            self.newest = (when, doc["generated_at"])
        age = self.now - when
        stale = self.stale_after is not None and age > self.stale_after
        if stale:
            self.lists["stale"].add(
                key,
                {"host": host, "file": path, "generated_at": doc["generated_at"], "age_seconds": int(age)},
            )
        if src["kind"] == "fixture":
            self.lists["fixtures"].add(key, {"host": host, "file": path, "fixture": src["name"]})
        seen = self.names.add(host)
        if seen:
            self.duplicate_reports += 1
            if seen == 1:
                self.lists["duplicates"].add((host,), {"host": host})
        return {
            "host": host,
            "file": path,
            "status": status,
            "ready": v["ready"],
            "determined": v.get("determined", True),
            "x86_vmx_init": v["x86_vmx_init"] or "",
            "kvm_intel": v["kvm_intel"] or "",
            "revision_id": "" if rid is None else revision_text(rid),
            "vmcs_size": "" if basic is None else basic["vmcs_size"],
            "feature_control": "" if fc is None else fc["state"],
            "cpu_vendor": hostinfo["vendor"] or "",
            "cpu_signature": cpu_signature(hostinfo),
            "cpu_model_name": hostinfo.get("model_name") or "",
            "hypervisor": hostinfo["hypervisor"] or "",
            "emulated": v.get("emulated") or "",
            "possible_cpus": possible_count(doc),
            "kernel": hostinfo["kernel"] or "",
            "tool_version": doc["tool"]["version"],
            "generated_at": doc["generated_at"],
            "source_kind": src["kind"],
            "source_name": src["name"],
            "stale": stale,
            "duplicate": bool(seen),
            "reason": reason,
            "virt": virt,
            "x86_svm_init": v.get("x86_svm_init") or "",
            "kvm_amd": v.get("kvm_amd") or "",
            "vm_cr": vm_cr_state(doc) if virt == "svm" else "",
        }

    # -- results --

    @property
    def read(self) -> int:
        return sum(self.readiness.values())

    @property
    def skipped(self) -> int:
        return sum(self.lists[k].count for k in SKIPPED)

    def exit_code(self) -> int:
        if self.readiness["not_ready"]:
            return EXIT_NOT_READY
        if self.readiness["undetermined"] or self.skipped or self.lists["stale"].count:
            return EXIT_UNKNOWN
        return EXIT_READY

    def as_json(self) -> dict:
        lists = {name: c.as_json() for name, c in self.lists.items()}
        lists["duplicates"]["extra_reports"] = self.duplicate_reports
        return {
            "kind": SUMMARY_KIND,
            "version": OUTPUT_VERSION,
            "tool": {"name": "vmxprobe", "version": __version__},
            "generated_at": datetime.fromtimestamp(self.now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "options": {
                "host_from": self.host_from,
                "stale_after_seconds": self.stale_after,
                "limit": self.limit,
            },
            "reports": {
                "files": self.files,
                "read": self.read,
                "skipped": self.skipped,
                "oldest": self.oldest and self.oldest[1],
                "newest": self.newest and self.newest[1],
            },
            "readiness": dict(self.readiness),
            **{f"by_{name}": dict(c.ordered()) for name, c in self.groups.items()},
            **lists,
            "exit_code": self.exit_code(),
        }

    def render_text(self, style: Style = plain) -> str:
        n = self.read
        out = [
            f"vmxprobe fleet: {self.files} report file(s): {n} read, {self.skipped} skipped"
            + (f"; scanned {self.oldest[1]} .. {self.newest[1]}" if self.oldest and self.newest else "")
        ]

        def pct(k):
            return f" ({100 * k / n:.1f}%)" if n else ""

        r = self.readiness
        out.append(
            "Readiness: "
            + ", ".join(
                [
                    style(f"{r['ready']} ready{pct(r['ready'])}", fg="green"),
                    style(
                        f"{r['not_ready']} not ready{pct(r['not_ready'])}",
                        fg="red" if r["not_ready"] else None,
                    ),
                    style(
                        f"{r['undetermined']} could not be determined{pct(r['undetermined'])}",
                        fg="yellow" if r["undetermined"] else None,
                    ),
                ]
            )
        )
        titles = {
            "verdict": "Kernel verdict",
            "virt": "Extension (vmx: Intel VT-x, svm: AMD-V)",
            "revision_id": "VMCS revision id",
            "vmcs_size": "VMCS size (bytes)",
            "feature_control": "IA32_FEATURE_CONTROL",
            "vm_cr": "VM_CR (SVM hosts)",
            "cpu_model": "CPU model (family/model/stepping)",
            "hypervisor": "Hypervisor",
            "tool_version": "vmxprobe version",
        }
        for name, title in titles.items():
            c = self.groups[name]
            if not c.counts:
                continue
            shown = {"none": "none (bare metal)"} if name == "hypervisor" else {}
            out.append(f"{title}:")
            out += [f"  {count:>8}  {printable(shown.get(key, key))}" for key, count in c.ordered()]
            if c.folded:
                out.append(
                    f"  ({c.folded} report(s) with values past the first "
                    f"{bounded.MAX_GROUP_KEYS} are under {OTHER})"
                )

        def section(name, title, line):
            c = self.lists[name]
            if not c.count:
                return
            out.append(style(f"{title} ({c.count}):", bold=True))
            # Host names, file names and reasons come from the reports: escaped, so that
            # none of them can draw on the terminal or start a line of its own.
            out.extend("  " + printable(line(item)) for item in c.items())
            if c.cut:
                out.append(f"  ... and {c.cut} more (--limit N, or --format csv for every report)")

        section("not_ready", "Not ready", lambda i: f"{i['host']}: {i['reason']}")
        section("undetermined", "Could not be determined", lambda i: f"{i['host']}: {i['reason']}")
        if self.stale_after is not None:
            section(
                "stale",
                f"Stale (scanned more than {format_duration(self.stale_after)} ago)",
                lambda i: (
                    f"{i['host']}: scanned {i['generated_at']} ({format_duration(i['age_seconds'])} ago)"
                ),
            )
        section(
            "fixtures",
            "From fixtures, not hosts",
            lambda i: f"{i['host']}: fixture {i['fixture']} ({i['file']})",
        )
        section("duplicates", "Host names in more than one report", lambda i: f"{i['host']}")
        section("unknown_schema", "Skipped, unknown schema version", lambda i: f"{i['file']}: {i['error']}")
        section("invalid", "Skipped, not a valid scan report", lambda i: f"{i['file']}: {i['error']}")
        section("unreadable", "Skipped, unreadable", lambda i: f"{i['file']}: {i['error']}")
        return "\n".join(out) + "\n"


def format_duration(seconds: float) -> str:
    s = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            parts.append(f"{s // size}{unit}")
            s %= size
    if s or not parts:
        parts.append(f"{s}s")
    return "".join(parts[:2])


def _csv_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    # Escaped as in the text output: a file name that is not UTF-8 shows its bytes as
    # \xNN, a newline in a reason does not become a line of the file.
    return "" if v is None else printable(str(v))


def summarise(
    paths,
    *,
    fmt="text",
    output=None,
    limit=DEFAULT_LIMIT,
    stale_after=None,
    host_from="filename",
    recursive=False,
    style: Style = plain,
    progress=None,
    now=None,
    stdout: TextIO | None = None,
) -> tuple[str | None, Summary]:
    """Run the summary. For text and json returns (text, summary). For csv the rows go
    out as they come, to `stdout` or through write_atomic into `output`, and text is None.
    `progress`, if given, wraps the iterator of paths (a progress bar's context manager)."""
    summary = Summary(limit=limit, stale_after=stale_after, host_from=host_from, now=now)
    if fmt != "csv":
        for _ in _rows(summary, paths, recursive, progress):
            pass
        if fmt == "json":
            return json.dumps(summary.as_json(), indent=2) + "\n", summary
        return summary.render_text(style), summary
    chunks = _csv_chunks(_rows(summary, paths, recursive, progress))
    if output is None:
        out = stdout if stdout is not None else sys.stdout
        for chunk in chunks:
            out.write(chunk)
        out.flush()
    else:
        write_atomic(output, chunks)
    return None, summary


def _rows(summary: Summary, paths, recursive, progress) -> Iterator[dict]:
    errors: list = []
    files = iter_paths(paths, recursive, errors)
    bar = None
    if progress is not None:
        bar = progress(files)
        files = bar.__enter__()
    try:
        for path in files:
            row = summary.add_path(path)
            while errors:  # a folder that could not be listed, met on the way
                yield summary.add_error(*errors.pop())
            yield row
        for bad in errors:
            yield summary.add_error(*bad)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def _csv_chunks(rows: Iterator[dict], size: int = 1 << 16) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([_csv_value(row.get(c)) for c in CSV_COLUMNS])
        if buf.tell() >= size:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()
