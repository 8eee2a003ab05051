"""Tests for `scan --format prometheus` and `scan --format nfd` (vmxprobe.render.prometheus
and vmxprobe.render.nfd), and for the Prometheus export as Debian's
prometheus-node-exporter serves it."""

import dataclasses
import functools
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from tests import REPO, tooling
from vmxprobe import durations
from vmxprobe import files as output
from vmxprobe.cli import cli
from vmxprobe.host import fixture
from vmxprobe.host.sources import FixtureHost
from vmxprobe.pipeline import run
from vmxprobe.render import nfd, prometheus

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


# --- the Prometheus text format --------------------------------------------------------

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


@pytest.mark.parametrize("name", FIXTURES)
def test_prometheus_is_strict_text_format_for_every_fixture(name):
    fams = parse_prom(prometheus.render_prometheus(report(name)))
    assert all(n.startswith("vmxprobe_") for n in fams)
    for required in (
        "vmxprobe_info",
        "vmxprobe_ready",
        "vmxprobe_determined",
        "vmxprobe_last_scan_timestamp_seconds",
        "vmxprobe_verdict_info",
        "vmxprobe_cpus",
    ):
        assert required in fams
    [(labels, value)] = fams["vmxprobe_info"]
    assert value == 1
    assert 'version="0.1.0"' in labels and 'schema="1"' in labels
    assert 'source="fixture"' in labels and f'source_name="{name}"' in labels


@pytest.mark.parametrize(
    "doc,ready,determined",
    [
        (lambda: report("intel-2s-ready"), 1, 1),
        (lambda: report("intel-fw-locked-off"), 0, 1),
        (undetermined, 0, 0),
    ],
)
def test_readiness_and_determined_gauges(doc, ready, determined):
    fams = parse_prom(prometheus.render_prometheus(doc()))
    assert fams["vmxprobe_ready"] == [("", ready)]
    assert fams["vmxprobe_determined"] == [("", determined)]


def test_unreadable_registers_are_absent_series_not_zero():
    fams = parse_prom(prometheus.render_prometheus(undetermined()))
    for name in ("vmxprobe_vmx_revision_id", "vmxprobe_vmcs_size_bytes", "vmxprobe_feature_control_locked"):
        assert name not in fams
    assert fams["vmxprobe_feature_control_info"] == [('{state="unreadable"}', 1)]
    assert (
        fams["vmxprobe_verdict_info"][0][0] == '{x86_vmx_init="unknown",kvm_intel="unknown",emulated="none"}'
    )


def test_values_follow_the_report():
    r = report("intel-2s-ready")
    fams = parse_prom(prometheus.render_prometheus(r))
    assert fams["vmxprobe_vmx_revision_id"] == [("", r.verdict.basic.revision_id)]
    assert fams["vmxprobe_vmcs_size_bytes"] == [("", 1024)]
    assert fams["vmxprobe_root_vmcs_pages"] == [("", 32)]
    assert dict(fams["vmxprobe_cpus"]) == {
        '{state="possible"}': 32,
        '{state="present"}': 32,
        '{state="online"}': 32,
        '{state="probed"}': 32,
    }
    when = datetime.strptime(r.generated_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert fams["vmxprobe_last_scan_timestamp_seconds"] == [("", when.timestamp())]
    nested = parse_prom(prometheus.render_prometheus(report("kvm-nested-guest")))
    assert 'hypervisor="KVM"' in nested["vmxprobe_cpu_info"][0][0]
    assert 'emulated="KVM nested VMX"' in nested["vmxprobe_verdict_info"][0][0]


def test_label_values_are_escaped():
    r = with_host(report(), model_name='Xeon "quoted" \\ back\nslash')
    fams = parse_prom(prometheus.render_prometheus(r))
    assert r'model_name="Xeon \"quoted\" \\ back\nslash"' in fams["vmxprobe_cpu_info"][0][0]


# --- NFD features.d ----------------------------------------------------------------------


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


@pytest.mark.parametrize("name", FIXTURES)
def test_nfd_labels_are_valid_and_namespaced_for_every_fixture(name):
    r = report(name)
    text = nfd.render_nfd(r, environ={})
    assert len(text.encode()) <= nfd.NFD_MAX_FILE_BYTES
    scanned = datetime.strptime(r.generated_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    labels, expiry = parse_features_d(text, scanned)
    assert expiry == scanned + timedelta(hours=24)
    assert labels == nfd.nfd_labels(r)
    for label, value in labels.items():
        assert label.startswith("vmxprobe.io/")
        assert "kubernetes.io" not in label
        assert nfd.valid_label(label, value), (label, value)
    assert labels["vmxprobe.io/ready"] == ("true" if r.verdict.ready else "false")
    assert labels["vmxprobe.io/source"] == "fixture"


def test_nfd_labels_expire_and_expiry_is_configurable():
    r = report()
    scanned = datetime.strptime(r.generated_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    text = nfd.render_nfd(r, environ={"VMXPROBE_NFD_EXPIRY": "3h"})
    labels, expiry = parse_features_d(text, scanned)
    assert expiry == scanned + timedelta(hours=3) and labels
    later, _ = parse_features_d(text, scanned + timedelta(hours=3, seconds=1))
    assert later == {}
    with pytest.raises(nfd.ExportError, match="VMXPROBE_NFD_EXPIRY"):
        nfd.render_nfd(r, environ={"VMXPROBE_NFD_EXPIRY": "3"})


def test_nfd_values_from_undetermined_and_nested_scans():
    u = nfd.nfd_labels(undetermined())
    assert u["vmxprobe.io/ready"] == "false" and u["vmxprobe.io/determined"] == "false"
    assert u["vmxprobe.io/x86-vmx-init"] == "unknown"
    assert "vmxprobe.io/vmcs-revision" not in u
    n = nfd.nfd_labels(report("kvm-nested-guest"))
    assert n["vmxprobe.io/nested-vmx"] == "true"
    assert n["vmxprobe.io/vmcs-revision"] == "0x11e57ed0"
    assert n["vmxprobe.io/hypervisor"] == "KVM"


@pytest.mark.parametrize(
    "raw,want",
    [
        ("Microsoft Hv", "Microsoft-Hv"),
        ("KVM nested VMX", "KVM-nested-VMX"),
        ("  --x--  ", "x"),
        ("(composed)", "composed"),
        ("...", ""),
        ("é", ""),
        ("a" * 100, "a" * 63),
        ("a" * 62 + "-b", "a" * 62),
        (True, "true"),
        (4096, "4096"),
    ],
)
def test_label_value_sanitising(raw, want):
    got = nfd.label_value(raw)
    assert got == want
    assert nfd.valid_label("vmxprobe.io/x", got)


def test_hostile_values_never_make_an_invalid_label(monkeypatch):
    r = with_host(report(), hypervisor="\x00weird hv/\u2603 " + "z" * 80 + "!")
    monkeypatch.setattr(nfd, "__version__", "1.0.0+local/dirty")
    for label, value in nfd.nfd_labels(r).items():
        assert nfd.valid_label(label, value), (label, value)


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("90s", 90),
        ("15m", 900),
        ("3h", 10800),
        ("7d", 604800),
        ("2w", 1209600),
        ("1d12h", 129600),
        (" 7D ", 604800),
    ],
)
def test_parse_duration(text, seconds):
    assert durations.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "d", "7x", "1d 2h", "0s", "-1d", "1.5h"])
def test_parse_duration_rejects(text):
    with pytest.raises(durations.DurationError):
        durations.parse_duration(text)


# --- through the CLI ---------------------------------------------------------------------


def _capture_temp_names(monkeypatch, target):
    """Names of the temp files renamed onto `target` (os.replace is the module-wide one:
    pass every call through, record only ours)."""
    names = []
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(os.fspath(dst)) == os.path.basename(os.fspath(target)):
            names.append(os.path.basename(src))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(output.os, "replace", replace)
    return names


@pytest.mark.parametrize(
    "fmt,name,code",
    [
        ("prometheus", "intel-2s-ready", 0),
        ("prometheus", "intel-fw-locked-off", 1),
        ("nfd", "intel-2s-ready", 0),
        ("nfd", "amd-host", 1),
    ],
)
def test_scan_writes_the_export_atomically_with_a_temp_name_consumers_skip(
    tmp_path, monkeypatch, fmt, name, code
):
    target = tmp_path / ("vmxprobe.prom" if fmt == "prometheus" else "vmxprobe")
    names = _capture_temp_names(monkeypatch, target)
    result = CliRunner().invoke(cli, ["scan", "--fixture", name, "--format", fmt, "-o", str(target)])
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    [tmp] = names
    assert tmp.startswith(".")  # nfd-worker skips dot-files
    assert not tmp.endswith(".prom")  # the textfile collector reads *.prom only
    assert os.listdir(tmp_path) == [target.name]
    text = target.read_text()
    if fmt == "prometheus":
        parse_prom(text)
    else:
        assert text.splitlines()[1].startswith("# +expiry-time=")
    assert oct(target.stat().st_mode & 0o777) == "0o644"  # node_exporter runs as another user


def test_scan_to_stdout_and_notes_about_names_consumers_ignore(tmp_path):
    r = CliRunner().invoke(cli, ["scan", "--fixture", "intel-2s-ready", "--format", "prometheus"])
    assert r.exit_code == 0 and r.stdout.startswith("# HELP vmxprobe_info")
    r = CliRunner().invoke(
        cli,
        [
            "scan",
            "--fixture",
            "intel-2s-ready",
            "--format",
            "prometheus",
            "-o",
            str(tmp_path / "metrics.txt"),
        ],
    )
    assert r.exit_code == 0
    assert "reads only *.prom" in r.stderr
    r = CliRunner().invoke(
        cli, ["scan", "--fixture", "intel-2s-ready", "--format", "nfd", "-o", str(tmp_path / ".hidden")]
    )
    assert "ignores features.d files whose names start with '.'" in r.stderr


def test_scan_nfd_with_a_bad_expiry_is_a_usage_error():
    r = CliRunner().invoke(
        cli, ["scan", "--fixture", "intel-2s-ready", "--format", "nfd"], env={"VMXPROBE_NFD_EXPIRY": "soon"}
    )
    assert r.exit_code == 2
    assert "VMXPROBE_NFD_EXPIRY" in r.stderr


# --- node_exporter -----------------------------------------------------------------------

NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


@pytest.fixture
def node_exporter(tmp_path):
    """Debian's prometheus-node-exporter on 127.0.0.1, textfile collector only."""
    if NODE_EXPORTER is None:
        tooling.missing("prometheus-node-exporter", "scripts/ci-fleet-setup.sh installs it")
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    for _attempt in range(3):
        port = _free_port()
        proc = subprocess.Popen(
            [
                NODE_EXPORTER,
                f"--web.listen-address=127.0.0.1:{port}",
                "--collector.disable-defaults",
                "--collector.textfile",
                f"--collector.textfile.directory={textdir}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                _scrape(port)
                break
            except OSError:
                time.sleep(0.1)
        if proc.poll() is None:
            break
        proc.stderr.read()  # the port was taken between choosing and binding: try another
    else:
        pytest.fail("node_exporter did not start")
    try:
        yield textdir, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_node_exporter_serves_the_scan_textfile(node_exporter):
    textdir, port = node_exporter
    target = textdir / "vmxprobe.prom"
    r = CliRunner().invoke(
        cli, ["scan", "--fixture", "intel-fw-locked-off", "--format", "prometheus", "-o", str(target)]
    )
    assert r.exit_code == 1, r.output
    body = _scrape(port)
    assert re.search(r"^node_textfile_scrape_error 0$", body, re.M), body[-2000:]
    assert re.search(r"^vmxprobe_ready 0$", body, re.M)
    assert re.search(r"^vmxprobe_determined 1$", body, re.M)
    assert re.search(
        r'^vmxprobe_info\{schema="1",source="fixture",source_name="intel-fw-locked-off",'
        r'version="0.1.0"\} 1$',
        body,
        re.M,
    )
    assert re.search(r'^vmxprobe_feature_control_info\{state="disabled_locked"\} 1$', body, re.M)
    assert re.search(r"^vmxprobe_last_scan_timestamp_seconds \d", body, re.M)
    assert re.search(r'^node_textfile_mtime_seconds\{file="[^"]*vmxprobe\.prom"\}', body, re.M)
    # A rescan replaces the file in place; the next scrape serves the new values.
    r = CliRunner().invoke(
        cli, ["scan", "--fixture", "intel-2s-ready", "--format", "prometheus", "-o", str(target)]
    )
    assert r.exit_code == 0
    body = _scrape(port)
    assert re.search(r"^vmxprobe_ready 1$", body, re.M)
    assert re.search(r"^node_textfile_scrape_error 0$", body, re.M)


def test_node_exporter_check_is_meaningful_a_broken_file_sets_scrape_error(node_exporter):
    textdir, port = node_exporter
    (textdir / "broken.prom").write_text("vmxprobe_ready{ 1\n")
    assert re.search(r"^node_textfile_scrape_error 1$", _scrape(port), re.M)


# --- promtool ----------------------------------------------------------------------------

# Prometheus's own checker: `promtool check metrics` parses the text format as the
# server does and lints it (HELP on every family, units and suffixes by its
# conventions). Exit 0 clean, 1 unparseable, 3 lint problems.


@pytest.fixture(scope="module")
def promtool():
    return tooling.find("promtool", "Debian package prometheus; scripts/ci-lint-setup.sh installs it")


def promtool_check(promtool, text):
    return subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "name,code",
    [
        ("intel-2s-ready", 0),  # ready
        ("intel-fw-locked-off", 1),  # not ready: firmware locked VMX off
        ("kvm-guest-no-msr-driver", 1),  # recorded on a real guest: no VMX in CPUID
        ("ul-x86_64-dell_e4310", 3),  # a topology dump without registers: undetermined
    ],
)
def test_scan_textfile_passes_promtool_check_metrics(promtool, name, code):
    scan = subprocess.run(
        [sys.executable, "-m", "vmxprobe", "scan", "--fixture", name, "--format", "prometheus"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=REPO),
        timeout=120,
    )
    assert scan.returncode == code, scan.stderr
    r = promtool_check(promtool, scan.stdout)
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


@pytest.mark.parametrize("name", FIXTURES)
def test_prometheus_export_passes_promtool_for_every_fixture(promtool, name):
    r = promtool_check(promtool, prometheus.render_prometheus(report(name)))
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


def test_promtool_check_is_meaningful(promtool):
    text = prometheus.render_prometheus(report())
    no_help = re.sub(r"^# HELP vmxprobe_ready .*\n", "", text, flags=re.M)
    assert no_help != text
    r = promtool_check(promtool, no_help)
    assert r.returncode == 3 and "vmxprobe_ready no help text" in r.stdout + r.stderr
    r = promtool_check(promtool, text.replace("vmxprobe_ready 1", "vmxprobe_ready{ 1"))
    assert r.returncode == 1
