"""Fleet inventory: many scan reports summarised, two scans of one host compared.

    vmxprobe fleet REPORT...|DIR        (the same as `vmxprobe fleet summary ...`)
    vmxprobe fleet diff OLD NEW

The summary streams. Each report is read, parsed, checked and folded into counters,
then dropped. Lists of problem hosts are capped (--limit) and say how many were cut;
they keep the first hosts by name, so the output does not depend on directory order.
The only per-report state is one 8-byte slot in the duplicate-name table. docs/fleet.md
is the user's guide.
"""

from __future__ import annotations

import bisect
import csv
import functools
import io
import json
import os
import re
import stat
import sys
import time
from array import array
from datetime import datetime, timezone
from typing import Iterator, Optional

import click

from vmxprobe import __version__

# A 512-CPU report is about 150 KiB; anything far past that is not a scan report, and
# reading it whole would break the promise that memory does not depend on the input.
MAX_REPORT_BYTES = 64 * 1024 * 1024
DEFAULT_LIMIT = 20
# Distinct values kept per grouping; the rest are counted under OTHER. Real fleets have
# a handful of revisions and CPU models; a cap keeps a hostile input from growing them.
MAX_GROUP_KEYS = 1000
OTHER = "(other)"
# Below this many reports a progress bar is noise.
PROGRESS_MIN = 200

SUMMARY_KIND = "vmxprobe-fleet-summary"
DIFF_KIND = "vmxprobe-fleet-diff"
OUTPUT_VERSION = 1

STATUSES = ("ready", "not_ready", "undetermined")
SKIPPED = ("unreadable", "invalid", "unknown_schema")


# --- the report check --------------------------------------------------------------------

class _Rules:
    """What the check needs from the shipped schema, read once from the schema itself so
    that the required fields and enums cannot drift from schema/report-v1.json."""

    def __init__(self, schema: dict):
        props = schema["properties"]

        def obj(name):
            p = props[name]
            if "oneOf" in p:  # null or an object
                p = next(alt for alt in p["oneOf"] if alt.get("type") == "object")
            return p

        def enum(name, field):
            return frozenset(obj(name)["properties"][field]["enum"])

        self.version = props["schema_version"]["const"]
        self.required = tuple(schema["required"])
        self.required_in = {name: tuple(obj(name).get("required", ()))
                            for name in ("tool", "source", "host", "cpus", "vmx_basic",
                                         "feature_control", "verdict", "plan")}
        self.tool_name = props["tool"]["properties"]["name"]["const"]
        self.generated_at = re.compile(props["generated_at"]["pattern"])
        self.cpulist = re.compile(props["cpus"]["properties"]["possible"]["pattern"])
        self.source_kind = enum("source", "kind")
        self.source_origin = enum("source", "origin")
        self.x86_vmx_init = enum("verdict", "x86_vmx_init")
        self.kvm_intel = enum("verdict", "kvm_intel")
        self.fc_state = enum("feature_control", "state")
        basic = obj("vmx_basic")["properties"]
        self.revision_max = basic["revision_id"]["maximum"]
        self.vmcs_size_max = basic["vmcs_size"]["maximum"]
        # Error texts made once: check() runs per report, and its arguments are
        # evaluated whether or not the check fails.
        self.source_kind_text = f"one of {sorted(self.source_kind)}"
        self.fc_state_text = f"one of {sorted(self.fc_state)}"
        self.tool_name_text = repr(self.tool_name)


@functools.lru_cache(maxsize=None)
def rules() -> _Rules:
    from importlib import resources
    return _Rules(json.loads((resources.files("vmxprobe.schema") / "report-v1.json").read_text()))


def known_schema_versions() -> frozenset:
    return frozenset({rules().version})


class Invalid(Exception):
    pass


class UnknownSchema(Invalid):
    def __init__(self, version):
        super().__init__(f"schema version {version}; this vmxprobe {__version__} reads "
                         f"{', '.join(map(str, sorted(known_schema_versions())))}")
        self.version = version


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _fail(where, what, value):
    shown = json.dumps(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    raise Invalid(f"{where}: expected {what}, got {shown}")


def _want(cond, where, what, value):
    if not cond:
        _fail(where, what, value)


def _in(value, allowed: frozenset) -> bool:
    # Only a string or null can be an enum member; `[...] in frozenset` would raise
    # TypeError (unhashable) instead of answering no.
    return (value is None or isinstance(value, str)) and value in allowed


def _object(doc, name, r):
    o = doc[name]
    _want(isinstance(o, dict), name, "an object", o)
    for key in r.required_in[name]:
        if key not in o:
            raise Invalid(f"{name}: no {key!r}")
    return o


def _str_or_null(o, key, where):
    v = o.get(key)
    if not (v is None or isinstance(v, str)):
        _fail(f"{where}.{key}", "a string or null", v)


def _int_or_null(o, key, where):
    v = o.get(key)
    if not (v is None or _is_int(v)):
        _fail(f"{where}.{key}", "an integer or null", v)


def check(doc) -> None:
    """Raise Invalid with the first problem if `doc` is not a scan report of a known
    schema version, as far as the fields the fleet reads are concerned.

    A hand-written check of those fields, not a full schema validation: a general
    validator costs more per report than parsing it does, and the fleet must stay
    usable on 100,000 reports. tests/test_fleet.py checks that everything this accepts
    the shipped schema accepts too, and that it rejects what matters.
    """
    r = rules()
    _want(isinstance(doc, dict), "report", "a JSON object", type(doc).__name__)
    if "schema_version" not in doc:
        if doc.get("kind") == SUMMARY_KIND:
            raise Invalid("a vmxprobe fleet summary, not a scan report")
        raise Invalid("no schema_version: not a vmxprobe scan report")
    sv = doc["schema_version"]
    _want(_is_int(sv), "schema_version", "an integer", sv)
    if sv != r.version:
        raise UnknownSchema(sv)
    for key in r.required:
        if key not in doc:
            raise Invalid(f"no {key!r}")
    tool = _object(doc, "tool", r)
    _want(tool["name"] == r.tool_name, "tool.name", r.tool_name_text, tool["name"])
    _want(isinstance(tool["version"], str), "tool.version", "a string", tool["version"])
    ga = doc["generated_at"]
    _want(isinstance(ga, str) and r.generated_at.match(ga), "generated_at", "YYYY-MM-DDTHH:MM:SSZ", ga)
    src = _object(doc, "source", r)
    _want(_in(src["kind"], r.source_kind), "source.kind", r.source_kind_text, src["kind"])
    _want(isinstance(src["name"], str), "source.name", "a string", src["name"])
    _want(_in(src.get("origin"), r.source_origin), "source.origin", "a known origin", src.get("origin"))
    host = _object(doc, "host", r)
    for key in ("vendor", "model_name", "hypervisor", "kernel"):
        _str_or_null(host, key, "host")
    for key in ("family", "model", "stepping"):
        _int_or_null(host, key, "host")
    cpus = _object(doc, "cpus", r)
    for key in ("possible", "present", "online", "probed"):
        v = cpus[key]
        if not (isinstance(v, str) and r.cpulist.match(v)):
            _fail(f"cpus.{key}", "a cpulist", v)
    basic = doc["vmx_basic"]
    if basic is not None:
        basic = _object(doc, "vmx_basic", r)
        rid, size = basic["revision_id"], basic["vmcs_size"]
        _want(_is_int(rid) and 0 <= rid <= r.revision_max, "vmx_basic.revision_id", "a 31-bit integer", rid)
        _want(_is_int(size) and 0 <= size <= r.vmcs_size_max, "vmx_basic.vmcs_size", "a 13-bit integer", size)
    fc = doc["feature_control"]
    if fc is not None:
        fc = _object(doc, "feature_control", r)
        _want(_in(fc["state"], r.fc_state), "feature_control.state", r.fc_state_text, fc["state"])
        _want(isinstance(fc["locked"], bool), "feature_control.locked", "a boolean", fc["locked"])
        _want(isinstance(fc["raw"], str), "feature_control.raw", "a string", fc["raw"])
    _want(isinstance(doc["per_cpu"], list), "per_cpu", "an array", doc["per_cpu"])
    v = _object(doc, "verdict", r)
    _want(isinstance(v["ready"], bool), "verdict.ready", "a boolean", v["ready"])
    det = v.get("determined", True)
    _want(isinstance(det, bool), "verdict.determined", "a boolean", det)
    if v["ready"] and not det:
        raise Invalid("verdict: ready but not determined")
    _want(_in(v["x86_vmx_init"], r.x86_vmx_init), "verdict.x86_vmx_init", "ok, an errno or null",
          v["x86_vmx_init"])
    _want(_in(v["kvm_intel"], r.kvm_intel), "verdict.kvm_intel", "ok, an errno or null", v["kvm_intel"])
    for key in ("reasons", "undetermined"):
        items = v.get(key, [])
        if not (isinstance(items, list) and all(isinstance(i, str) for i in items)):
            _fail(f"verdict.{key}", "an array of strings", items)
    _str_or_null(v, "emulated", "verdict")
    plan = _object(doc, "plan", r)
    _want(_is_int(plan["pages"]) and plan["pages"] >= 0, "plan.pages", "a count", plan["pages"])
    _int_or_null(plan, "revision_id", "plan")


def parse_timestamp(text: str) -> float:
    """generated_at ('2026-11-26T14:04:02Z', already pattern-checked) -> epoch seconds."""
    try:
        return datetime(int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]),
                        int(text[14:16]), int(text[17:19]), tzinfo=timezone.utc).timestamp()
    except ValueError as e:
        raise Invalid(f"generated_at: {text}: {e}") from None


class Unreadable(Exception):
    pass


def read_report(path: str, stream=None) -> dict:
    """Read and parse one report; Unreadable, Invalid or UnknownSchema if it is not one."""
    try:
        if stream is not None:
            data = stream.read(MAX_REPORT_BYTES + 1)
        else:
            # Non-blocking, and regular files only: a FIFO among the reports must not hang
            # the summary.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
            with open(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise Unreadable("not a regular file")
                data = f.read(MAX_REPORT_BYTES + 1)
    except OSError as e:
        raise Unreadable(e.strerror or str(e)) from None
    if len(data) > MAX_REPORT_BYTES:
        raise Unreadable(f"larger than {MAX_REPORT_BYTES >> 20} MiB: not a scan report")
    try:
        doc = json.loads(data)
    except UnicodeDecodeError:
        raise Unreadable("not UTF-8 text") from None
    except ValueError as e:
        raise Unreadable(f"not JSON: {e}") from None
    except RecursionError:
        raise Unreadable("not JSON a report could be: nested too deeply") from None
    try:
        check(doc)
        parse_timestamp(doc["generated_at"])  # a pattern-valid but impossible date is invalid
    except Invalid:
        raise
    except (TypeError, KeyError, AttributeError, ValueError) as e:
        # A shape check() did not foresee: this report is invalid, the run goes on.
        raise Invalid(f"unexpected structure ({type(e).__name__}: {e})".replace("\n", " ")) from None
    return doc


# --- what the summary takes from one report ----------------------------------------------

HOST_FROM = ("filename", "source")


def host_name(path: str, doc: Optional[dict], host_from: str) -> str:
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


def revision_of(doc: dict) -> Optional[int]:
    basic = doc["vmx_basic"]
    if basic is not None:
        return basic["revision_id"]
    return doc["plan"].get("revision_id")


def revision_text(rid: Optional[int]) -> str:
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


# --- bounded state -----------------------------------------------------------------------

class Capped:
    """The first `limit` items by key, plus how many were offered (limit None: all)."""

    def __init__(self, limit: Optional[int]):
        self.limit = limit
        self.count = 0
        self._items: list = []
        self._seq = 0

    def add(self, key, item) -> None:
        self.count += 1
        self._seq += 1
        entry = (key, self._seq, item)
        if self.limit is None:
            self._items.append(entry)
            return
        if len(self._items) >= self.limit:
            if not self._items or entry >= self._items[-1]:
                return
            bisect.insort(self._items, entry)
            self._items.pop()
        else:
            bisect.insort(self._items, entry)

    def items(self) -> list:
        if self.limit is None:
            self._items.sort(key=lambda e: (e[0], e[1]))
        return [e[2] for e in self._items]

    @property
    def cut(self) -> int:
        return self.count - len(self._items)

    def as_json(self, key="hosts") -> dict:
        return {"count": self.count, key: self.items(), "cut": self.cut}


class Counter:
    """Counts by key, at most MAX_GROUP_KEYS distinct keys (the rest under OTHER)."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.folded = 0  # distinct keys that went to OTHER (counted once each time seen)

    def add(self, key: str) -> None:
        counts = self.counts
        if key in counts:
            counts[key] += 1
        elif len(counts) < MAX_GROUP_KEYS:
            counts[key] = 1
        else:
            counts[OTHER] = counts.get(OTHER, 0) + 1
            self.folded += 1

    def ordered(self) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))


class NameSet:
    """Exact-enough duplicate detection in 8 bytes a name: an open-addressing table of
    63-bit hashes (collision odds at 10^6 names: ~1 in 10^7), the top bit marking a
    name already reported as a duplicate. A Python set of the names would cost ~100
    bytes each and make peak memory follow the fleet size."""

    _MARK = 1 << 63
    _LOW = _MARK - 1

    def __init__(self, size: int = 1 << 12):
        self._table = array("Q", bytes(8 * size))
        self._mask = size - 1
        self._used = 0

    def add(self, name: str) -> int:
        """0: first time; 1: seen once before (a new duplicate); 2: seen more often."""
        h = (hash(name) & self._LOW) or 1
        t, mask = self._table, self._mask
        i = h & mask
        while True:
            slot = t[i]
            if not slot:
                break
            if slot & self._LOW == h:
                if slot & self._MARK:
                    return 2
                t[i] = slot | self._MARK
                return 1
            i = (i + 1) & mask
        t[i] = h
        self._used += 1
        if self._used * 2 > len(t):
            self._grow()
        return 0

    def _grow(self):
        old = self._table
        self._table = array("Q", bytes(16 * len(old)))
        self._mask = len(self._table) - 1
        t, mask, low = self._table, self._mask, self._LOW
        for slot in old:
            if slot:
                i = (slot & low) & mask
                while t[i]:
                    i = (i + 1) & mask
                t[i] = slot


# --- walking the inputs ------------------------------------------------------------------

def check_paths(paths) -> list[str]:
    return [p for p in paths if not os.path.exists(p)]


def iter_paths(paths, recursive: bool, errors: list) -> Iterator[str]:
    """Report files: each FILE as given, and each DIR's *.json files (not dot-files, so
    not the temp files of an atomic write in progress). Directory order, lazily: a
    listing of 100,000 names is never held. Directories that cannot be listed go to
    `errors` as (path, message)."""
    for p in paths:
        if os.path.isdir(p):
            yield from _iter_dir(p, recursive, errors)
        else:
            yield p


def _iter_dir(path, recursive, errors):
    subdirs = []
    try:
        with os.scandir(path) as it:
            for entry in it:
                name = entry.name
                if name.startswith("."):
                    continue
                try:
                    if name.lower().endswith(".json") and entry.is_file():
                        yield entry.path
                    elif recursive and entry.is_dir(follow_symlinks=False):
                        subdirs.append(entry.path)
                except OSError as e:
                    errors.append((entry.path, e.strerror or str(e)))
    except OSError as e:
        errors.append((path, f"cannot list: {e.strerror or e}"))
        return
    for sub in sorted(subdirs):
        yield from _iter_dir(sub, recursive, errors)


# --- the summary -------------------------------------------------------------------------

CSV_COLUMNS = ("host", "file", "status", "ready", "determined", "x86_vmx_init", "kvm_intel",
               "revision_id", "vmcs_size", "feature_control", "cpu_vendor", "cpu_signature",
               "cpu_model_name", "hypervisor", "emulated", "possible_cpus", "kernel",
               "tool_version", "generated_at", "source_kind", "source_name", "stale",
               "duplicate", "reason")


class Summary:
    """Folds reports in one at a time; holds counters and capped lists only."""

    def __init__(self, limit: Optional[int] = DEFAULT_LIMIT, stale_after: Optional[int] = None,
                 host_from: str = "filename", now: Optional[float] = None):
        self.limit = limit
        self.stale_after = stale_after
        self.host_from = host_from
        self.now = time.time() if now is None else now
        self.files = 0
        self.readiness = dict.fromkeys(STATUSES, 0)
        self.groups = {name: Counter() for name in
                       ("revision_id", "vmcs_size", "cpu_model", "hypervisor", "feature_control",
                        "tool_version")}
        self.lists = {name: Capped(limit) for name in
                      ("not_ready", "undetermined", "stale", "fixtures", "duplicates") + SKIPPED}
        self.names = NameSet()
        self.duplicate_reports = 0
        self.oldest: Optional[tuple[float, str]] = None
        self.newest: Optional[tuple[float, str]] = None

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
        v, hostinfo, basic, fc, src = (doc["verdict"], doc["host"], doc["vmx_basic"],
                                       doc["feature_control"], doc["source"])
        rid = revision_of(doc)
        g = self.groups
        g["revision_id"].add(revision_text(rid))
        g["vmcs_size"].add("unknown" if basic is None else str(basic["vmcs_size"]))
        g["cpu_model"].add(cpu_model(hostinfo))
        g["hypervisor"].add(hostinfo["hypervisor"] or "none")
        g["feature_control"].add("unreadable" if fc is None else fc["state"])
        g["tool_version"].add(doc["tool"]["version"])
        key = (host, path)
        reason = first_reason(doc) if status != "ready" else ""
        if status != "ready":
            self.lists[status].add(key, {"host": host, "file": path, "reason": reason,
                                         "x86_vmx_init": v["x86_vmx_init"], "kvm_intel": v["kvm_intel"]})
        when = parse_timestamp(doc["generated_at"])
        if self.oldest is None or when < self.oldest[0]:
            self.oldest = (when, doc["generated_at"])
        if self.newest is None or when > self.newest[0]:
            self.newest = (when, doc["generated_at"])
        age = self.now - when
        stale = self.stale_after is not None and age > self.stale_after
        if stale:
            self.lists["stale"].add(key, {"host": host, "file": path, "generated_at": doc["generated_at"],
                                          "age_seconds": int(age)})
        if src["kind"] == "fixture":
            self.lists["fixtures"].add(key, {"host": host, "file": path, "fixture": src["name"]})
        seen = self.names.add(host)
        if seen:
            self.duplicate_reports += 1
            if seen == 1:
                self.lists["duplicates"].add((host,), {"host": host})
        return {
            "host": host, "file": path, "status": status, "ready": v["ready"],
            "determined": v.get("determined", True), "x86_vmx_init": v["x86_vmx_init"] or "",
            "kvm_intel": v["kvm_intel"] or "", "revision_id": "" if rid is None else revision_text(rid),
            "vmcs_size": "" if basic is None else basic["vmcs_size"],
            "feature_control": "" if fc is None else fc["state"],
            "cpu_vendor": hostinfo["vendor"] or "", "cpu_signature": cpu_signature(hostinfo),
            "cpu_model_name": hostinfo.get("model_name") or "", "hypervisor": hostinfo["hypervisor"] or "",
            "emulated": v.get("emulated") or "", "possible_cpus": doc["plan"]["pages"],
            "kernel": hostinfo["kernel"] or "", "tool_version": doc["tool"]["version"],
            "generated_at": doc["generated_at"], "source_kind": src["kind"], "source_name": src["name"],
            "stale": stale, "duplicate": bool(seen), "reason": reason,
        }

    # -- results --

    @property
    def read(self) -> int:
        return sum(self.readiness.values())

    @property
    def skipped(self) -> int:
        return sum(self.lists[k].count for k in SKIPPED)

    def exit_code(self) -> int:
        from vmxprobe.cli import EXIT_NOT_READY, EXIT_READY, EXIT_UNKNOWN
        if self.readiness["not_ready"]:
            return EXIT_NOT_READY
        if self.readiness["undetermined"] or self.skipped or self.lists["stale"].count:
            return EXIT_UNKNOWN
        return EXIT_READY

    def as_json(self) -> dict:
        lists = {name: c.as_json() for name, c in self.lists.items()}
        lists["duplicates"]["extra_reports"] = self.duplicate_reports
        return {
            "kind": SUMMARY_KIND, "version": OUTPUT_VERSION,
            "tool": {"name": "vmxprobe", "version": __version__},
            "generated_at": datetime.fromtimestamp(self.now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "options": {"host_from": self.host_from, "stale_after_seconds": self.stale_after,
                        "limit": self.limit},
            "reports": {"files": self.files, "read": self.read, "skipped": self.skipped,
                        "oldest": self.oldest and self.oldest[1], "newest": self.newest and self.newest[1]},
            "readiness": dict(self.readiness),
            **{f"by_{name}": dict(c.ordered()) for name, c in self.groups.items()},
            **lists,
            "exit_code": self.exit_code(),
        }

    def render_text(self, style=lambda t, **kw: t) -> str:
        n = self.read
        out = [f"vmxprobe fleet: {self.files} report file(s): {n} read, {self.skipped} skipped"
               + (f"; scanned {self.oldest[1]} .. {self.newest[1]}" if self.oldest else "")]

        def pct(k):
            return f" ({100 * k / n:.1f}%)" if n else ""

        r = self.readiness
        out.append("Readiness: " + ", ".join([
            style(f"{r['ready']} ready{pct(r['ready'])}", fg="green"),
            style(f"{r['not_ready']} not ready{pct(r['not_ready'])}", fg="red" if r["not_ready"] else None),
            style(f"{r['undetermined']} could not be determined{pct(r['undetermined'])}",
                  fg="yellow" if r["undetermined"] else None)]))
        titles = {"revision_id": "VMCS revision id", "vmcs_size": "VMCS size (bytes)",
                  "cpu_model": "CPU model (family/model/stepping)", "hypervisor": "Hypervisor",
                  "feature_control": "IA32_FEATURE_CONTROL", "tool_version": "vmxprobe version"}
        for name, title in titles.items():
            c = self.groups[name]
            if not c.counts:
                continue
            shown = {"none": "none (bare metal)"} if name == "hypervisor" else {}
            out.append(f"{title}:")
            out += [f"  {count:>8}  {shown.get(key, key)}" for key, count in c.ordered()]
            if c.folded:
                out.append(f"  ({c.folded} report(s) with values past the first {MAX_GROUP_KEYS} "
                           f"are under {OTHER})")

        def section(name, title, line):
            c = self.lists[name]
            if not c.count:
                return
            out.append(style(f"{title} ({c.count}):", bold=True))
            out.extend("  " + line(item) for item in c.items())
            if c.cut:
                out.append(f"  ... and {c.cut} more (--limit N, or --format csv for every report)")

        section("not_ready", "Not ready", lambda i: f"{i['host']}: {i['reason']}")
        section("undetermined", "Could not be determined", lambda i: f"{i['host']}: {i['reason']}")
        if self.stale_after is not None:
            section("stale", f"Stale (scanned more than {format_duration(self.stale_after)} ago)",
                    lambda i: f"{i['host']}: scanned {i['generated_at']} ({format_duration(i['age_seconds'])} ago)")
        section("fixtures", "From fixtures, not hosts",
                lambda i: f"{i['host']}: fixture {i['fixture']} ({i['file']})")
        section("duplicates", "Host names in more than one report",
                lambda i: f"{i['host']}")
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
    return "" if v is None else str(v)


def summarise(paths, *, fmt="text", output=None, limit=DEFAULT_LIMIT, stale_after=None,
              host_from="filename", recursive=False, colour=False, progress=None,
              now=None) -> tuple[Optional[str], Summary]:
    """Run the summary. For text and json returns (text, summary). For csv the rows go
    out as they come, to stdout or through write_atomic into `output`, and text is None.
    `progress`, if given, wraps the iterator of paths (a click progress bar)."""
    summary = Summary(limit=limit, stale_after=stale_after, host_from=host_from, now=now)
    if fmt != "csv":
        for _ in _rows(summary, paths, recursive, progress):
            pass
        if fmt == "json":
            return json.dumps(summary.as_json(), indent=2) + "\n", summary
        return summary.render_text(click.style if colour else (lambda t, **kw: t)), summary
    chunks = _csv_chunks(_rows(summary, paths, recursive, progress))
    if output is None:
        stdout = click.get_text_stream("stdout")
        for chunk in chunks:
            stdout.write(chunk)
        stdout.flush()
    else:
        from vmxprobe.output import write_atomic
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


def count_files(paths, recursive) -> int:
    return sum(1 for _ in iter_paths(paths, recursive, []))


# --- diff --------------------------------------------------------------------------------

MSR_NAMES = {"0x3a": "IA32_FEATURE_CONTROL", "0x480": "IA32_VMX_BASIC"}
STATUS_TEXT = {"ready": "READY", "not_ready": "NOT READY", "undetermined": "UNKNOWN"}
MAX_CPU_GROUPS = 16


def _sig(host) -> tuple:
    return (host["vendor"], host["family"], host["model"], host["stepping"])


def _cpu_text(host) -> str:
    sig = cpu_signature(host) or "?"
    name = f" ({host['model_name']})" if host.get("model_name") else ""
    return f"{host['vendor'] or 'unknown vendor'} {sig}{name}"


def _fc_text(fc) -> str:
    return "unreadable" if fc is None else f"{fc['state']} ({fc['raw']})"


def compare(old: dict, new: dict) -> dict:
    """What changed between two scans of one host: `changes` decide the exit code,
    `notes` are context (tool version, reason wording, argument order)."""
    changes: list[dict] = []
    notes: list[str] = []

    def change(what, a, b, text):
        changes.append({"what": what, "old": a, "new": b, "text": text})

    so, sn = status_of(old), status_of(new)
    vo, vn = old["verdict"], new["verdict"]
    if so != sn:
        text = f"readiness: {STATUS_TEXT[so]} -> {STATUS_TEXT[sn]}"
        if sn != "ready" and first_reason(new):
            text += f": {first_reason(new)}"
        change("readiness", so, sn, text)
    for key, name in (("x86_vmx_init", "x86_vmx_init()"), ("kvm_intel", "kvm_intel")):
        if vo[key] != vn[key]:
            change(f"verdict.{key}", vo[key], vn[key],
                   f"{name}: {_errno_text(vo[key])} -> {_errno_text(vn[key])}")
    if vo.get("emulated") != vn.get("emulated"):
        a, b = (v.get("emulated") or "none (hardware)" for v in (vo, vn))
        change("verdict.emulated", vo.get("emulated"), vn.get("emulated"), f"VMX emulation: {a} -> {b}")

    fo, fn = old["feature_control"], new["feature_control"]
    so_fc = None if fo is None else fo["state"]
    sn_fc = None if fn is None else fn["state"]
    if so_fc != sn_fc:
        advice = ""
        if sn_fc == "disabled_locked":
            why = "firmware now locks VMX off"
            advice = ": enable VT-x (Intel Virtualization Technology) in the firmware setup"
        elif so_fc == "disabled_locked" and sn_fc == "enabled_locked":
            why = "firmware now enables VMX"
        elif fn is None:
            why = "IA32_FEATURE_CONTROL can no longer be read"
        elif fo is None:
            why = "IA32_FEATURE_CONTROL can now be read"
        else:
            why = "IA32_FEATURE_CONTROL changed"
        change("feature_control.state", so_fc, sn_fc,
               f"{why} (IA32_FEATURE_CONTROL {_fc_text(fo)} -> {_fc_text(fn)}){advice}")
    elif fo is not None and fn is not None and fo["raw"] != fn["raw"]:
        change("feature_control.raw", fo["raw"], fn["raw"],
               f"IA32_FEATURE_CONTROL value changed, VMX state still {sn_fc}: {fo['raw']} -> {fn['raw']}")

    ho, hn = old["host"], new["host"]
    cpu_changed = _sig(ho) != _sig(hn) or ho.get("model_name") != hn.get("model_name")
    if cpu_changed:
        change("host.cpu", _cpu_text(ho), _cpu_text(hn), f"the CPU differs: {_cpu_text(ho)} -> {_cpu_text(hn)}")
    hv_changed = ho["hypervisor"] != hn["hypervisor"]
    if hv_changed:
        change("host.hypervisor", ho["hypervisor"], hn["hypervisor"],
               f"hypervisor: {ho['hypervisor'] or 'none (bare metal)'} -> {hn['hypervisor'] or 'none (bare metal)'}")
    kernel_changed = ho["kernel"] != hn["kernel"]

    bo, bn = old["vmx_basic"], new["vmx_basic"]
    if (bo is None) != (bn is None):
        change("vmx_basic", None if bo is None else bo["raw"], None if bn is None else bn["raw"],
               "IA32_VMX_BASIC " + ("can now be read" if bo is None else "can no longer be read")
               + f": {'unreadable' if bo is None else bo['raw']} -> {'unreadable' if bn is None else bn['raw']}")
    elif bo is not None:
        if bo["revision_id"] != bn["revision_id"]:
            if cpu_changed:
                cause = "with the CPU change: a CPU swap"
            elif hv_changed:
                cause = "with the hypervisor change"
            elif kernel_changed:
                cause = (f"on the same CPU model, with a kernel change ({ho['kernel']} -> {hn['kernel']}): "
                         "a microcode update (packaged with or loaded by the new boot) can change it")
            else:
                cause = "on the same CPU model: a microcode update can change it"
            change("vmx_basic.revision_id", bo["revision_id"], bn["revision_id"],
                   f"VMCS revision id: {revision_text(bo['revision_id'])} -> "
                   f"{revision_text(bn['revision_id'])}, {cause}")
        if bo["vmcs_size"] != bn["vmcs_size"]:
            change("vmx_basic.vmcs_size", bo["vmcs_size"], bn["vmcs_size"],
                   f"VMCS size: {bo['vmcs_size']} -> {bn['vmcs_size']} bytes")
        if bo.get("memory_type") != bn.get("memory_type"):
            change("vmx_basic.memory_type", bo.get("memory_type"), bn.get("memory_type"),
                   f"VMCS memory type: {bo.get('memory_type_name', bo.get('memory_type'))} -> "
                   f"{bn.get('memory_type_name', bn.get('memory_type'))}")
        if (bo["raw"] != bn["raw"] and bo["revision_id"] == bn["revision_id"]
                and bo["vmcs_size"] == bn["vmcs_size"] and bo.get("memory_type") == bn.get("memory_type")):
            change("vmx_basic.raw", bo["raw"], bn["raw"], f"IA32_VMX_BASIC value: {bo['raw']} -> {bn['raw']}")

    for key in ("possible", "present", "online", "probed"):
        a, b = old["cpus"][key], new["cpus"][key]
        if a != b:
            change(f"cpus.{key}", a, b, f"{key} CPUs: {a or 'none'} -> {b or 'none'}")
    if old["plan"]["pages"] != new["plan"]["pages"]:
        change("plan.pages", old["plan"]["pages"], new["plan"]["pages"],
               f"root VMCS pages: {old['plan']['pages']} -> {new['plan']['pages']}")
    if kernel_changed:
        change("host.kernel", ho["kernel"], hn["kernel"], f"kernel: {ho['kernel']} -> {hn['kernel']}")
    changes += _per_cpu_changes(old["per_cpu"], new["per_cpu"])

    if old["source"]["kind"] != new["source"]["kind"] or (
            old["source"]["kind"] == "fixture" and old["source"]["name"] != new["source"]["name"]):
        notes.append(f"OLD is {_source_text(old)}, NEW is {_source_text(new)}: are they the same host?")
    if parse_timestamp(new["generated_at"]) < parse_timestamp(old["generated_at"]):
        notes.append(f"NEW ({new['generated_at']}) was scanned before OLD ({old['generated_at']}): "
                     "are the arguments swapped?")
    if old["tool"]["version"] != new["tool"]["version"]:
        notes.append(f"scanned by different vmxprobe versions: {old['tool']['version']} -> {new['tool']['version']}")
    ro, rn = vo["reasons"], vn["reasons"]
    notes += [f"reason gone: {r}" for r in ro if r not in rn]
    notes += [f"reason new: {r}" for r in rn if r not in ro]
    return {"changed": bool(changes), "readiness": {"old": so, "new": sn}, "changes": changes, "notes": notes}


def _errno_text(e) -> str:
    return "unknown" if e is None else ("ok" if e == "ok" else f"-{e}")


def _source_text(doc) -> str:
    src = doc["source"]
    return f"fixture {src['name']}" if src["kind"] == "fixture" else f"a live scan of {src['name']}"


def _per_cpu_changes(old_cpus: list, new_cpus: list) -> list[dict]:
    """Register and flag changes on CPUs in both scans, grouped by (what, old, new)."""
    from vmxprobe.cpulist import format_cpulist
    before = {}
    for e in old_cpus:
        if isinstance(e, dict) and _is_int(e.get("cpu")):
            before[e["cpu"]] = e
    groups: dict[tuple, list[int]] = {}
    for e in new_cpus:
        if not (isinstance(e, dict) and _is_int(e.get("cpu"))) or e["cpu"] not in before:
            continue
        o = before[e["cpu"]]
        mo = o.get("msr") if isinstance(o.get("msr"), dict) else {}
        mn = e.get("msr") if isinstance(e.get("msr"), dict) else {}
        for index in sorted(set(mo) | set(mn), key=lambda k: int(k, 16) if re.fullmatch(r"0x[0-9a-f]+", k) else -1):
            a, b = mo.get(index), mn.get(index)
            if a != b:
                groups.setdefault((MSR_NAMES.get(index, f"MSR {index}"), a, b), []).append(e["cpu"])
        for key, label in (("cpuid_vmx", "CPUID VMX bit"), ("vmx_flag", "vmx flag in /proc/cpuinfo")):
            if o.get(key) != e.get(key):
                groups.setdefault((label, o.get(key), e.get(key)), []).append(e["cpu"])
    out = []
    for (label, a, b), cpus in sorted(groups.items(), key=lambda kv: (kv[1][0], kv[0][0])):
        if len(out) == MAX_CPU_GROUPS:
            out.append({"what": "per_cpu", "old": None, "new": None,
                        "text": f"... and {len(groups) - MAX_CPU_GROUPS} more per-CPU change(s)"})
            break
        out.append({"what": f"per_cpu.{label}", "old": a, "new": b, "cpus": format_cpulist(cpus),
                    "text": f"{label} on CPU(s) {format_cpulist(cpus)}: {_show(a)} -> {_show(b)}"})
    return out


def _show(v) -> str:
    if v is None:
        return "absent"
    if isinstance(v, bool):
        return "set" if v else "clear"
    return str(v)


def render_diff_text(result: dict, old_path: str, new_path: str, old: dict, new: dict) -> str:
    gap = parse_timestamp(new["generated_at"]) - parse_timestamp(old["generated_at"])
    out = [f"OLD {old_path}: scanned {old['generated_at']} by vmxprobe {old['tool']['version']}",
           f"NEW {new_path}: scanned {new['generated_at']} by vmxprobe {new['tool']['version']}"
           + (f" ({format_duration(gap)} later)" if gap > 0 else "")]
    r = result["readiness"]
    if result["changed"]:
        head = (f"CHANGED: {STATUS_TEXT[r['old']]} -> {STATUS_TEXT[r['new']]}" if r["old"] != r["new"]
                else f"CHANGED, still {STATUS_TEXT[r['new']]}")
        out.append(head)
        out += [f"  - {c['text']}" for c in result["changes"]]
    else:
        out.append(f"UNCHANGED: {STATUS_TEXT[r['new']]}; the same readiness, CPU, VMX registers, "
                   "CPUs and kernel")
    if result["notes"]:
        out.append("Notes:")
        out += [f"  - {n}" for n in result["notes"]]
    return "\n".join(out) + "\n"


# --- the commands ------------------------------------------------------------------------

FLEET_EXIT_HELP = """\b
Exit codes of `fleet` / `fleet summary`:
  0  every report was read and every host is ready
  1  at least one host is not ready
  2  usage error: a path does not exist, no report files, a bad option
  3  none is not ready, but some hosts could not be determined, or some
     reports were skipped (unreadable, invalid, unknown schema version),
     or are stale (--stale-after)
Exit codes of `fleet diff`:
  0  unchanged   1  changed   2  an input is missing or not a scan report"""


class _FleetGroup(click.Group):
    """`fleet PATHS...` is `fleet summary PATHS...`: arguments that do not start with a
    subcommand name are the summary's. (A report file named `diff` or `summary` in the
    current folder: write it ./diff.)"""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["summary", *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx, formatter):
        formatter.write(f"Usage: {ctx.command_path} [summary] [OPTIONS] REPORT...|DIR\n"
                        f"       {ctx.command_path} diff [OPTIONS] OLD NEW\n")


@click.group(cls=_FleetGroup, epilog=FLEET_EXIT_HELP)
def fleet():
    """Summarise many hosts' scan reports, or compare two scans of one host.

    `vmxprobe fleet REPORT...|DIR` is `vmxprobe fleet summary REPORT...|DIR`.
    Collect the reports with deploy/ansible/vmxprobe-scan.yml or any tool that runs
    `vmxprobe scan --format json -o HOST.json` on each host.
    """


def _parse_limit(ctx, param, value):
    if value < 0:
        raise click.BadParameter("must be 0 (list all) or more")
    return None if value == 0 else value


def _parse_stale(ctx, param, value):
    if value is None:
        return None
    from vmxprobe.export import ExportError, parse_duration
    try:
        return parse_duration(value)
    except ExportError as e:
        raise click.BadParameter(str(e)) from None


@fleet.command("summary", epilog=FLEET_EXIT_HELP)
@click.argument("paths", nargs=-1, required=True, metavar="REPORT...|DIR")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text", show_default=True,
              help="text and json summarise; csv is one row per report (the full inventory, streamed).")
@click.option("-o", "--output", metavar="FILE", help="Write to FILE (atomically) instead of stdout.")
@click.option("--stale-after", metavar="AGE", callback=_parse_stale,
              help="List reports scanned longer than AGE ago (90m, 36h, 7d, 2w) and exit 3 for them.")
@click.option("--host-from", type=click.Choice(HOST_FROM), default="filename", show_default=True,
              help="Host name: the file name without .json (web01.json -> web01), or the report's "
                   "source.name (meaningful for fixture replays only: a live scan's is its root, /).")
@click.option("--limit", type=int, default=DEFAULT_LIMIT, show_default=True, callback=_parse_limit,
              help="Hosts listed per problem (first by name); 0 lists all, with memory to match.")
@click.option("-r", "--recursive", is_flag=True, help="Read *.json in the folders below each DIR too.")
def summary_cmd(paths, fmt, output, stale_after, host_from, limit, recursive):
    """Summarise scan reports: files, or folders of *.json (dot-files skipped)."""
    from vmxprobe.cli import EXIT_USAGE, Fail, _emit, _use_colour
    missing = check_paths(paths)
    if missing:
        raise Fail(f"no such file or folder: {', '.join(missing)}")
    if next(iter_paths(paths, recursive, []), None) is None:
        raise Fail(f"no report files (*.json) in {', '.join(paths)}"
                   + ("" if recursive else " (-r reads the folders below too)"), EXIT_USAGE)
    progress = None
    stderr = click.get_text_stream("stderr")
    if stderr.isatty():
        total = count_files(paths, recursive)
        if total >= PROGRESS_MIN:
            def progress(files):
                return click.progressbar(files, length=total, label="Reading reports", file=stderr)
    from vmxprobe.output import OutputError
    try:
        text, summary = summarise(paths, fmt=fmt, output=output if fmt == "csv" else None, limit=limit,
                                  stale_after=stale_after, host_from=host_from, recursive=recursive,
                                  colour=fmt == "text" and _use_colour(output), progress=progress)
    except OutputError as e:
        raise Fail(f"cannot write the inventory: {e}") from None
    if text is not None:
        _emit(text, output, what="summary")
    sys.exit(summary.exit_code())


def _load_for_diff(path: str, which: str) -> dict:
    from vmxprobe.cli import Fail
    try:
        if path == "-":
            return read_report("-", stream=click.get_binary_stream("stdin"))
        if os.path.isdir(path):
            raise Unreadable("is a folder; give one report file")
        return read_report(path)
    except (Unreadable, Invalid) as e:
        raise Fail(f"{which} {path}: {e}") from None


@fleet.command("diff", epilog=FLEET_EXIT_HELP)
@click.argument("old", metavar="OLD")
@click.argument("new", metavar="NEW")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def diff_cmd(old, new, fmt):
    """What changed between two scans of one host (OLD or NEW may be -, stdin)."""
    from vmxprobe.cli import EXIT_NOT_READY, EXIT_READY, Fail
    if old == "-" and new == "-":
        raise Fail("OLD and NEW cannot both be stdin (-)")
    a = _load_for_diff(old, "OLD")
    b = _load_for_diff(new, "NEW")
    result = compare(a, b)
    if fmt == "json":
        def meta(doc, path):
            return {"file": path, "generated_at": doc["generated_at"], "tool_version": doc["tool"]["version"],
                    "source": {"kind": doc["source"]["kind"], "name": doc["source"]["name"]}}
        text = json.dumps({"kind": DIFF_KIND, "version": OUTPUT_VERSION, "old": meta(a, old),
                           "new": meta(b, new), **result}, indent=2) + "\n"
    else:
        text = render_diff_text(result, old, new, a, b)
    click.echo(text, nl=False)
    sys.exit(EXIT_NOT_READY if result["changed"] else EXIT_READY)

