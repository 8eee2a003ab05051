"""Hostile input, command by command (docs/faults.md, "What each hostile input gets"):
each case runs vmxprobe in a child process on input made to break it, and checks the
documented exit code, the one line that says why, and that every byte written is valid
UTF-8 with no raw control character (tests/faults/hostile.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from tests import hostgen
from tests.faults.hostile import (
    CASE_TESTS,
    CASES,
    base_fixture,
    case,
    document_cases,
    run,
    sane,
    write_fixture,
)
from tests.faults.matrix import NO_DAC, is_root, not_ours
from tests.fleet.reports import live, write

CPU = "sys/devices/system/cpu"
NODE = "sys/devices/system/node"

# Escape sequences a terminal obeys: colour, clear screen, set the window title, a bare
# carriage return that overwrites the line, a C1 CSI, a Unicode line separator.
ESCAPES = "\x1b[31mRED\x1b[0m \x1b[2J\x1b]0;owned\x07 \rOVER \x9b2J \u2028NEXT"


def _fixture_with_escapes(tmp_path) -> str:
    doc = base_fixture()
    doc["files"]["proc/cpuinfo"] = doc["files"]["proc/cpuinfo"].replace(
        "model name\t: synthetic", f"model name\t: Xeon {ESCAPES}"
    )
    doc["files"]["proc/sys/kernel/osrelease"] = f"6.1.0 {ESCAPES}\n"
    # The CPUID vendor string is 12 bytes of registers: a fixture can make it anything.
    doc["cpuid"]["0x00000000:0x0"][0]["value"] = ["0x00000016", "0x1b5b3332", "0x0a0d4a6d", "0x07075b1b"]
    return write_fixture(tmp_path, doc)


def _no_escape_reaches_the_output(text: str) -> None:
    assert "\\x1b[31mRED" in text or "\\\\x1b[31mRED" in text, text


# --- 3 and 6: fixture mount ----------------------------------------------------------------


def _fuse() -> None:
    if not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"):
        pytest.skip("no /dev/fuse or fusermount3 here (scripts/ci-fuse-setup.sh installs them)")


def _vmxprobe_mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln.split(" ")[4] for ln in f if " - fuse.vmxprobe " in ln]


def _servers(words: str) -> list[int]:
    """Processes whose command line holds `words`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if words.encode() in f.read() and int(pid) != os.getpid():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def _mounts_under(tops: tuple[str, ...]) -> list[str]:
    """vmxprobe mounts at or under these folders. Only these: other runs on the same
    machine mount and unmount their own while a case runs."""
    return [m for m in _vmxprobe_mounts() if any(m == t or m.startswith(t.rstrip("/") + "/") for t in tops)]


def _undo(tops: tuple[str, ...], keep: list[str]) -> None:
    """Whatever a failed run left mounted under `tops` (but `keep`, there before it) is
    unmounted, so that a failure here stays here."""
    for point in set(_mounts_under(tops)) - set(keep):
        subprocess.run(["fusermount3", "-u", "-z", point], capture_output=True, timeout=30)


@case("3a", 2)
def test_a_background_mount_that_fails_after_mounting_leaves_nothing_mounted(tmp_path):
    _fuse()
    mnt = str(tmp_path / "mnt")
    os.mkdir(mnt)
    try:
        with open("/dev/full", "wb") as full:
            r = run("fixture", "mount", "intel-2s-ready", mnt, "--background", stdout=full, timeout=90)
        _cannot_write(r, "No space left on device")
        assert mnt not in _vmxprobe_mounts()
        deadline = time.monotonic() + 10
        while _servers(mnt) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _servers(mnt) == []
    finally:
        _undo((mnt,), [])


@case("6a", 2)
@pytest.mark.parametrize("where", ["/proc/self", "/proc/{pid}", "/proc", "/sys/kernel", "/dev", "/dev/shm"])
@pytest.mark.parametrize("background", [True, False])
def test_a_mount_under_proc_sys_or_dev_is_refused(where, background):
    point = where.format(pid=os.getpid())
    refused = ("/proc", "/sys", "/dev")
    before = _mounts_under(refused)
    try:
        r = run(
            "fixture", "mount", "intel-2s-ready", point, *(["--background"] if background else []), timeout=60
        )
    except subprocess.TimeoutExpired:
        _undo(refused, before)
        for pid in _servers(point):
            os.kill(pid, signal.SIGKILL)
        pytest.fail(f"fixture mount {point} did not return within 60 s")
    finally:
        _undo(refused, before)
    sane(r, 2)
    top = "/" + os.path.realpath(point).split("/")[1]
    assert f"under {top}" in r.error and r.error.count("\n") == 1, r.error
    assert _mounts_under(refused) == before == []


# --- 7: the fixture schema -----------------------------------------------------------------


@case("7a", 2)
@pytest.mark.parametrize(
    "mutate, path",
    [
        (lambda d: d.update(comment="hand-made"), "$.comment: not a field here"),
        (lambda d: d["provenance"].update(recorded_at=1700000000), "$.provenance.recorded_at: must be"),
        (
            lambda d: d["msr"].update({"0x3a": [{"cpus": "0-3", "errno": "EWHATEVER"}]}),
            '$.msr["0x3a"][0].errno',
        ),
        (lambda d: d["files"].update({"": "x"}), '$.files[""]: must be a relative path'),
        (lambda d: d["files"].update({"proc/\x00cpuinfo": "x"}), '$.files["proc/\\x00cpuinfo"]'),
        (lambda d: d["files"].update({"proc/\x1b[2Jcpuinfo": "x"}), '$.files["proc/\\x1b[2Jcpuinfo"]'),
    ],
)
def test_a_fixture_the_schema_refuses_is_exit_2_naming_the_json_path(tmp_path, mutate, path):
    doc = base_fixture()
    mutate(doc)
    r = sane(run("scan", "--fixture", write_fixture(tmp_path, doc)), 2)
    assert r.error.startswith("vmxprobe: error: invalid fixture: ") and path in r.error, r.error
    assert r.error.count("\n") == 1


@case("7b", 0)
def test_every_bundled_fixture_and_an_emulated_one_load(tmp_path):
    r = sane(run("fixtures"), 0)
    assert "(unreadable" not in r.text and len(r.text.splitlines()) >= 40
    doc = base_fixture()
    doc["provenance"].update(
        origin="emulated",
        emulator="bochs",
        emulator_version="2.7",
        cpu_model="corei7_haswell_4770",
        kernel_outcome={"kvm_intel": "ok", "dev_kvm": True},
    )
    path = write_fixture(tmp_path, doc)
    r = sane(run("scan", "--fixture", path), 0)
    assert "Source: fixture synthetic-4cpu-2node, emulated" in r.text
    # its JSON report is valid to the report's schema, which fleet checks it against
    report = tmp_path / "web01.json"
    sane(run("scan", "--fixture", path, "--format", "json", "-o", str(report)), 0)
    assert json.loads(report.read_text())["source"]["origin"] == "emulated"
    summary = json.loads(run("fleet", str(report), "--format", "json").text)
    assert summary["invalid"]["count"] == 0 and summary["reports"]["read"] == 1, summary


# --- 8: control characters from host data never reach a terminal raw -------------------


@case("8a", 0)
@pytest.mark.parametrize("fmt", ["text", "json", "prometheus", "nfd"])
def test_escape_sequences_in_a_fixture_are_shown_escaped(tmp_path, fmt):
    fx = _fixture_with_escapes(tmp_path)
    r = sane(run("scan", "--fixture", fx, "--format", fmt), 0)
    if fmt == "text":
        _no_escape_reaches_the_output(r.text)
        assert "Xeon \\x1b[31mRED" in r.text and "kernel 6.1.0 \\x1b[31mRED" in r.text
    elif fmt == "prometheus":
        _no_escape_reaches_the_output(r.text)
        for line in r.text.splitlines():
            # a sample, a HELP or a TYPE line: a newline in a label cannot start a line
            assert line.startswith(("# HELP vmxprobe_", "# TYPE vmxprobe_", "vmxprobe_")), line
    elif fmt == "json":
        assert json.loads(r.text)["host"]["kernel"] == f"6.1.0 {ESCAPES}"


@case("8b", 0)
def test_escape_sequences_in_a_root_tree_are_shown_escaped(tmp_path):
    root = str(tmp_path / "root")
    doc = base_fixture()
    hostgen.write_tree(doc, root)
    with open(os.path.join(root, "proc/sys/kernel/osrelease"), "w") as f:
        f.write(f"6.1.0 {ESCAPES}\n")
    with open(os.path.join(root, "proc/cpuinfo"), "w") as f:
        f.write(doc["files"]["proc/cpuinfo"].replace("model name\t: synthetic", f"model name\t: {ESCAPES}"))
    for fmt in ("text", "prometheus"):
        r = sane(run("scan", "--root", root, "--format", fmt))
        _no_escape_reaches_the_output(r.text)
    out = tmp_path / "report.txt"
    sane(run("scan", "--root", root, "-o", str(out)))
    _no_escape_reaches_the_output(out.read_text(encoding="utf-8"))


@case("8c", 3)
def test_a_newline_in_a_report_name_cannot_start_a_line_of_fleet_output(tmp_path):
    d = tmp_path / "reports"
    d.mkdir()
    bad = live()
    bad["verdict"].update(
        ready=False, determined=False, x86_vmx_init=None, kvm_intel=None, undetermined=[f"cut {ESCAPES}"]
    )
    write(d, "web\nFAKE: ready.json", bad)
    write(d, "db01.json", live())
    r = sane(run("fleet", str(d)), 3)
    assert not any(line.startswith("FAKE") for line in r.text.splitlines()), r.text
    assert "web\\nFAKE: ready: cut \\x1b[31mRED" in r.text
    csv_out = sane(run("fleet", str(d), "--format", "csv"), 3).text
    assert "web\\nFAKE: ready" in csv_out and len(csv_out.splitlines()) == 3


@case("8d", 2)
def test_an_error_line_shows_a_hostile_argument_escaped(tmp_path):
    r = sane(run("scan", "--root", str(tmp_path / f"no{ESCAPES}")), 2)
    assert r.error.count("\n") == 1 and "no\\x1b[31mRED" in r.error


# --- 1: numbers past Python's int-string limit (4300 digits) ------------------------------

HUGE = "9" * 5000


@case("1a", 2)
@pytest.mark.parametrize(
    "where, path",
    [
        (("msr", "0x3a", 0, "cpus"), '$.msr["0x3a"][0].cpus'),
        (("msr", "0x480", 0, "cpus"), '$.msr["0x480"][0].cpus'),
    ],
)
def test_a_huge_number_in_a_fixture_group_is_refused_naming_it(tmp_path, where, path):
    doc = base_fixture()
    doc[where[0]][where[1]][where[2]][where[3]] = f"0-{HUGE}"
    r = sane(run("scan", "--fixture", write_fixture(tmp_path, doc)), 2)
    assert path in r.error and "invalid fixture" in r.error, r.error


# Host files that hold numbers, each with one past the limit; node1 is absent from the
# node directory listing when its entry is replaced.
HUGE_FILES = {
    f"{CPU}/kernel_max": f"{HUGE}\n",
    f"{CPU}/possible": f"0-{HUGE}\n",
    f"{CPU}/online": f"0-3,{HUGE}\n",
    f"{NODE}/node1/cpulist": f"2-{HUGE}\n",
    f"{NODE}/node0/distance": f"{HUGE} 20\n",
    f"{NODE}/node0/meminfo": f"Node 0 MemTotal:       {HUGE} kB\n",  # read without has_memory
    "proc/sys/kernel/osrelease": f"{HUGE}.1.0\n",
}


def _huge_cpuinfo(text: str) -> str:
    blocks = text.split("\n\n")
    blocks[3] = blocks[3].replace("processor\t: 3", f"processor\t: {HUGE}")
    return "\n\n".join(blocks).replace("cpu family\t: 6", f"cpu family\t: {HUGE}")


def _huge_host(doc: dict, what: str, huge: str = HUGE) -> dict:
    if what == "cpuinfo":
        doc["files"]["proc/cpuinfo"] = _huge_cpuinfo(doc["files"]["proc/cpuinfo"])
        # without CPUID leaf 1, the host's family comes from cpuinfo's "cpu family"
        del doc["cpuid"]["0x00000001:0x0"]
    elif what == "node dir":
        doc["dirs"][NODE] = [f"node{huge}" if n == "node1" else n for n in doc["dirs"][NODE]]
    elif what == "cpu link":
        doc["dirs"][f"{CPU}/cpu0"] = [f"node{huge}"]
    else:
        doc["files"][what] = HUGE_FILES[what]
        if what.endswith("meminfo"):
            del doc["files"][f"{NODE}/has_memory"], doc["files"][f"{NODE}/has_normal_memory"]
    return doc


@case("1b", 0)
@pytest.mark.parametrize("what", [*HUGE_FILES, "cpuinfo", "node dir", "cpu link"])
def test_a_huge_number_in_a_host_file_is_an_ignored_value_in_a_fixture_and_a_tree(tmp_path, what):
    doc = _huge_host(base_fixture(), what)
    r = sane(run("scan", "--fixture", write_fixture(tmp_path, doc), "--format", "json"))
    # A directory name holds at most 255 bytes (NAME_MAX): in a tree, 250 digits.
    root = str(tmp_path / "root")
    hostgen.write_tree(_huge_host(base_fixture(), what, HUGE[:250]), root)
    t = sane(run("scan", "--root", root, "--format", "json"))
    for out in (r, t):
        report = json.loads(out.text)
        notes = "\n".join(report["topology"]["notes"])
        if what == f"{CPU}/online" and out is r:
            # the list is ignored; the fixture lists no cpuN folders to fall back on (the
            # tree has them, and reads each cpuN/online)
            assert out.code == 3 and "/sys/devices/system/cpu/online lists none" in out.error
        elif what == "cpuinfo":
            # CPU 3's block is ignored, and CPUID leaf 1 is not there to stand in: CPU 3
            # could not be determined, named as such
            assert out.code == 3 and report["per_cpu"][3]["vmx_flag"] is None
            assert "CPUID leaf 1 on CPU 3" in out.error, out.error
        else:
            assert out.code == 0, (out.code, out.err)
        if what in (f"{CPU}/possible", f"{CPU}/online", f"{NODE}/node1/cpulist", f"{CPU}/kernel_max"):
            assert f"/{what}:" in notes and "ignored" in notes, notes
        if what == f"{NODE}/node0/distance":
            assert f"/{what}: not a list of numbers" in notes, notes
        if what in ("node dir", "cpu link"):
            assert "not a node id" in notes and "ignored" in notes, notes


@case("1c", 2)
@pytest.mark.parametrize(
    "args, env, words",
    [
        (("fixture", "mount", "intel-2s-ready", ".", f"--offline-after={HUGE}:1"), {}, "--offline-after"),
        (("fixture", "mount", "intel-2s-ready", ".", f"--offline-after=1:{HUGE}"), {}, "--offline-after"),
        (("fleet", ".", f"--stale-after={HUGE}d"), {}, "--stale-after"),
        (("fleet", ".", f"--limit={HUGE}"), {}, "--limit"),
        (
            ("scan", "--fixture", "intel-2s-ready", "--format", "nfd"),
            {"VMXPROBE_NFD_EXPIRY": f"{HUGE}h"},
            "EXPIRY",
        ),
        (("decode", "--msr", HUGE, "0x1"), {}, ""),
        (("decode", "0x" + "f" * 5000), {}, ""),
    ],
)
def test_a_huge_number_in_an_option_is_a_usage_error(args, env, words):
    r = sane(run(*args, env=env), 2)
    assert words in r.error.splitlines()[-1], r.error


# --- 2: strings that are not valid Unicode --------------------------------------------------

LONE = "\ud800"  # json.dumps writes it as the escape \ud800, as a hostile file holds it


@case("2a", 2)
@pytest.mark.parametrize(
    "where, path",
    [
        ("name", "$.name"),
        ("description", "$.description"),
        ("cpuinfo", '$.files["proc/cpuinfo"]'),
        ("osrelease", '$.files["proc/sys/kernel/osrelease"]'),
        ("dir entry", '$.dirs["sys/devices/system/node"][0]'),
    ],
)
def test_a_fixture_with_a_lone_surrogate_is_refused_naming_it(tmp_path, where, path):
    doc = base_fixture()
    if where in ("name", "description"):
        doc[where] = f"x{LONE}y"
    elif where == "cpuinfo":
        doc["files"]["proc/cpuinfo"] = doc["files"]["proc/cpuinfo"].replace("synthetic", f"syn{LONE}")
    elif where == "osrelease":
        doc["files"]["proc/sys/kernel/osrelease"] = f"6.1{LONE}\n"
    else:
        doc["dirs"]["sys/devices/system/node"].insert(0, f"node{LONE}")
    fx = write_fixture(tmp_path, doc)
    for fmt in ("text", "json", "prometheus"):
        r = sane(run("scan", "--fixture", fx, "--format", fmt), 2)
        assert r.error.startswith("vmxprobe: error: invalid fixture:") and path in r.error, r.error
        assert r.out == b""
    # refused before anything is mounted
    sane(run("fixture", "mount", fx, str(tmp_path)), 2)


def _not_utf8_root(tmp_path) -> bytes:
    root = os.path.join(os.fsencode(str(tmp_path)), b"host\xff\xfe")
    hostgen.write_tree(base_fixture(), os.fsdecode(root))
    return root


@case("2b", 0)
def test_a_root_path_that_is_not_utf8_gives_valid_utf8_everywhere(tmp_path):
    root = _not_utf8_root(tmp_path)
    for fmt in ("text", "json", "prometheus", "nfd"):
        r = sane(run("scan", "--root", root, "--format", fmt))
        if fmt == "text":
            assert "host\\xff\\xfe" in r.text
    out = tmp_path / "report.txt"
    sane(run("scan", "--root", root, "-o", str(out)))
    assert "host\\xff\\xfe" in out.read_text(encoding="utf-8")
    # a recording of it is a fixture that loads: its provenance holds no surrogate
    rec = tmp_path / "rec.json"
    sane(run("record", "--root", root, "-o", str(rec)), 0)
    assert json.loads(rec.read_text())["provenance"]["root"].endswith("host\\xff\\xfe")
    sane(run("scan", "--fixture", str(rec), "--format", "json"))


@case("2c", 1)
def test_fleet_lists_a_report_with_a_lone_surrogate_as_invalid_and_goes_on(tmp_path):
    d = tmp_path / "reports"
    d.mkdir()
    bad = live()
    bad["host"]["model_name"] = f"Xeon{LONE}"
    with open(d / "web01.json", "w", encoding="ascii") as f:
        json.dump(bad, f)
    write(d, "web02.json", live())
    # not ready, so that the text output lists it by name
    web03 = write(d, "web03.json", live("intel-fw-locked-off"))
    os.rename(web03, os.path.join(os.fsencode(str(d)), b"web\xff.json"))
    r = sane(run("fleet", str(d)), 1)
    assert "2 read, 1 skipped" in r.text
    assert "web01.json: host.model_name: a string that is not valid Unicode" in r.text, r.text
    assert "web\\xff" in r.text
    c = sane(run("fleet", str(d), "--format", "csv"), 1).text
    assert "web\\xff," in c and "web\\xff.json" in c
    j = json.loads(sane(run("fleet", str(d), "--format", "json"), 1).text)
    assert j["invalid"]["count"] == 1
    r = sane(run("fleet", "diff", str(d / "web02.json"), str(d / "web01.json")), 2)
    assert "NEW" in r.error and "host.model_name: a string" in r.error


# --- 4: reports with unexpected types inside per_cpu -------------------------------------


def _per_cpu_broken(how: str) -> dict:
    doc = live()
    e = doc["per_cpu"][1]
    if how == "msr value list":
        e["msr"]["0x3a"] = ["0x5"]
    elif how == "msr value object":
        e["msr"]["0x480"] = {"v": 1}
    elif how == "msr list":
        e["msr"] = [["0x3a", "0x5"]]
    elif how == "cpuid_vmx list":
        e["cpuid_vmx"] = [True]
    elif how == "vmx_flag object":
        e["vmx_flag"] = {}
    elif how == "entry string":
        doc["per_cpu"][1] = "cpu1"
    return doc


@case("4a", 1)
@pytest.mark.parametrize(
    "how",
    ["msr value list", "msr value object", "msr list", "cpuid_vmx list", "vmx_flag object", "entry string"],
)
def test_unexpected_types_in_per_cpu_are_an_invalid_report_and_the_run_goes_on(tmp_path, how):
    d = tmp_path / "reports"
    d.mkdir()
    bad = write(d, "web01.json", _per_cpu_broken(how))
    good = write(d, "web02.json", live())
    write(d, "web03.json", live("intel-fw-locked-off"))
    r = sane(run("fleet", str(d)), 1)
    assert (
        "3 report file(s): 2 read, 1 skipped" in r.text and "Skipped, not a valid scan report (1):" in r.text
    )
    assert "web01.json: per_cpu[1]" in r.text, r.text
    for fmt in ("csv", "json"):
        sane(run("fleet", str(d), "--format", fmt), 1)
    for old, new in ((good, bad), (bad, good)):
        r = sane(run("fleet", "diff", old, new), 2)
        assert "per_cpu[1]" in r.error and "not a scan report" not in r.error, r.error


# --- 9: special files named *.json among the reports -------------------------------------


@case("9a", 3)
def test_special_files_among_the_reports_are_listed_as_skipped(tmp_path):
    d = tmp_path / "reports"
    d.mkdir()
    write(d, "web01.json", live())
    os.mkfifo(d / "fifo.json")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock.json"))
    os.symlink("/dev/null", d / "null.json")
    os.symlink(d / "gone", d / "dangling.json")
    try:
        r = sane(run("fleet", str(d), timeout=60), 3)
    finally:
        sock.close()
    assert "5 report file(s): 1 read, 4 skipped" in r.text, r.text
    for name, why in (
        ("fifo.json", "not a regular file: a FIFO"),
        ("sock.json", "not a regular file: a socket"),
        ("null.json", "not a regular file: a character device"),
        ("dangling.json", "a symbolic link to nothing"),
    ):
        assert f"{d / name}: {why}" in r.text, r.text
    j = json.loads(sane(run("fleet", str(d), "--format", "json", timeout=60), 3).text)
    assert j["unreadable"]["count"] == 4 and j["reports"]["skipped"] == 4


# --- 5: standard output that cannot be written ------------------------------------------


def _commands(tmp_path) -> list[tuple]:
    """Every command, with arguments that make it write to standard output."""
    d = tmp_path / "reports"
    d.mkdir(exist_ok=True)
    a = write(d, "web01.json", live())
    b = write(d, "web02.json", live("intel-fw-locked-off"))
    root = str(tmp_path / "root")
    if not os.path.isdir(root):
        hostgen.write_tree(base_fixture(), root)
    return [
        ("--help",),
        ("--version",),
        ("scan", "--help"),
        ("fixture", "--help"),
        ("fleet", "--help"),
        ("scan", "--fixture", "intel-2s-ready"),
        ("scan", "--fixture", "intel-2s-ready", "--format", "json"),
        ("scan", "--root", root, "--format", "prometheus"),
        ("caps", "--fixture", "intel-2s-ready"),
        ("record", "--root", root),
        ("fixtures",),
        ("decode", "0x00da040000000004"),
        ("fleet", str(d)),
        ("fleet", str(d), "--format", "csv"),
        ("fleet", "diff", a, b),
    ]


def _cannot_write(r, why: str) -> None:
    sane(r, 2)
    assert r.error == f"vmxprobe: error: cannot write to standard output: {why}\n", r.error


@case("5a", 2)
def test_stdout_on_a_full_device_is_exit_2_for_every_command(tmp_path):
    for args in _commands(tmp_path):
        with open("/dev/full", "wb") as full:
            _cannot_write(run(*args, stdout=full), "No space left on device")


@case("5b", 2)
def test_a_closed_stdout_is_exit_2_for_every_command(tmp_path):
    for args in _commands(tmp_path):
        _cannot_write(run(*args, stdout="closed"), "Bad file descriptor")
    # nothing to write to standard output: nothing fails
    out = tmp_path / "r.json"
    sane(run("scan", "--fixture", "intel-2s-ready", "--format", "json", "-o", str(out), stdout="closed"), 0)
    assert json.loads(out.read_text())["verdict"]["ready"] is True


@case("5c", 2)
def test_a_pipe_whose_reader_is_gone_is_exit_2(tmp_path):
    for args in _commands(tmp_path)[5:8]:
        rfd, wfd = os.pipe()
        os.close(rfd)
        with os.fdopen(wfd, "wb") as w:
            _cannot_write(run(*args, stdout=w), "Broken pipe")


@case("5d", 2)
def test_an_encoding_that_cannot_hold_the_output_is_exit_2(tmp_path):
    doc = base_fixture()
    doc["files"]["proc/cpuinfo"] = doc["files"]["proc/cpuinfo"].replace("synthetic", "Xeon\u2122")
    fx = write_fixture(tmp_path, doc)
    latin1 = {"PYTHONIOENCODING": "latin-1"}
    r = run("scan", "--fixture", fx, env=latin1)
    assert r.code == 2 and r.error.startswith("vmxprobe: error: cannot write to standard output: "), r.error
    assert "latin-1" in r.error and r.error.count("\n") == 1
    # what latin-1 can hold is written
    assert run("scan", "--fixture", "intel-2s-ready", env=latin1).code == 0


# --- 10: an empty --root -----------------------------------------------------------------


@case("10a", 2)
@pytest.mark.parametrize("command", ["scan", "caps", "record"])
def test_an_empty_root_is_a_usage_error_not_a_scan_of_slash(command):
    r = sane(
        run(command, "--root", "", "--format", "json") if command != "record" else run(command, "--root", ""),
        2,
    )
    assert r.out == b"" and "--root" in r.error and "empty" in r.error, r.error


# --- 11: messages that point the right way ------------------------------------------------


@case("11a", 3)
def test_an_unreadable_cpu_folder_says_run_as_root(host):
    if not is_root():
        pytest.skip("needs root and setpriv to drop CAP_DAC_OVERRIDE")
    cpu_dir = host.path(CPU)
    for top, dirs, files in os.walk(cpu_dir):
        for name in dirs + files:
            not_ours(os.path.join(top, name), 0o700)
    not_ours(cpu_dir, 0o700)
    prefix = ("setpriv", "--bounding-set", ",".join("-" + c for c in NO_DAC))
    r = sane(run("scan", "--root", host.root, "--format", "json", prefix=prefix), 3)
    assert json.loads(r.text)["topology"]["file_errors"][CPU] == "EACCES"
    assert r.error == (
        "vmxprobe: could not determine: cannot read /sys/devices/system/cpu (EACCES): "
        "it lists the CPUs, and this user may not read it: run as root (sudo vmxprobe scan)\n"
    ), r.error


@case("11b", 3)
def test_a_cpu_without_device_nodes_does_not_blame_a_missing_driver(host):
    # CPU 2 is listed online, cpu2/online says 1, but its /dev/cpu/2 is gone; CPUs 0, 1
    # and 3 have theirs, so the msr and cpuid drivers are loaded.
    host.remove("dev/cpu/2")
    host.write(f"{CPU}/cpu2/online", "1\n")
    r = sane(run("scan", "--root", host.root, "--format", "json"), 3)
    why = "\n".join(json.loads(r.text)["verdict"]["undetermined"])
    assert "modprobe" not in why and "not loaded" not in why, why
    assert "CPU 2 (ENOENT): no /dev/cpu/2/msr although the msr driver is loaded" in why, why
    # with no device on any CPU, the driver is what is missing
    host.remove("dev/cpu")
    r = sane(run("scan", "--root", host.root, "--format", "json"), 3)
    assert "the msr driver is not loaded: run `modprobe msr`" in r.error


# --- the document and these tests agree ---------------------------------------------------


def test_every_case_is_documented_with_its_exit_code():
    doc = document_cases()
    assert set(doc) == set(CASES), set(doc) ^ set(CASES)
    for cid, code in CASES.items():
        test, documented = doc[cid]
        assert test == CASE_TESTS[cid], (
            f"case {cid}: docs/faults.md names {test}, the test is {CASE_TESTS[cid]}"
        )
        assert documented == code, f"case {cid}: docs/faults.md says exit {documented}, the test {code}"
