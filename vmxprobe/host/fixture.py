"""The fixture format (docs/fixture-format.md): record, load, validate. Data only."""

from __future__ import annotations

import base64
import functools
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from typing import TYPE_CHECKING, Any, Callable, NoReturn, TypeVar

from vmxprobe import __version__
from vmxprobe.files import InputError, read_bounded
from vmxprobe.host.cpulist import CpulistError, format_cpulist, parse_cpulist
from vmxprobe.host.sources import CpuidReading, MsrReading, RecordingHost
from vmxprobe.printable import json_path
from vmxprobe.schema.validate import SchemaError, Validator, shipped

if TYPE_CHECKING:
    from importlib.abc import Traversable

Json = dict[str, Any]
R = TypeVar("R", MsrReading, CpuidReading)

FORMAT = "vmxprobe-fixture"
VERSION = 1
MAX_BYTES = 64 * 1024 * 1024
# Per-CPU register results a fixture may expand to. One group line ("cpus": "0-32767")
# stands for up to 32768 results, so 64 MiB of JSON could otherwise ask for billions.
# An 8192-CPU host recording every VMX capability MSR and a few CPUID leaves needs
# about 250,000.
MAX_READINGS = 1 << 20
# The shape of a fixture: vmxprobe/schema/fixture-v1.json. Its name and description,
# which reach a terminal, hold no control characters; every string is valid Unicode.
SCHEMA = "fixture-v1.json"


class FixtureError(ValueError):
    """A fixture that cannot be used; the message is one line, naming what is wrong."""


def _strict_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # JSON allows repeated keys and json keeps the last; in a data file that is two
    # answers to one question, so it is refused.
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise FixtureError(f"key {k[:60]!r} appears twice in one object")
        out[k] = v
    return out


def _no_constant(name: str) -> NoReturn:
    raise FixtureError(f"{name} is not JSON")


def decode_json(raw: bytes, where: str) -> Any:
    """Strict JSON from bytes: UTF-8, no NaN/Infinity, no repeated keys; FixtureError
    (one line) for anything else, including nesting deep enough to exhaust the stack."""
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_strict_pairs, parse_constant=_no_constant)
    except FixtureError as e:
        raise FixtureError(f"{where}: not valid JSON ({e})") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise FixtureError(f"{where}: not valid JSON ({e})") from None
    except RecursionError:
        raise FixtureError(f"{where}: not valid JSON (nested too deeply)") from None


@dataclass
class Fixture:
    name: str
    description: str
    provenance: dict[str, Any]
    files: dict[str, str]
    dirs: dict[str, list[str]]
    file_errors: dict[str, str] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)  # binary files (firmware tables)
    msr: dict[int, dict[int, MsrReading]] = field(default_factory=dict)
    cpuid: dict[tuple[int, int], dict[int, CpuidReading]] = field(default_factory=dict)


def bundled_dir() -> Traversable:
    return resources.files("vmxprobe.fixtures")


def bundled_names() -> list[str]:
    return sorted(p.name[:-5] for p in bundled_dir().iterdir() if p.name.endswith(".json"))


def resolve(spec: str) -> str | Traversable:
    """A path to a fixture file, or the name of a bundled fixture -> a readable path object."""
    if not isinstance(spec, str) or not spec or "\0" in spec:
        raise FixtureError(f"{spec!r} is not a fixture file or name")
    if os.path.lexists(spec):
        return spec
    if re.fullmatch(r"[A-Za-z0-9_.+-]+", spec):
        candidate = bundled_dir() / f"{spec}.json"
        if candidate.is_file():
            return candidate
    raise FixtureError(
        f"no fixture file or bundled fixture named {spec!r}; `vmxprobe fixtures` lists the bundled ones"
    )


def load(spec: str) -> Fixture:
    """Load a fixture file or a bundled fixture by name: a Fixture, or FixtureError."""
    path = resolve(spec)
    where = str(spec)
    if isinstance(path, str):
        try:
            raw = read_bounded(path, MAX_BYTES, "fixture")
        except InputError as e:
            raise FixtureError(str(e)) from None
    else:
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise FixtureError(f"{where}: cannot read: {e.strerror}") from None
        if len(raw) > MAX_BYTES:
            raise FixtureError(f"{where}: over the {MAX_BYTES >> 20} MiB limit for a fixture")
    return parse(decode_json(raw, where), where)


@functools.cache
def _header() -> Validator:
    """The schema's "format" and "version", alone."""
    properties = shipped(SCHEMA).root["properties"]
    return Validator({"properties": {k: properties[k] for k in ("format", "version")}})


def _hex(text: str) -> int:
    return int(text, 16)


def _expect(cond: object, where: str, what: str) -> None:
    if not cond:
        raise FixtureError(f"{where}: {what}")


def _groups(
    groups: list[Json],
    where: str,
    path: str,
    convert: Callable[[Any], Any],
    budget: list[int],
    kind: type[R],
) -> dict[int, R]:
    """One register's groups (already of the schema's shape) as CPU -> reading."""
    out: dict[int, R] = {}
    for i, g in enumerate(groups):
        try:
            cpus = parse_cpulist(g["cpus"])
        except CpulistError as e:
            raise FixtureError(f"{where}: {path}[{i}].cpus: {e}") from None
        reading = kind(errno=g["errno"]) if "errno" in g else kind(value=convert(g["value"]))
        budget[0] -= len(cpus)
        _expect(
            budget[0] >= 0,
            where,
            f"more than {MAX_READINGS} per-CPU register results; not a fixture of a real host",
        )
        for cpu in cpus:
            _expect(cpu not in out, where, f"{path}: CPU {cpu} appears in more than one group")
            out[cpu] = reading
    return out


def _regs(value: list[str]) -> tuple[int, ...]:
    return tuple(int(x, 16) for x in value)


def parse(doc: Any, where: str = "fixture") -> Fixture:
    """A Fixture from a decoded document. Its shape is schema/fixture-v1.json's, checked
    against the shipped schema itself; then what no schema can say: each cpulist's
    ranges, a CPU in one group per register, the budget of per-CPU results, and a path
    in one of files, blobs and file_errors only."""
    try:
        # A document of another format or version is said to be that first, not to
        # lack a field this version has.
        _header().validate(doc)
        shipped(SCHEMA).validate(doc)
    except SchemaError as e:
        raise FixtureError(f"{where}: {e}") from None
    files: dict[str, str] = doc.get("files", {})
    file_errors: dict[str, str] = doc.get("file_errors", {})
    # base64 of the schema's form (RFC 4648, padded), which b64decode() takes as it is
    blobs = {k: base64.b64decode(v, validate=True) for k, v in doc.get("blobs", {}).items()}
    both = sorted((set(files) | set(blobs)) & set(file_errors)) or sorted(set(files) & set(blobs))
    _expect(
        not both,
        where,
        f'{both[0]!r} is in two of "files", "blobs" and "file_errors"' if both else "",
    )
    budget = [MAX_READINGS]
    msr: dict[int, dict[int, MsrReading]] = {
        int(key, 16): _groups(groups, where, json_path("$.msr", key), _hex, budget, MsrReading)
        for key, groups in doc.get("msr", {}).items()
    }
    cpuid: dict[tuple[int, int], dict[int, CpuidReading]] = {}
    for key, groups in doc.get("cpuid", {}).items():
        leaf, _, sub = key.partition(":")
        cpuid[(int(leaf, 16), int(sub, 16))] = _groups(
            groups, where, json_path("$.cpuid", key), _regs, budget, CpuidReading
        )
    return Fixture(
        name=doc["name"],
        description=doc.get("description", ""),
        provenance=doc["provenance"],
        files=files,
        dirs=doc.get("dirs", {}),
        file_errors=file_errors,
        blobs=blobs,
        msr=msr,
        cpuid=cpuid,
    )


def _group(
    results: dict[int, MsrReading] | dict[int, CpuidReading], render: Callable[[Any], Any]
) -> list[Json]:
    """Group identical per-CPU results by cpulist, so a 512-CPU host stays small."""
    by_result: dict[tuple[str, Any], list[int]] = {}
    for cpu, r in results.items():
        key = ("errno", r.errno) if not r.ok else ("value", json.dumps(render(r.value)))
        by_result.setdefault(key, []).append(cpu)
    groups = [
        {"cpus": format_cpulist(cpus), kind: val if kind == "errno" else json.loads(val)}
        for (kind, val), cpus in by_result.items()
    ]
    return sorted(groups, key=lambda g: parse_cpulist(g["cpus"])[0])


def to_document(
    name: str,
    description: str,
    provenance: Json,
    files: dict[str, str],
    dirs: dict[str, list[str]],
    file_errors: dict[str, str],
    msr: dict[int, dict[int, MsrReading]],
    cpuid: dict[tuple[int, int], dict[int, CpuidReading]],
    blobs: dict[str, bytes] | None = None,
) -> Json:
    doc: Json = {
        "format": FORMAT,
        "version": VERSION,
        "name": name,
        "description": description,
        "provenance": provenance,
        "files": dict(sorted(files.items())),
        "file_errors": dict(sorted(file_errors.items())),
        "dirs": {k: sorted(v) for k, v in sorted(dirs.items())},
        "msr": {f"0x{i:x}": _group(res, lambda v: f"0x{v:016x}") for i, res in sorted(msr.items())},
        "cpuid": {
            f"0x{leaf:08x}:0x{sub:x}": _group(res, lambda v: [f"0x{x:08x}" for x in v])
            for (leaf, sub), res in sorted(cpuid.items())
        },
    }
    if blobs:  # only when there are any: documents without binary files stay as they were
        doc["blobs"] = {k: base64.b64encode(v).decode("ascii") for k, v in sorted(blobs.items())}
    return doc


def from_recording(
    rec: RecordingHost,
    name: str,
    description: str,
    kernel: str | None,
    hostname: str | None = None,
    notes: str = "",
) -> Json:
    provenance: Json = {
        "origin": "recorded",
        "recorded_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tool_version": __version__,
        "kernel": kernel,
        "hostname": hostname,
        "root": rec.name,
        "sources": [],
        "notes": notes,
    }
    return to_document(
        name, description, provenance, rec.files, rec.dirs, rec.file_errors, rec.msr, rec.cpuid, rec.blobs
    )


def from_fixture(fx: Fixture) -> Json:
    """The document a loaded fixture came from, normalised (for round trips)."""
    return to_document(
        fx.name, fx.description, fx.provenance, fx.files, fx.dirs, fx.file_errors, fx.msr, fx.cpuid, fx.blobs
    )
