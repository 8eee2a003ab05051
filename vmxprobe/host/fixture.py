"""The fixture format (docs/fixture-format.md): record, load, validate. Data only."""

from __future__ import annotations

import base64
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
from vmxprobe.host.sources import NOTREG, CpuidReading, MsrReading, RecordingHost
from vmxprobe.printable import first_surrogate, json_path

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
ORIGINS = ("recorded", "composed", "converted")
_HEX = re.compile(r"0x[0-9a-f]+")
_ERRNO = re.compile(r"E[A-Z0-9]{1,15}|SHORT")
_FILE_ERRNO = re.compile(rf"E[A-Z0-9]{{1,15}}|{NOTREG}")
_CPUID_KEY = re.compile(r"0x([0-9a-f]{8}):0x([0-9a-f]{1,8})")
# Text shown on a terminal (name, description) holds no control characters: a fixture
# is data, and an escape sequence in it must not reach the user's terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


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


def _is_base64(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        base64.b64decode(v, validate=True)
    except ValueError:
        return False
    return True


def _expect(cond: object, where: str, what: str) -> None:
    if not cond:
        raise FixtureError(f"{where}: {what}")


def _groups(
    groups: Any,
    where: str,
    key: str,
    convert: Callable[[Any, str], Any],
    budget: list[int],
    kind: type[R],
) -> dict[int, R]:
    _expect(isinstance(groups, list), where, f"{key}: expected a list of groups")
    out: dict[int, R] = {}
    for i, g in enumerate(groups):
        _expect(
            isinstance(g, dict) and isinstance(g.get("cpus"), str),
            where,
            f'{key}[{i}]: each group needs a "cpus" cpulist string',
        )
        try:
            cpus = parse_cpulist(g["cpus"])
        except CpulistError as e:
            raise FixtureError(f"{where}: {key}[{i}].cpus: {e}") from None
        _expect(
            ("value" in g) != ("errno" in g),
            where,
            f'{key}: each group holds exactly one of "value" or "errno"',
        )
        if "errno" in g:
            _expect(
                isinstance(g["errno"], str) and _ERRNO.fullmatch(g["errno"]),
                where,
                f'{key}: errno must be an errno name such as "EIO"',
            )
            reading = kind(errno=g["errno"])
        else:
            reading = kind(value=convert(g["value"], f"{key}"))
        budget[0] -= len(cpus)
        _expect(
            budget[0] >= 0,
            where,
            f"more than {MAX_READINGS} per-CPU register results; not a fixture of a real host",
        )
        for cpu in cpus:
            _expect(cpu not in out, where, f"{key}: CPU {cpu} appears twice")
            out[cpu] = reading
    return out


def _hex_int(text: Any, where: str, what: str, bits: int) -> int:
    _expect(
        isinstance(text, str) and _HEX.fullmatch(text),
        where,
        f'{what}: expected a lower-case "0x..." hex string',
    )
    value = int(text, 16)
    _expect(value < (1 << bits), where, f"{what}: {text} does not fit in {bits} bits")
    return value


def parse(doc: Any, where: str = "fixture") -> Fixture:
    _expect(isinstance(doc, dict), where, "top level must be a JSON object")
    # A \udXXX escape without its pair is valid JSON but not Unicode: no output (text,
    # a mount's files, a report) could hold it. A recorder never writes one.
    bad = first_surrogate(doc)
    _expect(bad is None, where, f"{bad}: a string that is not valid Unicode (a lone surrogate escape)")
    _expect(
        doc.get("format") == FORMAT,
        where,
        f"not a vmxprobe fixture (format is {doc.get('format')!r}, expected {FORMAT!r})",
    )
    version = doc.get("version")
    _expect(
        type(version) is int and version == VERSION,
        where,
        f"fixture version {version!r} is not supported (this vmxprobe reads version "
        f"{VERSION}); upgrade vmxprobe or re-record the fixture",
    )
    name = doc.get("name")
    _expect(
        isinstance(name, str) and name and len(name) <= 255 and not _CONTROL.search(name),
        where,
        '"name" must be a non-empty string of at most 255 characters, without control characters',
    )
    desc = doc.get("description", "")
    _expect(
        isinstance(desc, str) and not _CONTROL.search(desc),
        where,
        '"description" must be one line of text, without control characters',
    )
    prov = doc.get("provenance")
    _expect(isinstance(prov, dict), where, '"provenance" must be an object')
    _expect(prov.get("origin") in ORIGINS, where, f"provenance.origin must be one of {', '.join(ORIGINS)}")

    def str_map(key: str, value_ok: Callable[[Any], object], what: str) -> dict[str, Any]:
        m: dict[str, Any] = doc.get(key, {})
        _expect(isinstance(m, dict), where, f'"{key}" must be an object')
        for k, v in m.items():
            _expect(
                isinstance(k, str) and not k.startswith("/") and ".." not in k.split("/"),
                where,
                f"{key}: {k!r} must be a relative path without '..'",
            )
            _expect(value_ok(v), where, f"{key}[{k!r}] must be {what}")
        return m

    files = str_map("files", lambda v: isinstance(v, str), "a string")
    dirs = str_map(
        "dirs", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of names"
    )
    file_errors = str_map(
        "file_errors",
        lambda v: isinstance(v, str) and _FILE_ERRNO.fullmatch(v),
        'an errno name such as "EACCES"',
    )
    blobs = {
        k: base64.b64decode(v, validate=True)
        for k, v in str_map("blobs", _is_base64, "base64 text (RFC 4648, with padding)").items()
    }
    both = sorted((set(files) | set(blobs)) & set(file_errors)) or sorted(set(files) & set(blobs))
    _expect(not both, where, f'{both[0]!r} is in two of "files", "blobs" and "file_errors"' if both else "")

    msr_doc = doc.get("msr", {})
    _expect(isinstance(msr_doc, dict), where, '"msr" must be an object')
    msr: dict[int, dict[int, MsrReading]] = {}
    budget = [MAX_READINGS]
    for key, groups in msr_doc.items():
        index = _hex_int(key, where, f"msr key {key!r}", 32)
        _expect(key == f"0x{index:x}", where, f"msr key {key!r} must be written 0x{index:x}")
        msr[index] = _groups(
            groups,
            where,
            json_path("$.msr", key),
            lambda v, what: _hex_int(v, where, what, 64),
            budget,
            MsrReading,
        )
    cpuid_doc = doc.get("cpuid", {})
    _expect(isinstance(cpuid_doc, dict), where, '"cpuid" must be an object')
    cpuid: dict[tuple[int, int], dict[int, CpuidReading]] = {}
    for key, groups in cpuid_doc.items():
        m = _CPUID_KEY.fullmatch(key) if isinstance(key, str) else None
        if m is None:
            raise FixtureError(f'{where}: cpuid key {key!r} must look like "0x00000001:0x0"')

        def regs(v: Any, what: str) -> tuple[int, ...]:
            _expect(isinstance(v, list) and len(v) == 4, where, f"{what}: value must be [eax, ebx, ecx, edx]")
            return tuple(_hex_int(x, where, what, 32) for x in v)

        leaf_sub = (int(m.group(1), 16), int(m.group(2), 16))
        canonical = f"0x{leaf_sub[0]:08x}:0x{leaf_sub[1]:x}"
        _expect(key == canonical, where, f"cpuid key {key!r} must be written {canonical}")
        cpuid[leaf_sub] = _groups(groups, where, json_path("$.cpuid", key), regs, budget, CpuidReading)
    return Fixture(
        name=name,
        description=desc,
        provenance=prov,
        files=files,
        dirs=dirs,
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
