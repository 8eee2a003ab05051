"""The fleet's check of one scan report: is this a report of a schema version this
vmxprobe reads, as far as the fields the fleet uses are concerned? And reading one report
file, bounded and non-blocking."""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import stat
from datetime import datetime, timezone
from typing import Any, BinaryIO

from vmxprobe import __version__
from vmxprobe.printable import first_surrogate, json_path

# A 512-CPU report is about 150 KiB; anything far past that is not a scan report, and
# reading it whole would break the promise that memory does not depend on the input.
MAX_REPORT_BYTES = 64 * 1024 * 1024

SUMMARY_KIND = "vmxprobe-fleet-summary"
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class Rules:
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
        self.required_in = {
            name: tuple(obj(name).get("required", ()))
            for name in ("tool", "source", "host", "cpus", "vmx_basic", "feature_control", "verdict", "plan")
        }
        self.tool_name = props["tool"]["properties"]["name"]["const"]
        self.generated_at = re.compile(props["generated_at"]["pattern"])
        self.cpulist = re.compile(props["cpus"]["properties"]["possible"]["pattern"])
        self.source_kind = enum("source", "kind")
        self.source_origin = enum("source", "origin")
        self.x86_vmx_init = enum("verdict", "x86_vmx_init")
        self.kvm_intel = enum("verdict", "kvm_intel")
        self.x86_svm_init = enum("verdict", "x86_svm_init")
        self.kvm_amd = enum("verdict", "kvm_amd")
        self.virt = enum("verdict", "virt")
        svm = next(alt for alt in props["svm"]["oneOf"] if alt.get("type") == "object")
        vm_cr = next(alt for alt in svm["properties"]["vm_cr"]["oneOf"] if alt.get("type") == "object")
        self.vm_cr_state = frozenset(vm_cr["properties"]["state"]["enum"])
        self.fc_state = enum("feature_control", "state")
        basic = obj("vmx_basic")["properties"]
        self.revision_max = basic["revision_id"]["maximum"]
        self.vmcs_size_max = basic["vmcs_size"]["maximum"]
        # Error texts made once: check() runs per report, and its arguments are
        # evaluated whether or not the check fails.
        self.source_kind_text = f"one of {sorted(self.source_kind)}"
        self.fc_state_text = f"one of {sorted(self.fc_state)}"
        self.tool_name_text = repr(self.tool_name)


@functools.cache
def rules() -> Rules:
    from importlib import resources

    return Rules(json.loads((resources.files("vmxprobe.schema") / "report-v1.json").read_text()))


def known_schema_versions() -> frozenset:
    return frozenset({rules().version})


class Invalid(Exception):
    pass


class UnknownSchema(Invalid):
    def __init__(self, version):
        super().__init__(
            f"schema version {version}; this vmxprobe {__version__} reads "
            f"{', '.join(map(str, sorted(known_schema_versions())))}"
        )
        self.version = version


def is_int(v) -> bool:
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
    if not (v is None or is_int(v)):
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
    _want(is_int(sv), "schema_version", "an integer", sv)
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
        _want(is_int(rid) and 0 <= rid <= r.revision_max, "vmx_basic.revision_id", "a 31-bit integer", rid)
        _want(is_int(size) and 0 <= size <= r.vmcs_size_max, "vmx_basic.vmcs_size", "a 13-bit integer", size)
    fc = doc["feature_control"]
    if fc is not None:
        fc = _object(doc, "feature_control", r)
        _want(_in(fc["state"], r.fc_state), "feature_control.state", r.fc_state_text, fc["state"])
        _want(isinstance(fc["locked"], bool), "feature_control.locked", "a boolean", fc["locked"])
        _want(isinstance(fc["raw"], str), "feature_control.raw", "a string", fc["raw"])
    _want(isinstance(doc["per_cpu"], list), "per_cpu", "an array", doc["per_cpu"])
    _per_cpu(doc["per_cpu"])
    v = _object(doc, "verdict", r)
    _want(isinstance(v["ready"], bool), "verdict.ready", "a boolean", v["ready"])
    det = v.get("determined", True)
    _want(isinstance(det, bool), "verdict.determined", "a boolean", det)
    if v["ready"] and not det:
        raise Invalid("verdict: ready but not determined")
    _want(
        _in(v["x86_vmx_init"], r.x86_vmx_init),
        "verdict.x86_vmx_init",
        "ok, an errno or null",
        v["x86_vmx_init"],
    )
    _want(_in(v["kvm_intel"], r.kvm_intel), "verdict.kvm_intel", "ok, an errno or null", v["kvm_intel"])
    # Added with the AMD verdict: optional, as older reports lack them.
    for key, allowed in (("x86_svm_init", r.x86_svm_init), ("kvm_amd", r.kvm_amd)):
        _want(_in(v.get(key), allowed), f"verdict.{key}", "ok, an errno or null", v.get(key))
    if "virt" in v:
        _want(isinstance(v["virt"], str) and v["virt"] in r.virt, "verdict.virt", "vmx or svm", v["virt"])
    svm = doc.get("svm")
    if svm is not None:
        _want(isinstance(svm, dict), "svm", "an object or null", svm)
        vm_cr = svm.get("vm_cr")
        if vm_cr is not None:
            _want(isinstance(vm_cr, dict), "svm.vm_cr", "an object or null", vm_cr)
            state = vm_cr.get("state")
            _want(_in(state, r.vm_cr_state), "svm.vm_cr.state", "a VM_CR state", state)
    for key in ("reasons", "undetermined"):
        items = v.get(key, [])
        if not (isinstance(items, list) and all(isinstance(i, str) for i in items)):
            _fail(f"verdict.{key}", "an array of strings", items)
    _str_or_null(v, "emulated", "verdict")
    plan = _object(doc, "plan", r)
    _want(is_int(plan["pages"]) and plan["pages"] >= 0, "plan.pages", "a count", plan["pages"])
    _want(isinstance(plan.get("applies", True), bool), "plan.applies", "a boolean", plan.get("applies"))
    _int_or_null(plan, "revision_id", "plan")


_NONE = type(None)


def _per_cpu_types_ok(entries: list) -> bool:
    """Whether every entry has the types _per_cpu() wants, in passes that run in C: a
    fleet reads 100,000 reports of up to 512 entries each."""
    if not set(map(type, entries)) <= {dict}:
        return False

    def field(key: str) -> list:
        return list(map(dict.get, entries, itertools.repeat(key, len(entries))))

    cpus = field("cpu")
    if not set(map(type, cpus)) <= {int} or (cpus and min(cpus) < 0):
        return False
    msrs = field("msr")
    kinds = set(map(type, msrs))
    if not kinds <= {dict, _NONE} or (_NONE in kinds and any(e.get("msr", 0) is None for e in entries)):
        return False
    texts = itertools.chain.from_iterable(map(dict.values, filter(None, msrs)))
    if not set(map(type, texts)) <= {str}:
        return False
    flags = {bool, _NONE}
    return set(map(type, field("cpuid_vmx"))) <= flags and set(map(type, field("vmx_flag"))) <= flags


def _per_cpu(entries: list) -> None:
    """The per-CPU fields `fleet diff` compares, of the types the schema gives them: a
    list where a register's text belongs is an invalid report, not a crash."""
    if _per_cpu_types_ok(entries):
        return
    # Which entry and field: walked one by one, once a report is known to be invalid.
    for i, e in enumerate(entries):
        where = f"per_cpu[{i}]"
        if type(e) is not dict:
            _fail(where, "an object", e)
        cpu = e.get("cpu")
        _want(is_int(cpu) and cpu >= 0, f"{where}.cpu", "a CPU number", cpu)
        if "msr" in e:
            msr = e["msr"]
            _want(type(msr) is dict, f"{where}.msr", "an object", msr)
            for index, text in msr.items():
                if type(text) is not str:
                    _fail(json_path(f"{where}.msr", index), "a string", text)
        for key in ("cpuid_vmx", "vmx_flag"):
            v = e.get(key)
            if v is not None and type(v) is not bool:
                _fail(f"{where}.{key}", "true, false or null", v)


def parse_timestamp(text: str) -> float:
    """generated_at ('2026-11-26T14:04:02Z', already pattern-checked) -> epoch seconds."""
    try:
        return datetime(
            int(text[0:4]),
            int(text[5:7]),
            int(text[8:10]),
            int(text[11:13]),
            int(text[14:16]),
            int(text[17:19]),
            tzinfo=timezone.utc,
        ).timestamp()
    except ValueError as e:
        raise Invalid(f"generated_at: {text}: {e}") from None


class Unreadable(Exception):
    pass


def read_report(path: str, stream: BinaryIO | None = None) -> dict[str, Any]:
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
        # Decoded strictly: json.loads() of bytes would take UTF-8-encoded surrogates.
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise Unreadable("not UTF-8 text") from None
    except ValueError as e:
        raise Unreadable(f"not JSON: {e}") from None
    except RecursionError:
        raise Unreadable("not JSON a report could be: nested too deeply") from None
    # A \udXXX escape without its pair is valid JSON but not Unicode: no text or csv
    # output could hold it. Only such an escape makes one, so most reports skip the walk.
    if _SURROGATE_ESCAPE.search(data):
        bad = first_surrogate(doc)
        if bad is not None:
            raise Invalid(
                f"{bad.removeprefix('$.')}: a string that is not valid Unicode (a lone surrogate escape)"
            )
    try:
        check(doc)
        parse_timestamp(doc["generated_at"])  # a pattern-valid but impossible date is invalid
    except Invalid:
        raise
    except (TypeError, KeyError, AttributeError, ValueError) as e:
        # A shape check() did not foresee: this report is invalid, the run goes on.
        raise Invalid(f"unexpected structure ({type(e).__name__}: {e})".replace("\n", " ")) from None
    return doc
