"""Property-based tests: every parser and decoder takes arbitrary input and returns a
valid result or raises its documented error; records round-trip exactly; a scan is a
function of its fixture.

One fixed profile (PROFILE): derandomized, so a run is reproducible and CI sees the
same examples every time; no example database is written. VMXPROBE_EXAMPLES scales the
number of examples for a deeper local run. Each test counts the examples it ran; the
module prints the total when it is done (the figure quoted in docs/faults.md).
"""

from __future__ import annotations

import copy
import io
import json
import os
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
from vmxprobe.host import fixture
from vmxprobe.host.cpulist import MAX_CPU_ID, CpulistError, format_cpulist, parse_cpulist, parse_cpumap
from vmxprobe.host.fixture import FixtureError
from vmxprobe.host.readings import read_host as collect
from vmxprobe.host.sources import FixtureHost, MsrReading, RecordingHost

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
