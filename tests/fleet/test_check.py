"""The fleet's report check (vmxprobe.fleet.check) agrees with the shipped schema."""

import io
import json
import random
import re
import time

import jsonschema
import pytest

from benchmarks import fleet as bench_fleet
from tests.fleet.reports import live, report, summary_json, validator, write
from vmxprobe.fleet import check as fleet_check
from vmxprobe.fleet import summary as fleet_summary
from vmxprobe.host import fixture
from vmxprobe.render import report as rep

# --- the check agrees with the shipped schema ---------------------------------------------


def test_rules_come_from_the_shipped_schema():
    r = fleet_check.rules()
    assert r.version == rep.SCHEMA_VERSION
    assert fleet_check.known_schema_versions() == {rep.SCHEMA_VERSION}
    assert "verdict" in r.required and "ready" in r.required_in["verdict"]
    assert r.fc_state == {"enabled_locked", "disabled_locked", "unlocked"}


@pytest.mark.parametrize("name", fixture.bundled_names())
def test_every_bundled_fixture_report_passes(name):
    doc = report(name)
    fleet_check.check(doc)
    validator().validate(doc)


def _mutations():
    def drop(*path):
        def f(d):
            o = d
            for p in path[:-1]:
                o = o[p]
            del o[path[-1]]

        return f

    def put(value, *path):
        def f(d):
            o = d
            for p in path[:-1]:
                o = o[p]
            o[path[-1]] = value

        return f

    return {
        "no verdict": drop("verdict"),
        "no per_cpu": drop("per_cpu"),
        "no verdict.ready": drop("verdict", "ready"),
        "ready as string": put("yes", "verdict", "ready"),
        "ready as 1": put(1, "verdict", "ready"),
        "determined as null": put(None, "verdict", "determined"),
        "reasons not a list": put("x", "verdict", "reasons"),
        "reason not a string": put([1], "verdict", "reasons"),
        "unknown errno": put("EPERM", "verdict", "x86_vmx_init"),
        "tool name": put("other", "tool", "name"),
        "tool version int": put(1, "tool", "version"),
        "generated_at format": put("2026-11-26 14:00:00", "generated_at"),
        "source kind": put("remote", "source", "kind"),
        "source name null": put(None, "source", "name"),
        "source origin": put("guessed", "source", "origin"),
        "host family string": put("6", "host", "family"),
        "host stepping bool": put(True, "host", "stepping"),
        "host vendor int": put(1, "host", "vendor"),
        "no host.hypervisor": drop("host", "hypervisor"),
        "cpulist": put("0-3,x", "cpus", "online"),
        "revision too big": put(2**31, "vmx_basic", "revision_id"),
        "revision string": put("0x12", "vmx_basic", "revision_id"),
        "vmcs size too big": put(8192, "vmx_basic", "vmcs_size"),
        "no vmx_basic.raw": drop("vmx_basic", "raw"),
        "vmx_basic not object": put(5, "vmx_basic"),
        "fc state": put("maybe", "feature_control", "state"),
        "fc locked string": put("true", "feature_control", "locked"),
        "per_cpu object": put({}, "per_cpu"),
        "plan pages negative": put(-1, "plan", "pages"),
        "plan revision string": put("x", "plan", "revision_id"),
        "no plan.header": drop("plan", "header"),
    }


@pytest.mark.parametrize("what", sorted(_mutations()))
def test_the_check_rejects_what_the_schema_rejects(what):
    doc = report()
    _mutations()[what](doc)
    with pytest.raises(fleet_check.Invalid):
        fleet_check.check(doc)
    with pytest.raises(jsonschema.ValidationError):
        validator().validate(doc)


def test_ready_but_undetermined_is_inconsistent():
    with pytest.raises(fleet_check.Invalid, match="ready but not determined"):
        fleet_check.check(report(verdict__determined=False))


@pytest.mark.parametrize("version", [0, 2, 99])
def test_other_schema_versions_are_unknown_not_invalid(version):
    with pytest.raises(fleet_check.UnknownSchema) as e:
        fleet_check.check({"schema_version": version})
    assert e.value.version == version
    with pytest.raises(fleet_check.Invalid, match="schema_version: expected an integer"):
        fleet_check.check({"schema_version": "1"})


def test_benchmark_reports_are_valid_v1_reports():
    rng = random.Random(7)
    now = time.time()
    profiles = set()
    for _ in range(200):
        doc = json.loads(bench_fleet.make_report(rng, now, future_schema_fraction=0))
        validator().validate(doc)
        fleet_check.check(doc)
        profiles.add((fleet_summary.status_of(doc), doc["host"]["vendor"], doc["host"]["hypervisor"] is None))
    assert {p[0] for p in profiles} == {"ready", "not_ready", "undetermined"}
    assert {p[1] for p in profiles} == {"GenuineIntel", "AuthenticAMD"}
    assert {p[2] for p in profiles} == {True, False}


@pytest.mark.parametrize(
    "path,value",
    [
        (("source", "kind"), ["live"]),
        (("source", "origin"), {}),
        (("feature_control", "state"), ["enabled_locked"]),
        (("verdict", "x86_vmx_init"), {"ok": 1}),
        (("verdict", "kvm_intel"), []),
        (("verdict", "x86_svm_init"), "ENOMEM"),
        (("verdict", "kvm_amd"), ["ok"]),
        (("verdict", "virt"), "sev"),
    ],
)
def test_a_list_or_object_where_an_enum_belongs_is_invalid_not_a_crash(tmp_path, path, value):
    doc = live()
    doc[path[0]][path[1]] = value
    with pytest.raises(fleet_check.Invalid, match=path[1]):
        fleet_check.check(doc)
    write(tmp_path, "odd.json", doc)
    write(tmp_path, "good.json", live())
    code, s, _ = summary_json(tmp_path)
    assert code == 3 and s["readiness"]["ready"] == 1 and s["invalid"]["count"] == 1


def test_reports_before_the_amd_verdict_still_pass():
    """The AMD fields are additive: a report without them passes the check and the
    shipped schema (old reports of AMD hosts included)."""
    for name in ("intel-2s-ready", "amd-host"):
        doc = live(name)
        for key in ("x86_svm_init", "kvm_amd", "virt"):
            del doc["verdict"][key]
        del doc["svm"], doc["plan"]["applies"], doc["plan"]["why"]
        for e in doc["per_cpu"]:
            e.pop("cpuid_svm", None), e.pop("svm_flag", None)
        validator().validate(doc)
        fleet_check.check(doc)
        assert fleet_summary.virt_of(doc) == "vmx"


def test_a_bad_vm_cr_state_is_invalid():
    doc = live("amd-svm-locked-off")
    doc["svm"]["vm_cr"]["state"] = "off"
    with pytest.raises(fleet_check.Invalid, match="svm.vm_cr.state"):
        fleet_check.check(doc)


def test_a_lone_surrogate_makes_a_report_invalid_naming_where():
    doc = live()
    doc["verdict"]["reasons"] = ["fine", "bad \udcff"]
    bad = r"verdict.reasons\[1\]: a string that is not valid Unicode"
    with pytest.raises(fleet_check.Invalid, match=bad):
        fleet_check.read_report("r.json", stream=io.BytesIO(json.dumps(doc).encode()))
    # UTF-8-encoded surrogates are not UTF-8 (json.loads() of bytes would take them)
    raw = json.dumps(live()).replace('"0.1.0"', '"0.1.0 \\ud800"', 1).encode()
    raw = raw.replace(b"\\ud800", b"\xed\xa0\x80")
    with pytest.raises(fleet_check.Unreadable, match="not UTF-8"):
        fleet_check.read_report("r.json", stream=io.BytesIO(raw))


@pytest.mark.parametrize(
    "change, where",
    [
        (lambda e: e["msr"].update({"0x3a": ["0x5"]}), 'per_cpu[1].msr["0x3a"]'),
        (lambda e: e["msr"].update({"0x480": {"v": 1}}), 'per_cpu[1].msr["0x480"]'),
        (lambda e: e.update(msr=[]), "per_cpu[1].msr"),
        (lambda e: e.update(msr=None), "per_cpu[1].msr"),
        (lambda e: e.update(cpuid_vmx=[True]), "per_cpu[1].cpuid_vmx"),
        (lambda e: e.update(vmx_flag={}), "per_cpu[1].vmx_flag"),
        (lambda e: e.update(cpu="1"), "per_cpu[1].cpu"),
        (lambda e: e.update(cpu=-1), "per_cpu[1].cpu"),
        (lambda e: e.pop("cpu"), "per_cpu[1].cpu"),
    ],
)
def test_unexpected_types_inside_per_cpu_are_invalid_as_the_schema_says(change, where):
    doc = live()
    change(doc["per_cpu"][1])
    assert not validator().is_valid(doc)
    with pytest.raises(fleet_check.Invalid, match=re.escape(where)):
        fleet_check.check(doc)


def test_per_cpu_entries_without_optional_fields_are_valid():
    doc = live()
    for e in doc["per_cpu"]:
        e.pop("msr", None), e.pop("cpuid_vmx", None)
        e["vmx_flag"] = None
    validator().validate(doc)
    fleet_check.check(doc)
