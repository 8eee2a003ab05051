"""Tests for vmxprobe.render.report: the JSON report (vmxprobe/schema/report-v1.json).
Scans are of bundled fixtures; raw values are checked against the fixture's registers."""

import json
from importlib import resources

import jsonschema

from vmxprobe import pipeline
from vmxprobe.host import fixture
from vmxprobe.host.sources import FixtureHost, MsrReading
from vmxprobe.render import report

SCHEMA = json.loads((resources.files("vmxprobe.schema") / "report-v1.json").read_text())


def scan(name, fx=None):
    fx = fx or fixture.load(name)
    return pipeline.run(FixtureHost(fx), fx), fx


def test_the_report_follows_the_schema():
    for name in ("bochs-skylake-x-debian", "intel-fw-locked-off", "kvm-nested-guest", "amd-host"):
        r, _ = scan(name)
        doc = report.build(r)
        jsonschema.validate(doc, SCHEMA)
        assert doc["schema_version"] == report.SCHEMA_VERSION == 1


def test_raw_msr_values_are_016x_strings_of_what_was_read():
    r, fx = scan("bochs-skylake-x-debian")
    doc = report.build(r)
    cpu0 = doc["per_cpu"][0]
    assert cpu0["msr"]["0x480"] == f"0x{fx.msr[0x480][0].value:016x}"
    assert cpu0["msr"]["0x3a"] == f"0x{fx.msr[0x3A][0].value:016x}"
    assert doc["source"] == {
        "kind": "fixture",
        "name": "bochs-skylake-x-debian",
        "origin": "recorded",
        "description": fx.description,
    }


def test_the_plan_is_one_page_per_possible_cpu():
    r, fx = scan("intel-2s-ready")
    plan = report.build(r)["plan"]
    assert fx.files["sys/devices/system/cpu/possible"].strip() == "0-31"
    assert plan["pages"] == 32 and plan["bytes"] == 32 * 4096 and plan["page_size"] == 4096
    revision = fx.msr[0x480][0].value & 0x7FFFFFFF
    assert plan["revision_id"] == revision and plan["header"] == f"0x{revision:08x}"
    assert sum(n["pages"] for n in plan["nodes"]) == 32


def test_an_unreadable_register_is_its_errno_and_null_decode():
    fx = fixture.load("intel-2s-ready")
    fx.msr[0x480] = {c: MsrReading(errno="EPERM") for c in fx.msr[0x480]}
    r, _ = scan("", fx)
    doc = report.build(r)
    assert doc["per_cpu"][0]["msr"]["0x480"] == "EPERM"
    assert doc["vmx_basic"] is None and doc["verdict"]["determined"] is False
    jsonschema.validate(doc, SCHEMA)


def test_render_json_is_the_built_report():
    r, _ = scan("intel-2s-ready")
    out = report.render_json(r)
    assert out.endswith("}\n") and json.loads(out) == report.build(r)


def test_caps_json_is_a_cut_of_the_report():
    r, _ = scan("kvm-nested-guest")
    full = report.build(r)
    caps = json.loads(report.render_caps_json(r))
    assert set(caps) == {
        "schema_version",
        "tool",
        "generated_at",
        "source",
        "host",
        "cpus",
        "capabilities",
        "verdict",
    }
    assert caps["capabilities"] == full["capabilities"]
    assert caps["verdict"]["reasons"] == full["verdict"]["reasons"]
    assert set(caps["verdict"]) == {"x86_vmx_init", "kvm_intel", "ready", "determined", "boot_cpu", "reasons"}
