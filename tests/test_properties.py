"""Property-based tests: every parser and decoder takes arbitrary input and returns a
valid result or raises its documented error; records round-trip exactly; a scan is a
function of its fixture.

One fixed profile (PROFILE): derandomized, so a run is reproducible and CI sees the
same examples every time; no example database is written. VMXPROBE_EXAMPLES scales the
number of examples for a deeper local run. Each test counts the examples it ran; the
module prints the total when it is done (the figure quoted in docs/faults.md).
"""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import re
import string
import tempfile
from collections import Counter

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from tests import hostgen
from tests.scanning import run
from vmxprobe.arch import capabilities as caps
from vmxprobe.arch import controls, vmx
from vmxprobe.fleet import check as fleet_check
from vmxprobe.host import errnos, fixture
from vmxprobe.host.cpulist import MAX_CPU_ID, CpulistError, format_cpulist, parse_cpulist, parse_cpumap
from vmxprobe.host.fixture import FixtureError
from vmxprobe.host.readings import read_host as collect
from vmxprobe.host.sources import FixtureHost, MsrReading, RecordingHost
from vmxprobe.printable import json_path
from vmxprobe.schema.validate import SchemaError, shipped

# Hypothesis keeps its files (failing-example patches, even for the expected failures
# below) outside the work tree.
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "vmxprobe-hypothesis"))

SCALE = float(os.environ.get("VMXPROBE_EXAMPLES", "1"))
PROFILE = settings(
    max_examples=int(300 * SCALE),
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def examples(n):
    return settings(PROFILE, max_examples=max(1, int(n * SCALE)))


COUNTS: Counter = Counter()


def seen(name):
    COUNTS[name] += 1


@pytest.fixture(scope="module", autouse=True)
def _report_counts(request):
    yield
    total = sum(COUNTS.values())
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and capture is not None and total:
        with capture.global_and_fixture_disabled():
            reporter.write_line(
                f"\nhypothesis: {total} examples over {len(COUNTS)} properties: "
                + ", ".join(f"{k} {n}" for k, n in sorted(COUNTS.items()))
            )


U64 = st.integers(0, 2**64 - 1)
NOT_INT = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2),
    st.binary(max_size=4),
)


# --- decoders ----------------------------------------------------------------------------


@examples(1000)
@given(U64)
def test_basic_info_msr_decodes_every_64_bit_value_exactly(v):
    seen("vmx.decode_vmx_basic")
    d = vmx.decode_vmx_basic(v).fields()
    assert d["raw"] == f"0x{v:016x}"
    # every bit is in exactly one field or in "reserved": the value rebuilds exactly
    rebuilt = sum(int(d[f.name]) << f.lo for f in vmx.VMX_BASIC_FIELDS)
    rebuilt |= sum(1 << b for b in d["reserved"])
    assert rebuilt == v
    assert 0 <= d["revision_id"] < 2**31 and 0 <= d["vmcs_size"] < 2**13
    assert d["memory_type_name"] == {0: "UC", 6: "WB"}.get(d["memory_type"], "reserved")
    json.dumps(d)


@examples(1000)
@given(U64)
def test_feature_control_decodes_every_64_bit_value(v):
    seen("vmx.decode_feature_control")
    d = vmx.decode_feature_control(v).fields()
    assert d["raw"] == f"0x{v:016x}"
    assert d["locked"] == bool(v & 1) and d["vmx_inside_smx"] == bool(v & 2)
    assert d["vmx_outside_smx"] == bool(v & 4)
    assert d["senter_local_functions"] == (v >> 8) & 0x7F
    assert d["state"] == ("unlocked" if not v & 1 else "enabled_locked" if v & 4 else "disabled_locked")
    json.dumps(d)


CAP_INDEXES = sorted(caps.MSRS)


@examples(1000)
@given(st.sampled_from(CAP_INDEXES), U64)
def test_capability_msrs_decode_every_value(index, v):
    seen("caps.decode")
    d = caps.decode(index, v)
    assert d["raw"] == f"0x{v:016x}" and d["index"] == f"0x{index:x}"
    assert all(0 <= b < 64 and v >> b & 1 for b in d["reserved"])
    assert isinstance(d["errors"], list) and all(isinstance(e, str) for e in d["errors"])
    if "controls" in d:
        states = {controls.ALWAYS_ON, controls.ALWAYS_OFF, controls.EITHER, controls.INCONSISTENT}
        assert set(d["controls"].values()) <= states
        # "inconsistent" (must be 1 and must be 0) is exactly what errors lists
        bad = [n for n, s in d["controls"].items() if s == controls.INCONSISTENT]
        assert len(bad) <= len(d["errors"])
    json.dumps(d)


@examples(300)
@given(st.integers(), U64)
def test_capability_decode_of_an_unknown_index_is_a_value_error(index, v):
    seen("caps.decode unknown index")
    assume(index not in caps.MSRS)
    with pytest.raises(ValueError):
        caps.decode(index, v)


@examples(300)
@given(NOT_INT)
def test_decoders_refuse_what_is_not_an_integer(x):
    seen("decoders on non-integers")
    for decode in (vmx.decode_vmx_basic, vmx.decode_feature_control, lambda y: caps.decode(0x481, y)):
        with pytest.raises((TypeError, ValueError)):
            decode(x)


@examples(300)
@given(st.one_of(st.integers(max_value=-1), st.integers(min_value=2**64)))
def test_decoders_refuse_values_outside_64_bits(x):
    seen("decoders outside 64 bits")
    for decode in (vmx.decode_vmx_basic, vmx.decode_feature_control, lambda y: caps.decode(0x481, y)):
        with pytest.raises(ValueError):
            decode(x)


# --- cpulist and cpumap ------------------------------------------------------------------

CPUS = st.lists(st.integers(0, 4095), max_size=64)


@examples(1000)
@given(CPUS)
def test_cpulist_round_trips(cpus):
    seen("cpulist round trip")
    text = format_cpulist(cpus)
    assert parse_cpulist(text) == sorted(set(cpus))
    assert parse_cpulist(text + "\n") == sorted(set(cpus))


@examples(1000)
@given(st.text(alphabet=string.digits + ",-:/ \n\x00xa²", max_size=40))
def test_cpulist_parser_takes_any_text(text):
    seen("cpulist parser")
    try:
        cpus = parse_cpulist(text)
    except CpulistError as e:
        assert "\n" not in str(e)
        return
    assert cpus == sorted(set(cpus)) and all(0 <= c <= MAX_CPU_ID for c in cpus)


@examples(1000)
@given(CPUS)
def test_cpumap_agrees_with_the_cpulist(cpus):
    seen("cpumap round trip")
    mask = sum(1 << c for c in set(cpus))
    words = max(1, max(cpus, default=0) // 32 + 1)
    text = ",".join(f"{(mask >> (32 * i)) & 0xFFFFFFFF:08x}" for i in reversed(range(words)))
    assert parse_cpumap(text) == sorted(set(cpus))


@examples(1000)
@given(st.text(alphabet=string.hexdigits + ",xz ²\n", max_size=60))
def test_cpumap_parser_takes_any_text(text):
    seen("cpumap parser")
    try:
        cpus = parse_cpumap(text)
    except CpulistError as e:
        assert "\n" not in str(e)
        return
    assert cpus == sorted(set(cpus))


# --- the fixture loader ------------------------------------------------------------------

JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)

BASE = hostgen.synthetic(4, 2)


@examples(500)
@given(JSON)
def test_fixture_parse_takes_any_json(doc):
    seen("fixture.parse on JSON")
    try:
        fixture.parse(doc)
    except FixtureError as e:
        assert "\n" not in str(e)


@st.composite
def mutated(draw, base, paths, values):
    """A deep copy of `base` with one to three fields (named by `paths`) deleted or
    replaced by arbitrary JSON or one of `values`."""
    doc = copy.deepcopy(base)
    for path in draw(st.lists(st.sampled_from(paths), min_size=1, max_size=3)):
        parent = doc
        try:
            for k in path[:-1]:
                parent = parent[k]
            if draw(st.integers(0, 3)) == 0 and isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent[path[-1]] = draw(st.one_of(JSON, st.sampled_from(values)))
        except (KeyError, IndexError, TypeError):
            pass  # an earlier change removed or replaced the parent
    return doc


@examples(500)
@given(st.deferred(lambda: mutated(BASE, FIXTURE_PATHS, ["0x1", "EIO", "0-3", [], {}])))
def test_fixture_parse_takes_any_mutation_of_a_valid_fixture(doc):
    seen("fixture.parse on mutations")
    try:
        fx = fixture.parse(doc)
    except FixtureError as e:
        assert "\n" not in str(e)
        return
    assert isinstance(fx, fixture.Fixture)


@examples(300)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.just(json.dumps(BASE).encode()).map(lambda b: b[: len(b) // 2]),
        st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    )
)
def test_fixture_load_takes_any_bytes(data):
    seen("fixture.load on bytes")
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        f.write(data)
        f.flush()
        try:
            fixture.load(f.name)
        except FixtureError as e:
            assert "\n" not in str(e)


# --- scans of generated hosts ------------------------------------------------------------


@st.composite
def hosts(draw):
    n = draw(st.integers(1, 16))
    nodes = draw(st.integers(1, min(n, 4)))
    extra = draw(st.integers(0, 4))
    doc = hostgen.synthetic(
        n,
        nodes,
        possible=list(range(n + extra)) if extra else None,
        feat_ctl=draw(st.sampled_from([0x0, 0x1, 0x3, 0x5, 0x7])),
        vmx_basic=draw(st.one_of(st.just(0x00DA040000000004), U64)),
    )
    fx = fixture.parse(doc)
    # some CPUs differ, some fail
    for cpu in draw(st.lists(st.integers(0, n - 1), max_size=3)):
        index = draw(st.sampled_from([0x3A, 0x480]))
        fx.msr[index][cpu] = draw(
            st.one_of(
                U64.map(lambda v: MsrReading(value=v)),
                st.sampled_from(["EIO", "ENOENT", "EPERM", "ENXIO", "SHORT"]).map(
                    lambda e: MsrReading(errno=e)
                ),
            )
        )
    return fx


def _no_time(report):
    out = copy.deepcopy(report)
    out.pop("generated_at", None)
    return out


@pytest.fixture(scope="module")
def schema_validator():
    jsonschema = pytest.importorskip("jsonschema")
    from importlib import resources

    schema = json.loads((resources.files("vmxprobe.schema") / "report-v1.json").read_text())
    return jsonschema.Draft202012Validator(schema)


@examples(300)
@given(hosts())
def test_a_fixture_scanned_twice_gives_the_same_valid_report(schema_validator, fx):
    seen("scan determinism")
    first, v1 = run(FixtureHost(fx), fx)
    second, v2 = run(FixtureHost(fx), fx)
    assert _no_time(first) == _no_time(second)
    assert json.dumps(first, sort_keys=True)  # JSON all the way down
    schema_validator.validate(first)
    fleet_check.check(json.loads(json.dumps(first)))
    assert v1.ready == first["verdict"]["ready"]
    if first["verdict"]["ready"]:
        assert first["verdict"]["determined"] and first["plan"]["materialized"]


@examples(200)
@given(hosts())
def test_record_load_record_is_exact(fx):
    seen("record -> load -> record")
    first = RecordingHost(FixtureHost(fx))
    collect(first)
    doc1 = fixture.from_recording(first, "rec", "generated", kernel=None)
    loaded = fixture.parse(json.loads(json.dumps(doc1)))
    second = RecordingHost(FixtureHost(loaded))
    collect(second)
    doc2 = fixture.from_recording(second, "rec", "generated", kernel=None)
    doc2["provenance"]["recorded_at"] = doc1["provenance"]["recorded_at"]
    doc2["provenance"]["root"] = doc1["provenance"]["root"]
    assert doc2 == doc1


@pytest.mark.parametrize("name", fixture.bundled_names())
def test_every_bundled_fixture_scans_the_same_twice(name):
    fx = fixture.load(name)
    assert _no_time(run(FixtureHost(fx), fx)[0]) == _no_time(run(FixtureHost(fx), fx)[0])


def _paths(doc, prefix=()):
    """Every key path in a JSON document (dict keys and list indexes)."""
    out = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        out.append(prefix + (k,))
        if len(prefix) < 3:
            out.extend(_paths(v, prefix + (k,)))
    return out


FIXTURE_PATHS = [p for p in _paths(BASE) if len(p) <= 3]


# --- the report loader (vmxprobe.fleet.check) --------------------------------------------------


def _bundled_report():
    fx = fixture.load("intel-2s-ready")
    return run(FixtureHost(fx), fx)[0]


REPORT = _bundled_report()
# Top-level fields and the fields inside them: where a reader looks first.
REPORT_PATHS = [p for p in _paths(REPORT) if 1 <= len(p) <= 2]


@examples(500)
@given(st.one_of(JSON, mutated(REPORT, REPORT_PATHS, [[], {}, None, 0, ""])))
def test_report_check_takes_anything(doc):
    seen("fleet.check")
    try:
        fleet_check.check(doc)
    except fleet_check.Invalid as e:
        assert "\n" not in str(e)


def test_report_check_refuses_a_list_where_an_enum_belongs():
    doc = copy.deepcopy(REPORT)
    doc["source"]["kind"] = ["live"]
    with pytest.raises(fleet_check.Invalid):
        fleet_check.check(doc)


@examples(500)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
        # a valid report with a field changed, and one cut short
        st.just(json.dumps(REPORT).encode()).map(lambda b: b.replace(b'"ok"', b'"EIO"', 1)),
        st.binary(max_size=64).map(lambda b: json.dumps(REPORT).encode()[:200] + b),
    )
)
def test_report_reading_takes_any_bytes(data):
    seen("fleet.read_report")
    try:
        doc = fleet_check.read_report("report.json", stream=io.BytesIO(data))
    except (fleet_check.Unreadable, fleet_check.Invalid) as e:
        assert "\n" not in str(e)
        return
    assert isinstance(doc, dict) and doc["schema_version"] == 1


def test_an_oversized_report_is_refused(tmp_path):
    p = tmp_path / "big.json"
    with open(p, "wb") as f:
        f.truncate(fleet_check.MAX_REPORT_BYTES + 1)
    with pytest.raises(fleet_check.Unreadable, match="larger than 64 MiB"):
        fleet_check.read_report(str(p))


def test_an_oversized_fixture_is_refused_with_a_clear_error(tmp_path):
    p = tmp_path / "big.json"
    with open(p, "wb") as f:
        f.truncate(fixture.MAX_BYTES + 1)
    with pytest.raises(FixtureError, match=r"big.json: \d+ bytes, over the 64 MiB limit for a fixture"):
        fixture.load(str(p))


# --- hostile text: huge numbers, lone surrogates, control characters ---------------------

# Past Python's int-string limit (4300 digits): int() of it raises.
HUGE_DIGITS = st.integers(4301, 5000).map(lambda n: "9" * n)
SURROGATES = st.characters(categories=["Cs"])  # \ud800-\udfff: what an unpaired \udXXX escape gives
CONTROLS = st.sampled_from(
    [chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]]
    + ["\u2028", "\u2029", "\x1b[2J", "\x1b]0;x\x07"]
)
HOSTILE_TEXT = st.one_of(
    HUGE_DIGITS,
    st.lists(st.one_of(SURROGATES, CONTROLS, st.characters(codec="utf-8")), min_size=1, max_size=12).map(
        "".join
    ),
    st.builds(lambda a, b: f"{a}{b}", st.sampled_from(["0-", "node", "6.1.", "0x", "E"]), HUGE_DIGITS),
)
TEXT_FILES = [
    "proc/sys/kernel/osrelease",
    "sys/devices/system/cpu/kernel_max",
    "sys/devices/system/cpu/possible",
    "sys/devices/system/cpu/online",
    "sys/devices/system/node/node0/distance",
    "sys/devices/system/node/node1/cpulist",
]


@st.composite
def hostile_fixtures(draw):
    """BASE with one to three of its strings (a name, a host file, a model name, a node
    folder, a group's cpulist, an unknown key) replaced by hostile text."""
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        text = draw(HOSTILE_TEXT)
        where = draw(
            st.sampled_from(["name", "description", "model", "file", "node", "cpus", "notes", "key"])
        )
        if where in ("name", "description"):
            doc[where] = text
        elif where == "model":
            doc["files"]["proc/cpuinfo"] = doc["files"]["proc/cpuinfo"].replace("synthetic", text)
        elif where == "file":
            doc["files"][draw(st.sampled_from(TEXT_FILES))] = text
        elif where == "node":
            doc["dirs"]["sys/devices/system/node"].append(f"node{text}")
        elif where == "cpus":
            doc["msr"]["0x3a"][0]["cpus"] = text
        elif where == "notes":
            doc["provenance"]["notes"] = text
        else:
            doc[text[:20]] = 1
    return doc


RAW_CONTROL_BYTES = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]|\xe2\x80[\xa8\xa9]")


def _output_is_clean(result) -> None:
    """A documented exit code, never an internal error; every byte written valid UTF-8
    without a raw control character but the line feed."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1, 2, 3), (result.exit_code, result.stderr_bytes[:300])
    for out in (result.stdout_bytes, result.stderr_bytes):
        out.decode("utf-8")
        assert not RAW_CONTROL_BYTES.search(out), out[:300]


def _invoke(*args):
    from tests import cli_runner
    from vmxprobe.cli import cli

    return cli_runner().invoke(cli, [os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args])


@examples(150)
@given(hostile_fixtures(), st.sampled_from(["scan text", "scan json", "scan prometheus", "scan nfd", "caps"]))
def test_every_command_on_a_hostile_fixture_writes_clean_utf8_and_a_documented_code(doc, how):
    seen("commands on hostile fixtures")
    command, _, fmt = how.partition(" ")
    with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="ascii") as f:
        json.dump(doc, f)
        f.flush()
        _output_is_clean(_invoke(command, "--fixture", f.name, *(["--format", fmt] if fmt else [])))


@examples(40)
@given(
    st.lists(
        st.tuples(st.sampled_from([*TEXT_FILES, "proc/cpuinfo", "node folder"]), HOSTILE_TEXT), max_size=3
    )
)
def test_scan_and_record_of_a_hostile_tree_write_clean_utf8(changes):
    seen("scan and record of hostile trees")
    with tempfile.TemporaryDirectory() as root:
        hostgen.write_tree(BASE, root)
        for where, text in changes:
            # What a file system holds is bytes: a lone surrogate is written as the bytes
            # UTF-8 would give it, which is not UTF-8 (the reader must cope).
            data = text.encode("utf-8", "surrogatepass")
            if where == "node folder":
                name = b"node" + data.replace(b"/", b"_").replace(b"\x00", b"_")[:200]
                os.makedirs(os.path.join(os.fsencode(root), b"sys/devices/system/node", name), exist_ok=True)
                continue
            if where == "proc/cpuinfo":
                data = BASE["files"]["proc/cpuinfo"].encode().replace(b"synthetic", data)
            with open(os.path.join(root, where), "wb") as f:
                f.write(data)
        for args in (
            ("scan", "--root", root),
            ("scan", "--root", root, "--format", "prometheus"),
            ("record", "--root", root),
        ):
            _output_is_clean(_invoke(*args))


@st.composite
def hostile_reports(draw):
    """REPORT with a few strings or per-CPU values replaced by hostile text or types."""
    doc = copy.deepcopy(REPORT)
    doc["source"] = {"kind": "live", "name": "/"}
    for _ in range(draw(st.integers(1, 3))):
        value = draw(st.one_of(HOSTILE_TEXT, st.sampled_from([[], {}, ["0x5"], None, 7])))
        where = draw(st.sampled_from(["model", "kernel", "reason", "msr", "cpuid_vmx", "version", "name"]))
        if where == "model":
            doc["host"]["model_name"] = value
        elif where == "kernel":
            doc["host"]["kernel"] = value
        elif where == "reason":
            doc["verdict"]["reasons"] = [value]
        elif where == "msr":
            doc["per_cpu"][0]["msr"]["0x3a"] = value
        elif where == "cpuid_vmx":
            doc["per_cpu"][0]["cpuid_vmx"] = value
        elif where == "version":
            doc["tool"]["version"] = value
        else:
            doc["source"]["name"] = value
    return doc


FILE_NAMES = st.one_of(
    st.just("web01"),
    st.lists(st.one_of(CONTROLS, st.characters(codec="ascii")), min_size=1, max_size=10).map(
        lambda cs: "".join(cs).replace("/", "_").replace("\x00", "_").lstrip(".") or "x"
    ),
    st.binary(min_size=1, max_size=10).map(
        lambda b: os.fsdecode(b.replace(b"/", b"_").replace(b"\x00", b"_"))
    ),
)


@examples(100)
@given(
    st.lists(st.tuples(FILE_NAMES, hostile_reports()), min_size=1, max_size=3),
    st.sampled_from(["text", "csv", "json"]),
)
def test_fleet_and_diff_of_hostile_reports_write_clean_utf8(reports, fmt):
    seen("fleet on hostile reports")
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for name, doc in reports:
            path = os.path.join(os.fsencode(d), os.fsencode(name).lstrip(b".") + b".json")
            with open(path, "w", encoding="ascii") as f:
                json.dump(doc, f)
            paths.append(path)
        _output_is_clean(_invoke("fleet", d, "--format", fmt))
        _output_is_clean(_invoke("fleet", "diff", paths[0], paths[-1]))


@examples(200)
@given(st.lists(HOSTILE_TEXT, min_size=1, max_size=2), st.one_of(st.just("0x480"), HOSTILE_TEXT))
def test_decode_of_hostile_text_is_clean(values, msr):
    seen("decode on hostile text")
    _output_is_clean(_invoke("decode", "--msr", msr, *values))


# --- the fixture loader and the shipped schema agree --------------------------------------

ERRNO_NAMES = sorted(errnos.KERNEL_NAMES)


@st.composite
def valid_fixtures(draw):
    """Fixture documents of every kind the format allows: recorded, composed, converted
    and emulated provenance with their optional fields, errno groups, file errors,
    blobs."""
    n = draw(st.integers(1, 8))
    doc = hostgen.synthetic(n, draw(st.integers(1, min(n, 3))))
    prov = doc["provenance"]
    prov["origin"] = draw(st.sampled_from(["recorded", "composed", "converted", "emulated"]))
    for key in draw(
        st.lists(st.sampled_from(["emulator", "emulator_version", "cpu_model", "root", "firmware"]))
    ):
        prov[key] = draw(st.text(max_size=8))
    if draw(st.booleans()):
        prov["kernel_outcome"] = draw(
            st.one_of(st.text(max_size=8), st.dictionaries(st.text(max_size=5), JSON))
        )
    if draw(st.booleans()):
        prov["cpu_count"] = draw(st.integers(1, 64))
    if draw(st.booleans()):
        doc["msr"]["0x3a"] = [
            {
                "cpus": f"0-{n - 1}" if n > 1 else "0",
                "errno": draw(st.sampled_from(ERRNO_NAMES + ["SHORT", "E524"])),
            }
        ]
    if draw(st.booleans()):
        doc["file_errors"] = {"proc/meminfo": draw(st.sampled_from(ERRNO_NAMES + ["NOTREG"]))}
    if draw(st.booleans()):
        doc["blobs"] = {
            "sys/firmware/acpi/tables/SRAT": base64.b64encode(draw(st.binary(max_size=20))).decode()
        }
    return json.loads(json.dumps(doc))


SCHEMA_VALUES = [
    "0-3",
    "3-0",
    "0x1",
    "0x" + "f" * 17,
    "EIO",
    "EFOO",
    "SHORT",
    "NOTREG",
    "",
    "a//b",
    "../x",
    "emulated",
    "AAA=",
    [],
    {},
    ["0x1", "0x2", "0x3", "0x4"],
    1,
    1.0,
    True,
    None,
]


@st.composite
def schema_mutations(draw):
    """A valid fixture with one to three fields replaced, removed or added: by JSON, by
    values near the schema's edges, or by hostile text."""
    doc = draw(valid_fixtures())
    paths = _paths(doc)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        parent = doc
        try:
            for k in path[:-1]:
                parent = parent[k]
            action = draw(st.integers(0, 4))
            if action == 0 and isinstance(parent, dict):
                del parent[path[-1]]
            elif action == 1 and isinstance(parent, dict):
                parent[draw(st.one_of(st.text(max_size=6), HOSTILE_TEXT))] = draw(
                    st.sampled_from(SCHEMA_VALUES)
                )
            else:
                parent[path[-1]] = draw(st.one_of(JSON, st.sampled_from(SCHEMA_VALUES), HOSTILE_TEXT))
        except (KeyError, IndexError, TypeError):
            pass  # an earlier change removed or replaced the parent
    return doc


# What the loader refuses beyond the schema, which no JSON Schema can say.
BEYOND_SCHEMA = re.compile(
    r"cpulist|beyond the limit|appears in more than one group|per-CPU register results|is in two of"
)


@pytest.fixture(scope="module")
def fixture_schema():
    jsonschema = pytest.importorskip("jsonschema")
    from importlib import resources

    schema = json.loads((resources.files("vmxprobe.schema") / "fixture-v1.json").read_text())
    return jsonschema.Draft202012Validator(schema)


@examples(600)
@given(st.one_of(valid_fixtures(), schema_mutations()))
def test_the_loader_accepts_a_fixture_iff_the_shipped_schema_validates_it(fixture_schema, doc):
    seen("fixture loader vs schema")
    schema_ok = fixture_schema.is_valid(doc)
    ours = shipped("fixture-v1.json")
    try:
        ours.validate(doc)
        shape_ok = True
    except SchemaError as e:
        shape_ok = False
        # where the loader says the fault is, jsonschema finds one too (at it or above)
        theirs = [_path_of(err.absolute_path) for err in fixture_schema.iter_errors(doc)]
        assert any(e.path.startswith(t) for t in theirs), (e.path, theirs)
    assert shape_ok == schema_ok
    try:
        fixture.parse(doc, "fx.json")
    except FixtureError as e:
        assert "\n" not in str(e)
        if schema_ok:
            # valid to the schema, refused for what only the loader can check
            assert BEYOND_SCHEMA.search(str(e)), str(e)
    else:
        assert schema_ok


def _path_of(keys) -> str:
    out = "$"
    for k in keys:
        out = json_path(out, k)
    return out


@pytest.mark.parametrize("name", fixture.bundled_names())
def test_every_bundled_fixture_is_valid_to_the_shipped_schema(fixture_schema, name):
    path = fixture.bundled_dir() / f"{name}.json"
    fixture_schema.validate(json.loads(path.read_text()))
