"""vmxprobe.render.prometheus: the text exposition format, read strictly, by
promtool check metrics, and as Debian's prometheus-node-exporter serves it."""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone

import pytest

from tests import REPO, cli_runner, tooling
from tests.render.exports import FIXTURES, parse_prom, report, undetermined, with_host
from vmxprobe.cli import cli
from vmxprobe.render import prometheus


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
        # AMD: x86_svm_init() and kvm_amd decide vmxprobe_ready.
        (lambda: report("amd-host"), 1, 1),
        (lambda: report("amd-svm-locked-off"), 0, 1),
        (lambda: report("amd-sev-guest"), 0, 1),
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


def test_amd_verdict_and_vm_cr_series():
    fams = parse_prom(prometheus.render_prometheus(report("amd-svm-locked-off")))
    assert fams["vmxprobe_svm_verdict_info"] == [
        ('{x86_svm_init="EOPNOTSUPP",kvm_amd="EOPNOTSUPP",virt="svm"}', 1)
    ]
    assert fams["vmxprobe_vm_cr_svmdis"] == [("", 1)] and fams["vmxprobe_vm_cr_locked"] == [("", 1)]
    assert fams["vmxprobe_vm_cr_info"] == [('{state="disabled_locked"}', 1)]
    assert fams["vmxprobe_root_vmcs_pages"] == [("", 0)]  # SVM has no root VMCS
    ready = parse_prom(prometheus.render_prometheus(report("amd-host")))
    assert ready["vmxprobe_svm_verdict_info"][0][0] == '{x86_svm_init="ok",kvm_amd="ok",virt="svm"}'
    assert ready["vmxprobe_vm_cr_svmdis"] == [("", 0)]
    # An Intel host: the kernel's answer for SVM, and no VM_CR series at all.
    intel = parse_prom(prometheus.render_prometheus(report("intel-2s-ready")))
    assert intel["vmxprobe_svm_verdict_info"][0][0] == (
        '{x86_svm_init="EOPNOTSUPP",kvm_amd="EOPNOTSUPP",virt="vmx"}'
    )
    assert not {"vmxprobe_vm_cr_svmdis", "vmxprobe_vm_cr_locked", "vmxprobe_vm_cr_info"} & set(intel)


def test_label_values_are_escaped():
    r = with_host(report(), model_name='Xeon "quoted" \\ back\nslash')
    fams = parse_prom(prometheus.render_prometheus(r))
    assert r'model_name="Xeon \"quoted\" \\ back\nslash"' in fams["vmxprobe_cpu_info"][0][0]


def test_control_characters_in_label_values_are_escaped_visibly():
    r = with_host(report(), model_name="Xeon\x1b[2J\x07\u2028\x9b")
    text = prometheus.render_prometheus(r)
    # the escapes of vmxprobe.printable, their backslashes doubled by the format's own
    assert r'model_name="Xeon\\x1b[2J\\x07\\u2028\\x9b"' in text
    assert not any(c in text for c in "\x1b\x07\u2028\x9b")


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
    r = cli_runner().invoke(
        cli, ["scan", "--fixture", "intel-fw-locked-off", "--format", "prometheus", "-o", str(target)]
    )
    assert r.exit_code == 1, r.stderr
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
    r = cli_runner().invoke(
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
        ("amd-host", 0),  # AMD, SVM enabled: kvm_amd would load
        ("amd-svm-locked-off", 1),  # AMD, firmware disabled and locked SVM
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
