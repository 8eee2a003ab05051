import json
import os
import socket
import subprocess
import sys
from importlib import resources

import jsonschema
import pytest

from tests import cli_runner, hostgen
from tests.render.exports import parse_prom
from vmxprobe import files as output
from vmxprobe.cli import cli
from vmxprobe.host import fixture
from vmxprobe.kernel import root_vmcs

SCHEMA = json.loads((resources.files("vmxprobe.schema") / "report-v1.json").read_text())
EXPECTED_EXIT = {
    "intel-2s-ready": 0,
    "intel-fw-locked-off": 1,
    "kvm-nested-guest": 0,
    "kvm-guest-no-nested": 1,
    "amd-host": 0,
    "amd-svm-locked-off": 1,
    "amd-sev-guest": 1,
    "kvm-guest-no-msr-driver": 1,
}


def vmxprobe(*args, env=None):
    """The installed command, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "vmxprobe", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def invoke(*args, **kw):
    return cli_runner().invoke(cli, list(args), catch_exceptions=False, **kw)


@pytest.mark.parametrize("name", fixture.bundled_names())
def test_every_bundled_fixture_scans_to_a_valid_report(name):
    r = invoke("scan", "--fixture", name, "--format", "json")
    report = json.loads(r.stdout)
    jsonschema.validate(report, SCHEMA)
    assert report["source"] == {
        "kind": "fixture",
        "name": name,
        "origin": fixture.load(name).provenance["origin"],
        "description": fixture.load(name).description,
    }
    # One row per possible CPU; a root VMCS page for each where the plan applies (VMX).
    assert report["plan"]["pages"] == (len(report["per_cpu"]) if report["plan"]["applies"] else 0)
    assert report["plan"]["applies"] is (report["verdict"]["virt"] == "vmx")
    if name in EXPECTED_EXIT:
        assert r.exit_code == EXPECTED_EXIT[name]
    else:
        assert r.exit_code in (0, 1, 3)


def test_raw_values_are_hex_strings_not_numbers():
    report = json.loads(invoke("scan", "--fixture", "intel-2s-ready", "--format", "json").stdout)
    assert report["vmx_basic"]["raw"] == "0x00da040000000012"
    assert report["per_cpu"][5]["msr"] == {"0x3a": "0x0000000000000005", "0x480": "0x00da040000000012"}


def test_schema_rejects_a_broken_report():
    report = json.loads(invoke("scan", "--fixture", "intel-2s-ready", "--format", "json").stdout)
    report["vmx_basic"]["raw"] = 0x00DA040000000012
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(report, SCHEMA)


def test_text_report_starts_with_the_verdict():
    r = vmxprobe("scan", "--fixture", "intel-fw-locked-off")
    assert r.returncode == 1
    first, _, _, kernel = r.stdout.splitlines()[:4]
    # The fixture's kernel is 6.12: kvm_intel allocates the root VMCS pages there, and
    # x86_vmx_init() (arch/x86/virt/hw.c) is what 7.1 would do at boot.
    assert first == (
        "NOT READY: kvm_intel would fail (-EOPNOTSUPP); on 7.1+ x86_vmx_init() returns -EOPNOTSUPP"
    )
    assert kernel.startswith(
        "Kernel: Linux 6.12 rules (release 6.12.0-composed); root VMCS pages by kvm_intel's"
    )
    assert "\x1b[" not in r.stdout  # not a terminal: no colour
    assert "node 0: 8 page(s) for CPU(s) 0-7" in r.stdout


@pytest.mark.parametrize(
    "name,code,first,kernel",
    [
        (
            "amd-host",
            0,
            "READY: kvm_amd would load (SVM)",
            "Kernel: Linux 6.1 rules (release 6.1.0-composed); SVM: kvm_amd's checks, no x86_svm_init(), "
            "no root VMCS",
        ),
        (
            "amd-svm-locked-off",
            1,
            "NOT READY: kvm_amd would fail (-EOPNOTSUPP) (SVM); on 7.1+ x86_svm_init() returns -EOPNOTSUPP",
            "Kernel: Linux 6.12 rules (release 6.12.0-composed); SVM: kvm_amd's checks, no x86_svm_init(), "
            "no root VMCS",
        ),
    ],
)
def test_amd_text_report_starts_with_the_svm_verdict(name, code, first, kernel):
    r = vmxprobe("scan", "--fixture", name)
    assert r.returncode == code and r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[0] == first and lines[3] == kernel
    # The root VMCS plan is Intel's: one line says so, and no page is listed.
    plan = [line for line in lines if line.startswith("Plan:")]
    assert plan == ["Plan:   not applicable: " + root_vmcs.NO_ROOT_VMCS_SVM]
    assert "page(s)" not in r.stdout and "materialised" not in r.stdout


def test_amd_on_7_1_names_x86_svm_init_in_the_headline(fixture_file):
    doc = json.loads(fixture.resolve("amd-svm-locked-off").read_text())
    doc["files"]["proc/sys/kernel/osrelease"] = "7.1.3\n"
    r = vmxprobe("scan", "--fixture", fixture_file(doc))
    assert r.returncode == 1
    assert r.stdout.splitlines()[0] == "NOT READY: x86_svm_init() returns -EOPNOTSUPP (SVM)"


def test_version_and_module_entry():
    r = vmxprobe("--version")
    assert r.returncode == 0 and r.stdout.strip() == "vmxprobe, version 0.1.0"


def test_help_documents_exit_codes():
    r = vmxprobe("scan", "--help")
    for line in ("0  ready", "1  not ready", "2  usage error", "3  could not determine"):
        assert line in r.stdout


@pytest.mark.parametrize(
    "args,words",
    [
        (["scan", "--fixture", "nope"], "no fixture file or bundled fixture named 'nope'"),
        (["scan", "--root", "/nonexistent"], "--root /nonexistent: not a directory"),
        (["scan", "--root", "/", "--fixture", "amd-host"], "cannot be used together"),
        (["scan", "--format", "yaml"], "Invalid value for '--format'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, words):
    r = vmxprobe(*args)
    assert r.returncode == 2
    assert words in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_malformed_fixture_file_exit_2(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"format": "vmxprobe-fixture", "version": 9}')
    r = vmxprobe("scan", "--fixture", str(p))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "$.version: must be the integer 1" in r.stderr
    assert "upgrade vmxprobe or re-record the fixture" in r.stderr


def test_output_file_is_written_atomically(tmp_path):
    out = tmp_path / "report.json"
    out.write_text("previous")
    r = vmxprobe("scan", "--fixture", "intel-2s-ready", "--format", "json", "-o", str(out))
    assert r.returncode == 0 and r.stdout == ""
    assert json.loads(out.read_text())["verdict"]["ready"] is True
    assert sorted(os.listdir(tmp_path)) == ["report.json"]  # no temp file left


def test_output_symlink_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "report.json").symlink_to(victim)
    r = vmxprobe("scan", "--fixture", "amd-svm-locked-off", "-o", str(tmp_path / "report.json"))
    assert r.returncode == 1
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "report.json").is_symlink()


def test_output_to_a_directory_or_missing_folder_is_refused(tmp_path):
    r = vmxprobe("scan", "--fixture", "amd-host", "-o", str(tmp_path))
    assert r.returncode == 2 and "not a regular file" in r.stderr
    r = vmxprobe("scan", "--fixture", "amd-host", "-o", str(tmp_path / "no" / "x.json"))
    assert r.returncode == 2 and "cannot create a file" in r.stderr


def test_fixtures_command_lists_bundled_with_descriptions():
    r = vmxprobe("fixtures")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert len(lines) == len(fixture.bundled_names())
    assert any(ln.startswith("intel-2s-ready") and "composed" in ln and "two-socket" in ln for ln in lines)


def test_record_then_replay(tmp_path, tree):
    root = tree(hostgen.synthetic(8, 2))
    out = tmp_path / "rec.json"
    r = vmxprobe("record", "--root", root, "-o", str(out), "--description", "test host")
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["provenance"]["origin"] == "recorded" and doc["provenance"]["hostname"] is None
    assert doc["name"] == "rec" and doc["description"] == "test host"
    live = json.loads(vmxprobe("scan", "--root", root, "--format", "json").stdout)
    replay = json.loads(vmxprobe("scan", "--fixture", str(out), "--format", "json").stdout)
    for key in ("host", "cpus", "vmx_basic", "feature_control", "per_cpu", "verdict"):
        assert live[key] == replay[key], key


def test_record_refuses_a_name_or_description_a_fixture_could_not_hold(tmp_path, tree):
    root = tree(hostgen.synthetic(2, 1))
    for option in ("--name", "--description"):
        r = vmxprobe("record", "--root", root, option, "host\x1b[2J")
        assert r.returncode == 2 and f"{option}: control characters" in r.stderr, r.stderr
    # a name taken from an output file name is escaped instead, and the fixture loads
    out = tmp_path / "rec\tone.json"
    assert vmxprobe("record", "--root", root, "-o", str(out)).returncode == 0
    assert json.loads(out.read_text())["name"] == "rec\\tone"
    assert vmxprobe("scan", "--fixture", str(out)).returncode == 0


def test_record_hostname_only_when_asked(tmp_path, tree):
    root = tree(hostgen.synthetic(2, 1))
    r = vmxprobe("record", "--root", root, "--hostname")
    # The name the C library's gethostname() gives (the record uses uname()'s nodename)
    assert json.loads(r.stdout)["provenance"]["hostname"] == socket.gethostname()


def test_record_says_what_was_absent(tmp_path):
    (tmp_path / "sys/devices/system/cpu").mkdir(parents=True)
    (tmp_path / "sys/devices/system/cpu/online").write_text("0-1\n")
    r = vmxprobe("record", "--root", str(tmp_path))
    assert r.returncode == 0
    assert "absent on this host:" in r.stderr and "/dev/cpu/N/msr" in r.stderr
    assert "/sys/devices/system/cpu/possible" in r.stderr


def test_cpuid_offers_vmx_but_no_msr_driver_exits_3(tree):
    root = tree(hostgen.synthetic(4, 1))
    for cpu in range(4):
        os.unlink(os.path.join(root, "dev/cpu", str(cpu), "msr"))
    r = vmxprobe("scan", "--root", root)
    assert r.returncode == 3
    assert r.stdout.startswith("UNKNOWN")
    err = r.stderr.strip()
    assert err.count("\n") == 0 and "modprobe msr" in err and "Traceback" not in err


def test_internal_errors_are_one_line(monkeypatch):
    from vmxprobe import cli as c

    monkeypatch.setattr("vmxprobe.pipeline.run", lambda *a, **k: 1 / 0)
    monkeypatch.setattr(sys, "argv", ["vmxprobe", "scan", "--fixture", "amd-host"])
    with pytest.raises(SystemExit) as e:
        c.main()
    assert e.value.code == 70


def test_this_machine_scans_without_a_traceback():
    """The live default root: whatever this machine is, a clear verdict or a clear cause."""
    r = vmxprobe("scan", "--format", "json")
    assert "Traceback" not in r.stderr
    report = json.loads(r.stdout)
    jsonschema.validate(report, SCHEMA)
    assert report["source"]["kind"] == "live" and report["plan"]["placement"] in ("bound", "unbound")
    if report["plan"]["placement"] == "bound" and report["plan"]["applies"]:
        # This machine's own kernel placed every page on the node the plan names.
        for node in report["plan"]["verified"]["placement"]["nodes"]:
            assert node["verified_on_node"] == node["placed"]
        assert (
            sum(n["placed"] for n in report["plan"]["verified"]["placement"]["nodes"])
            == report["plan"]["pages"]
        )
    assert r.returncode == {True: 0}.get(
        report["verdict"]["ready"], 1 if report["verdict"]["determined"] else 3
    )
    no_msr = not os.path.exists("/dev/cpu/0/msr")
    cpuid_bit = "cpuid_svm" if report["verdict"]["virt"] == "svm" else "cpuid_vmx"
    if os.path.exists("/dev/cpu/0/cpuid") and no_msr and report["per_cpu"][0].get(cpuid_bit) is False:
        # A guest whose CPUID hides VMX (or, on AMD, SVM): settled by CPUID alone, and
        # the missing msr driver is still mentioned.
        assert r.returncode == 1
        assert any("modprobe msr" in x for x in report["verdict"]["reasons"])


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
        ("nfd", "amd-host", 0),
        ("nfd", "amd-svm-locked-off", 1),
    ],
)
def test_scan_writes_the_export_atomically_with_a_temp_name_consumers_skip(
    tmp_path, monkeypatch, fmt, name, code
):
    target = tmp_path / ("vmxprobe.prom" if fmt == "prometheus" else "vmxprobe")
    names = _capture_temp_names(monkeypatch, target)
    result = cli_runner().invoke(cli, ["scan", "--fixture", name, "--format", fmt, "-o", str(target)])
    assert result.exit_code == code, result.stderr
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
    r = cli_runner().invoke(cli, ["scan", "--fixture", "intel-2s-ready", "--format", "prometheus"])
    assert r.exit_code == 0 and r.stdout.startswith("# HELP vmxprobe_info")
    r = cli_runner().invoke(
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
    r = cli_runner().invoke(
        cli, ["scan", "--fixture", "intel-2s-ready", "--format", "nfd", "-o", str(tmp_path / ".hidden")]
    )
    assert "ignores features.d files whose names start with '.'" in r.stderr


def test_scan_nfd_with_a_bad_expiry_is_a_usage_error():
    r = cli_runner().invoke(
        cli, ["scan", "--fixture", "intel-2s-ready", "--format", "nfd"], env={"VMXPROBE_NFD_EXPIRY": "soon"}
    )
    assert r.exit_code == 2
    assert "VMXPROBE_NFD_EXPIRY" in r.stderr


def _tboot_tree(tree, tmp_path, debugfs=None, fc=0x3):
    """Every CPU's IA32_FEATURE_CONTROL locked with VMX inside SMX only (0x3), or as given, and
    boot_params.tboot_addr (offset 0x58, arch/x86/include/uapi/asm/bootparam.h) pointing at
    a shared page: a tboot launch that the kernel may still have refused."""
    root = tree(hostgen.synthetic(4, 1, feat_ctl=fc))
    data = bytearray(4096)
    data[0x58:0x60] = (0x8A8A0000).to_bytes(8, "little")
    with open(os.path.join(root, "sys/kernel/boot_params/data"), "wb") as f:
        f.write(data)
    if debugfs is not None:
        x86 = os.path.join(root, "sys/kernel/debug/x86")
        os.makedirs(x86)
        for name in debugfs:
            open(os.path.join(x86, name), "wb").close()
    return root


OFF, ON = "x86_vmx_init EOPNOTSUPP, kvm_intel EOPNOTSUPP", "x86_vmx_init ok, kvm_intel ok"


@pytest.mark.parametrize("fc,plain,under", [(0x3, OFF, ON), (0x5, ON, OFF)])
def test_tboot_unknown_gives_a_conditional_verdict_exit_3(tree, tmp_path, fc, plain, under):
    # arch/x86/kernel/cpu/feat_ctl.c init_ia32_feat_ctl(): under tboot bit 1 decides, else
    # bit 2; arch/x86/kernel/tboot.c tboot_late_init() makes x86/tboot_log only when
    # tboot_enabled(). With debugfs not mounted nothing settles it: both outcomes, exit 3.
    root = _tboot_tree(tree, tmp_path, fc=fc)
    r = vmxprobe("scan", "--root", root)
    assert r.returncode == 3
    assert r.stdout.startswith("UNKNOWN: the outcome depends on whether tboot launched the kernel")
    assert f"without tboot (bit 2 decides): {plain}" in r.stdout
    assert f"under tboot (bit 1 decides): {under}" in r.stdout
    err = r.stderr.strip()
    assert err.count("\n") == 0 and "mount -t debugfs none /sys/kernel/debug" in err
    report = json.loads(vmxprobe("scan", "--root", root, "--format", "json").stdout)
    assert report["verdict"]["conditional"] == [
        f"without tboot (bit 2 decides): {plain}",
        f"under tboot (bit 1 decides): {under}",
    ]
    assert report["verdict"]["tboot"]["launched"] is None
    assert "0x8a8a0000" in report["verdict"]["tboot"]["evidence"]


@pytest.mark.parametrize("debugfs,code,head", [(["tboot_log"], 0, "READY"), ([], 1, "NOT READY")])
def test_tboot_settled_by_debugfs(tree, tmp_path, debugfs, code, head):
    root = _tboot_tree(tree, tmp_path, debugfs)
    r = vmxprobe("scan", "--root", root, "--format", "json")
    report = json.loads(r.stdout)
    assert r.returncode == code
    assert report["verdict"]["conditional"] == []
    assert report["verdict"]["tboot"]["launched"] is bool(debugfs)
    assert vmxprobe("scan", "--root", root).stdout.startswith(head)
