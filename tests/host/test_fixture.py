import json
import os

import pytest

from tests import REPO, hostgen
from tests.scanning import run
from vmxprobe.host import fixture
from vmxprobe.host.fixture import FixtureError
from vmxprobe.host.readings import read_host as collect
from vmxprobe.host.sources import CpuidReading, FixtureHost, LiveHost, MsrReading, RecordingHost


def doc():
    return hostgen.synthetic(8, 2)


def test_bundled_fixtures_load_and_describe_themselves():
    names = fixture.bundled_names()
    assert {
        "intel-2s-ready",
        "intel-fw-locked-off",
        "kvm-nested-guest",
        "kvm-guest-no-nested",
        "amd-host",
    } <= set(names)
    for name in names:
        fx = fixture.load(name)
        assert fx.name == name
        assert fx.description
        prov = fx.provenance
        assert prov["origin"] in ("recorded", "composed", "converted")
        if prov["origin"] != "recorded":
            # Anything not recorded says where its values come from.
            assert prov["sources"] and all(s.get("url") for s in prov["sources"]), name
            assert prov["notes"]


def test_grouping_by_cpulist():
    d = doc()
    assert d["msr"]["0x480"] == [{"cpus": "0-7", "value": "0x00da040000000004"}]
    results = {c: MsrReading(value=5) for c in range(512)}
    results[100] = MsrReading(errno="EIO")
    grouped = fixture._group(results, lambda v: f"0x{v:016x}")
    assert grouped == [
        {"cpus": "0-99,101-511", "value": "0x0000000000000005"},
        {"cpus": "100", "errno": "EIO"},
    ]


def test_round_trip_record_load_record(tree):
    root = tree(doc())
    rec = RecordingHost(LiveHost(root))
    collect(rec)
    first = fixture.from_recording(rec, "t", "d", kernel="k")
    loaded = fixture.parse(json.loads(json.dumps(first)))
    again = fixture.from_fixture(loaded)
    assert again == first


def test_replay_gives_the_same_answers_as_the_recorded_host(tree):
    root = tree(doc())
    rec = RecordingHost(LiveHost(root))
    live_report, _ = run(rec)
    fx = fixture.parse(fixture.from_recording(rec, "t", "d", kernel=None))
    replay_report, _ = run(FixtureHost(fx), fx)
    for key in ("host", "cpus", "vmx_basic", "feature_control", "per_cpu", "verdict"):
        assert replay_report[key] == live_report[key], key
    assert replay_report["plan"]["nodes"] == live_report["plan"]["nodes"]


def test_unrecorded_register_is_never_a_value():
    fx = fixture.parse(doc())
    host = FixtureHost(fx)
    assert host.read_msr(0, 0x481) == MsrReading(errno="UNRECORDED")
    assert host.read_msr(99, 0x480) == MsrReading(errno="UNRECORDED")
    assert host.read_cpuid(0, 7) == CpuidReading(errno="UNRECORDED")


def test_replay_never_opens_dev_cpu(mocker):
    spy = mocker.spy(os, "open")
    fx = fixture.load("intel-2s-ready")
    run(FixtureHost(fx), fx)
    assert not [c for c in spy.call_args_list if "/dev/cpu" in str(c.args[0])]


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d.update(format="other"), "not a vmxprobe fixture"),
        (lambda d: d.update(version=2), "$.version: must be the integer 1"),
        (lambda d: d.update(name=""), "$.name: must be a name of 1 to 255 characters"),
        (lambda d: d["provenance"].update(origin="invented"), "provenance.origin"),
        (lambda d: d.update(files={"/etc/passwd": "x"}), "relative path"),
        (lambda d: d.update(files={"a/../../b": "x"}), "relative path"),
        (lambda d: d.update(files={"a": 3}), "must be a string"),
        (
            lambda d: d["msr"].update({"0x480": [{"cpus": "0", "value": "12"}]}),
            "64-bit value as lower-case hex",
        ),
        (
            lambda d: d["msr"].update({"0x480": [{"cpus": "0", "value": "0x1" + "0" * 16}]}),
            "64-bit value as lower-case hex",
        ),
        (
            lambda d: d["msr"].update({"0x480": [{"cpus": "0", "value": "0x1", "errno": "EIO"}]}),
            "exactly one",
        ),
        (lambda d: d["msr"].update({"0x480": [{"cpus": "0", "errno": "bad"}]}), "errno name"),
        (
            lambda d: d["msr"].update(
                {"0x480": [{"cpus": "0-1", "errno": "EIO"}, {"cpus": "1", "errno": "EIO"}]}
            ),
            '$.msr["0x480"]: CPU 1 appears in more than one group',
        ),
        (lambda d: d["msr"].update({"0x480": [{"cpus": "x", "errno": "EIO"}]}), "cpulist"),
        (lambda d: d["cpuid"].update({"1:0": []}), "CPUID leaf and subleaf"),
        (lambda d: d["cpuid"].update({"0x00000001:0x0": [{"cpus": "0", "value": ["0x1"]}]}), "eax, ebx"),
        (lambda d: d.update(msr=[]), "$.msr: must be an object"),
    ],
)
def test_malformed_fixtures_are_rejected_in_one_line(fixture_file, mutate, message):
    d = doc()
    mutate(d)
    with pytest.raises(FixtureError) as e:
        fixture.load(fixture_file(d))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_not_json(tmp_path):
    p = tmp_path / "f.json"
    p.write_bytes(b"\xff\xfe{")
    with pytest.raises(FixtureError, match="not valid JSON"):
        fixture.load(str(p))
    p.write_text("[1, 2")
    with pytest.raises(FixtureError, match="not valid JSON"):
        fixture.load(str(p))


def test_oversize_fixture_refused_before_reading(tmp_path, mocker):
    p = tmp_path / "big.json"
    with open(p, "wb") as f:
        f.truncate(fixture.MAX_BYTES + 1)
    spy = mocker.spy(json, "loads")
    with pytest.raises(FixtureError, match="over the 64 MiB limit"):
        fixture.load(str(p))
    assert spy.call_count == 0


def test_directory_and_unknown_name(tmp_path):
    with pytest.raises(FixtureError, match="not a regular file"):
        fixture.load(str(tmp_path))
    with pytest.raises(FixtureError, match="vmxprobe fixtures"):
        fixture.load("no-such-fixture")


def test_published_generations_carry_their_source():
    """At least ten CPU generations with IA32_VMX_BASIC values published on the web, each
    fixture naming the address it came from and the published value unchanged."""
    import json as _json

    published = _json.load(open(os.path.join(REPO, "tools", "fixtures", "data", "published-vmx.json")))
    pubs = [n for n in fixture.bundled_names() if n.startswith("pub-")]
    generations = set()
    for name in pubs:
        fx = fixture.load(name)
        assert fx.provenance["origin"] == "composed"
        url = fx.provenance["sources"][0]["url"]
        [entry] = [
            e
            for e in published
            if e["source_url"] == url and f": {e['cpu'].split(' (')[0]}, published" in fx.description
        ]
        generations.add(entry["generation"].split(" (")[0])
        for index, value in entry["msrs"].items():
            assert fx.msr[int(index, 16)][0].value == int(value, 16), (name, index)
    assert len(generations) >= 10, generations


@pytest.mark.parametrize(
    "change, path",
    [
        (lambda d: d.update(name="x\ud800"), "$.name"),
        (lambda d: d["files"].update({"proc/cpuinfo": "model name\t: \udcff\n"}), '$.files["proc/cpuinfo"]'),
        (lambda d: d["provenance"].update(notes="\udfff"), "$.provenance.notes"),
        (lambda d: d["files"].update({"proc/\ud800": "x"}), '$.files["proc/\\ud800"]'),
    ],
)
def test_a_lone_surrogate_anywhere_is_refused_with_its_json_path(change, path):
    d = doc()
    change(d)
    raw = json.dumps(d).encode()  # the \udXXX escape a hostile file holds
    with pytest.raises(FixtureError, match="valid Unicode") as e:
        fixture.parse(fixture.decode_json(raw, "fx.json"), "fx.json")
    assert path in str(e.value)
    d = doc()
    d["name"] = "emoji \U0001f600"  # a surrogate pair in JSON is one character: fine
    fixture.parse(json.loads(json.dumps(d)))


# --- the shape is schema/fixture-v1.json's ------------------------------------------------


@pytest.mark.parametrize(
    "mutate, path",
    [
        (lambda d: d.update(extra=1), "$.extra: not a field here"),
        (lambda d: d["provenance"].update(recorder="me"), "$.provenance.recorder: not a field here"),
        (lambda d: d["msr"]["0x480"][0].update(note="x"), '$.msr["0x480"][0].note: not a field here'),
        (lambda d: d["provenance"].update(kernel=5), "$.provenance.kernel: must be a string"),
        (lambda d: d["provenance"].update(sources="x"), "$.provenance.sources: must be a list"),
        (
            lambda d: d["provenance"].update(sources=[{"what": "x"}]),
            '$.provenance.sources[0]: "url" is missing',
        ),
        (lambda d: d["provenance"].update(cpu_count=0), "$.provenance.cpu_count: must be a number of CPUs"),
        (lambda d: d["provenance"].update(kernel_outcome=[]), "$.provenance.kernel_outcome: must be what"),
        (lambda d: d["msr"].update({"0x480": [{"cpus": "0", "errno": "EFOO"}]}), '0x480"][0].errno: must be'),
        (
            lambda d: d["msr"].update({"0x480": [{"cpus": "0", "errno": "NOTREG"}]}),
            '0x480"][0].errno: must be',
        ),
        (lambda d: d.update(file_errors={"x": "SHORT"}), "$.file_errors.x: must be an errno name"),
        (lambda d: d.update(file_errors={"x": "E"}), "$.file_errors.x: must be an errno name"),
        (lambda d: d.update(files={"": "x"}), '$.files[""]: must be a relative path'),
        (lambda d: d.update(files={"a\x00b": "x"}), '$.files["a\\x00b"]: must be a relative path'),
        (
            lambda d: d.update(files={"proc/cpu\ninfo": "x"}),
            '$.files["proc/cpu\\ninfo"]: must be a relative path',
        ),
        (lambda d: d.update(files={"a//b": "x"}), '$.files["a//b"]: must be a relative path'),
        (lambda d: d.update(files={"./a": "x"}), '$.files["./a"]: must be a relative path'),
        (lambda d: d.update(dirs={"sys": ["ok", ".."]}), "$.dirs.sys[1]: must be an entry name"),
        (lambda d: d.update(dirs={"sys": ["a/b"]}), "$.dirs.sys[0]: must be an entry name"),
        (lambda d: d.update(blobs={"sys/x": "abc"}), '$.blobs["sys/x"]: must be base64'),
        (lambda d: d["msr"].update({"0x480": [{"cpus": "0-40000", "errno": "EIO"}]}), "beyond the limit"),
        (lambda d: d["msr"].update({"0x480": [{"cpus": "007", "errno": "EIO"}]}), "cpulist in the kernel's"),
    ],
)
def test_what_the_schema_refuses_is_refused_with_its_json_path(mutate, path):
    d = doc()
    mutate(d)
    with pytest.raises(FixtureError) as e:
        fixture.parse(json.loads(json.dumps(d)), "fx.json")
    assert str(e.value).startswith("fx.json: ") and path in str(e.value), str(e.value)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["provenance"].update(
            origin="emulated",
            emulator="bochs",
            emulator_version="2.7",
            cpu_model="corei7_haswell_4770",
            kernel_outcome={"kvm_intel": "ok", "dev_kvm": True, "log": [], "n": 1.5},
        ),
        lambda d: d["provenance"].update(kernel_outcome="kvm_intel loaded"),
        lambda d: d["msr"].update({"0x480": [{"cpus": "0-7", "errno": "EHWPOISON"}]}),  # 133
        lambda d: d["msr"].update({"0x480": [{"cpus": "0-7", "errno": "E524"}]}),  # unnamed
        lambda d: d["msr"].update({"0x480": [{"cpus": "0-7", "errno": "ENOTSUP"}]}),
        lambda d: d.update(file_errors={"proc/x": "NOTREG", "proc/y": "EFBIG"}),
        lambda d: d.update(version=1.0),  # JSON does not tell 1.0 from 1
    ],
)
def test_what_the_schema_allows_loads(mutate):
    d = doc()
    mutate(d)
    fixture.parse(json.loads(json.dumps(d)))
