"""Scan reports as a fleet holds them, for the fleet tests: bundled fixtures' reports,
dressed as live scans and changed field by field."""

import copy
import functools
import json
import os
import time
from importlib import resources

import jsonschema

from tests import cli_runner
from tests.scanning import run
from vmxprobe.cli import cli
from vmxprobe.host import fixture
from vmxprobe.host.sources import FixtureHost

SCHEMA = json.loads((resources.files("vmxprobe.schema") / "report-v1.json").read_text())


@functools.cache
def validator():
    # Built once: jsonschema.validate() checks the schema itself on every call.
    return jsonschema.Draft202012Validator(SCHEMA)


@functools.cache
def _report(name):
    fx = fixture.load(name)
    return run(FixtureHost(fx), fx)[0]


def report(name="intel-2s-ready", **changes):
    doc = copy.deepcopy(_report(name))
    for path, value in changes.items():
        *parents, last = path.split("__")
        o = doc
        for p in parents:
            o = o[p]
        o[last] = value
    return doc


def live(name="intel-2s-ready", when=None, **changes):
    """A fixture's report dressed as a live scan, as a fleet would hold it."""
    doc = report(name, **changes)
    doc["source"] = {"kind": "live", "name": "/"}
    if when is not None:
        doc["generated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    return doc


def undetermined_doc():
    doc = live()
    doc["verdict"].update(
        ready=False,
        determined=False,
        x86_vmx_init=None,
        kvm_intel=None,
        reasons=[],
        undetermined=["IA32_VMX_BASIC could not be read on CPU 0 (ENOENT): load msr"],
    )
    doc["vmx_basic"] = doc["feature_control"] = None
    doc["plan"].update(revision_id=None, header=None, materialized=False, verified=None)
    return doc


def write(folder, name, doc):
    path = os.path.join(str(folder), name)
    with open(path, "w") as f:
        f.write(doc if isinstance(doc, str) else json.dumps(doc, indent=2))
    return path


def invoke(*args, **kw):
    return cli_runner().invoke(cli, [str(a) for a in args], **kw)


def summary_json(*args):
    r = invoke("fleet", "--format", "json", *args)
    return r.exit_code, json.loads(r.stdout) if r.stdout else None, r
