"""Tests for deploy/: the Ansible playbook (run against localhost), the systemd units
(systemd-analyze verify), and the Kubernetes DaemonSet for NFD (structure)."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from vmxprobe.durations import parse_duration
from vmxprobe.render.nfd import NFD_EXPIRY_ENV

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(REPO, "deploy")
PLAYBOOK = os.path.join(DEPLOY, "ansible", "vmxprobe-scan.yml")
SERVICE = os.path.join(DEPLOY, "systemd", "vmxprobe-textfile.service")
TIMER = os.path.join(DEPLOY, "systemd", "vmxprobe-textfile.timer")
DAEMONSET = os.path.join(DEPLOY, "kubernetes", "vmxprobe-nfd-daemonset.yaml")

# vmxprobe as this test session runs it, whether or not it is installed as a script.
VMXPROBE = [sys.executable, "-m", "vmxprobe"]


def vmxprobe(*args, **kw):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([*VMXPROBE, *map(str, args)], capture_output=True, text=True, env=env, **kw)


# --- Ansible ------------------------------------------------------------------------------

ANSIBLE = shutil.which("ansible-playbook")
needs_ansible = pytest.mark.skipif(ANSIBLE is None, reason="ansible-playbook is not installed "
                                   "(scripts/ci-fleet-setup.sh installs ansible-core)")


def ansible(tmp_path, *args):
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="0",
               ANSIBLE_HOME=str(tmp_path / "ansible-home"), ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
               ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-remote"), ANSIBLE_HOST_KEY_CHECKING="0",
               ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_LOAD_CALLBACK_PLUGINS="0")
    env.pop("ANSIBLE_CONFIG", None)
    return subprocess.run([ANSIBLE, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=str(tmp_path), timeout=300)


def extra_vars(tmp_path, fetch_dir, **more):
    path = tmp_path / "vars.json"
    path.write_text(json.dumps({
        "vmxprobe_command": VMXPROBE, "vmxprobe_controller_command": VMXPROBE,
        "vmxprobe_become": False, "vmxprobe_fetch_dir": str(fetch_dir),
        "vmxprobe_environment": {"PYTHONPATH": REPO}, **more}))
    return f"@{path}"


@needs_ansible
def test_playbook_syntax(tmp_path):
    r = ansible(tmp_path, "--syntax-check", "-i", "localhost,", PLAYBOOK)
    assert r.returncode == 0, r.stdout + r.stderr


def _temp_reports():
    folder = os.environ.get("TMPDIR", "/tmp")
    return {n for n in os.listdir(folder) if n.startswith("vmxprobe.") and n.endswith(".json")}


@needs_ansible
def test_playbook_scans_localhost_with_a_fixture_and_fleet_summarises_it(tmp_path):
    reports = tmp_path / "reports"
    before = _temp_reports()
    r = ansible(tmp_path, "-i", "localhost,", "-c", "local",
                "-e", f"ansible_python_interpreter={sys.executable}",
                "-e", extra_vars(tmp_path, reports), "-e", "vmxprobe_fixture=intel-fw-locked-off", PLAYBOOK)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"localhost\s+: ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0", r.stdout), r.stdout
    assert os.listdir(reports) == ["localhost.json"]
    s = vmxprobe("fleet", "--format", "json", reports)
    assert s.returncode == 1, s.stderr            # the fixture is not ready: a result, not a failure
    summary = json.loads(s.stdout)
    assert summary["readiness"] == {"ready": 0, "not_ready": 1, "undetermined": 0}
    assert summary["not_ready"]["hosts"][0]["host"] == "localhost"
    assert summary["fixtures"]["hosts"][0]["fixture"] == "intel-fw-locked-off"
    assert summary["reports"]["skipped"] == 0
    assert _temp_reports() - before == set()         # the remote temp file was removed


@needs_ansible
def test_playbook_per_host_fixtures_from_the_inventory_and_the_summary_play(tmp_path):
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        "web01 ansible_connection=local vmxprobe_fixture=intel-2s-ready\n"
        "web02 ansible_connection=local vmxprobe_fixture=intel-fw-locked-off\n"
        "kvm01 ansible_connection=local vmxprobe_fixture=kvm-nested-guest\n"
        f"[all:vars]\nansible_python_interpreter={sys.executable}\n")
    reports = tmp_path / "reports"
    (reports).mkdir()
    (reports / "web01.json").write_text("stale content from an earlier run")
    r = ansible(tmp_path, "-i", inventory, "-e", extra_vars(tmp_path, reports, vmxprobe_summary=True), PLAYBOOK)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(os.listdir(reports)) == ["kvm01.json", "web01.json", "web02.json"]
    # The summary play ran `vmxprobe fleet` on what was fetched.
    assert "Readiness: 2 ready (66.7%), 1 not ready (33.3%)" in r.stdout
    assert "web02: CPU 0: IA32_FEATURE_CONTROL" in r.stdout
    s = vmxprobe("fleet", "--format", "json", reports)
    summary = json.loads(s.stdout)
    assert summary["reports"] == dict(summary["reports"], files=3, read=3, skipped=0)
    assert summary["by_hypervisor"] == {"none": 2, "KVM": 1}


@needs_ansible
def test_playbook_fails_the_host_when_the_scan_cannot_run(tmp_path):
    reports = tmp_path / "reports"
    r = ansible(tmp_path, "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
                "-e", extra_vars(tmp_path, reports), "-e", "vmxprobe_fixture=no-such-fixture", PLAYBOOK)
    assert r.returncode != 0
    assert "failed=1" in r.stdout
    assert not reports.exists() or os.listdir(reports) == []


# --- systemd ------------------------------------------------------------------------------

def unit(path):
    """{section: {key: [values]}} of a unit file (enough for these two)."""
    sections, current = {}, None
    for raw in open(path):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def test_service_runs_the_prometheus_export_into_debians_textfile_dir():
    s = unit(SERVICE)["Service"]
    [cmd] = s["ExecStart"]
    argv = shlex.split(cmd)
    assert argv[1:4] == ["scan", "--format", "prometheus"]
    out = argv[argv.index("-o") + 1]
    assert out == "/var/lib/prometheus/node-exporter/vmxprobe.prom"
    assert s["ReadWritePaths"] == [os.path.dirname(out)]
    assert s["Type"] == ["oneshot"]
    assert set(s["SuccessExitStatus"][0].split()) == {"1", "3"}   # verdicts, not failures
    assert "CAP_SYS_RAWIO" in s["CapabilityBoundingSet"][0]
    assert "char-cpu/msr r" in s["DeviceAllow"]
    t = unit(TIMER)
    assert t["Timer"]["Unit"] == ["vmxprobe-textfile.service"]
    assert t["Timer"]["OnUnitActiveSec"] and t["Timer"]["OnBootSec"]
    assert t["Install"]["WantedBy"] == ["timers.target"]


def test_service_command_line_works(tmp_path):
    """ExecStart as written, pointed at a fixture and a temp folder, makes a valid file."""
    argv = shlex.split(unit(SERVICE)["Service"]["ExecStart"][0])
    argv[argv.index("-o") + 1] = str(tmp_path / "vmxprobe.prom")
    r = vmxprobe(*argv[1:], "--fixture", "intel-2s-ready")
    assert r.returncode == 0, r.stderr
    assert "vmxprobe_ready 1\n" in (tmp_path / "vmxprobe.prom").read_text()


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (Debian package systemd)")
def test_units_pass_systemd_analyze_verify(tmp_path):
    # verify checks that ExecStart's program exists: point it at this session's vmxprobe.
    (tmp_path / "vmxprobe-textfile.service").write_text(
        open(SERVICE).read().replace("/usr/local/bin/vmxprobe", " ".join(map(shlex.quote, VMXPROBE))))
    shutil.copy(TIMER, tmp_path / "vmxprobe-textfile.timer")
    r = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no",
                        "vmxprobe-textfile.service", "vmxprobe-textfile.timer"],
                       capture_output=True, text=True, cwd=str(tmp_path), timeout=120)
    ours = [ln for ln in (r.stdout + r.stderr).splitlines() if "vmxprobe" in ln]
    assert r.returncode == 0 and ours == [], r.stdout + r.stderr


# --- Kubernetes ---------------------------------------------------------------------------

try:
    import yaml
except ImportError:
    yaml = None

FEATURES_D = "/etc/kubernetes/node-feature-discovery/features.d"


@pytest.fixture(scope="module")
def daemonset():
    if yaml is None:
        pytest.skip("PyYAML is not installed (pip install pyyaml)")
    with open(DAEMONSET) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    assert len(docs) == 1
    return docs[0]


def test_daemonset_shape(daemonset):
    d = daemonset
    assert d["apiVersion"] == "apps/v1" and d["kind"] == "DaemonSet"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", d["metadata"]["name"])
    selector = d["spec"]["selector"]["matchLabels"]
    template_labels = d["spec"]["template"]["metadata"]["labels"]
    assert selector and selector.items() <= template_labels.items()
    spec = d["spec"]["template"]["spec"]
    assert spec["nodeSelector"]["kubernetes.io/arch"] == "amd64"
    assert {"operator": "Exists"} in spec["tolerations"]
    [c] = spec["containers"]
    assert c["securityContext"]["privileged"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["resources"]["limits"]["memory"]


def test_daemonset_writes_the_nfd_export_into_the_hostpath_nfd_reads(daemonset):
    spec = daemonset["spec"]["template"]["spec"]
    [c] = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert volumes["features-d"]["hostPath"]["path"] == FEATURES_D
    assert mounts["features-d"]["mountPath"] == FEATURES_D and not mounts["features-d"].get("readOnly")
    assert volumes["dev-cpu"]["hostPath"]["path"] == "/dev/cpu"
    assert mounts["dev-cpu"]["mountPath"] == "/dev/cpu"
    script = c["args"][0]
    m = re.search(r"vmxprobe scan --format nfd -o (\S+)", script)
    assert m, script
    out = m.group(1)
    assert os.path.dirname(out) == FEATURES_D
    assert not os.path.basename(out).startswith(".")   # nfd-worker skips dot-files
    env = {e["name"]: e["value"] for e in c["env"]}
    expiry = parse_duration(env[NFD_EXPIRY_ENV])
    interval = int(env["VMXPROBE_INTERVAL_SECONDS"])
    assert expiry >= 2 * interval                        # one failed rescan does not drop labels


def test_daemonset_script_is_valid_sh(daemonset):
    [c] = daemonset["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["/bin/sh", "-c"]
    r = subprocess.run(["sh", "-n", "-c", c["args"][0]], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "trap" in c["args"][0]                        # PID 1 must stop on SIGTERM
