"""Scans of bundled fixtures to export, and strict readers of the two export formats
(Prometheus text exposition, NFD features.d), shared by tests/render and tests/cli."""

import dataclasses
import functools
import re
from datetime import datetime, timezone

from vmxprobe.host import fixture
from vmxprobe.host.sources import FixtureHost
from vmxprobe.pipeline import run

FIXTURES = fixture.bundled_names()


@functools.cache
def report(name="intel-2s-ready"):
    """The scan of a bundled fixture (a frozen ScanResult: tests change copies of it)."""
    fx = fixture.load(name)
    return run(FixtureHost(fx), fx)


def undetermined():
    r = report()
    v = dataclasses.replace(
        r.verdict,
        x86_vmx_init=None,
        kvm_intel=None,
        basic=None,
        feature_control=None,
        undetermined=("IA32_VMX_BASIC could not be read on CPU 0 (ENOENT)",),
    )
    assert not v.ready and not v.determined
    return dataclasses.replace(r, verdict=v)


def with_host(r, **changes):
    return dataclasses.replace(r, host=dataclasses.replace(r.host, **changes))


# One sample: name, optional {labels}, one value, and nothing else (no timestamp).
SAMPLE = re.compile(
    r'(vmxprobe_[a-zA-Z0-9_]+)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? '
    r"(-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)"
)


def parse_prom(text):
    """Strict reading of the exposition format: every family has HELP then TYPE gauge
    before its samples; returns {name: [(labels_text, value)]}."""
    assert text.endswith("\n") and not text.endswith("\n\n")
    families, current, typed = {}, None, set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            current = line.split()[2]
            assert current not in families, f"{current} twice"
            families[current] = []
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name == current and kind == "gauge", line
            typed.add(name)
        else:
            m = SAMPLE.fullmatch(line)
            assert m, f"not a timestamp-free sample: {line!r}"
            assert m.group(1) == current and current in typed, line
            families[current].append((m.group(2) or "", float(m.group(3))))
    assert all(families.values()), "a family without samples"
    return families


def parse_features_d(text, now):
    """What nfd-worker's local source makes of a features.d file (source/local/local.go):
    trimmed lines; '# +' lines are directives (an unknown one is an error); other '#'
    lines are comments; expiry applies to the lines after it; name[=value]."""
    labels, expiry = {}, None
    for line in (raw.strip() for raw in text.split("\n")):
        if not line:
            continue
        if line.startswith("#"):
            if line.startswith("# +"):
                key, _, value = line[3:].partition("=")
                assert key == "expiry-time", f"unknown directive {line!r}"
                expiry = datetime.strptime(value.strip(), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
            continue
        assert expiry is not None, "a label before the expiry directive never expires"
        if expiry < now:
            continue
        name, eq, value = line.partition("=")
        labels[name] = value if eq else "true"
    return labels, expiry
