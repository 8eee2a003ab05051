"""The no-write guarantee: MSR and CPUID devices are only ever opened read-only.

Three layers:
* nowrite_plugin's audit hook, active for the rest of the session once this module is
  collected (and from the start when the plugin is registered), in this process and
  in every Python child: any write-open of a dev/cpu path is refused and recorded, and
  _no_violations below fails the session if one was;
* every bundled fixture, laid out as a host tree of real files, is scanned and
  recorded through the live reader, and each open of its dev/cpu is checked;
* under strace (when installed), the command's system calls themselves: no open of a
  dev/cpu path with a write mode, and no write, ioctl or shared writable mapping on a
  descriptor of one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests import hostgen, nowrite_plugin
from tests.scanning import run
from vmxprobe.files import OutputError, write_atomic
from vmxprobe.host import fixture
from vmxprobe.host.readings import read_host as collect
from vmxprobe.host.sources import FixtureHost, LiveHost, RecordingHost

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BUNDLED = fixture.bundled_names()


@pytest.fixture(scope="session", autouse=True)
def _no_violations():
    """Fails the session (at its end) if anything opened dev/cpu for writing."""
    yield
    found = nowrite_plugin.violations()
    assert not found, f"opened an MSR/CPUID device for writing: {found[:5]}"


@pytest.fixture(scope="module")
def trees():
    """Every bundled fixture as a host tree of real files: name -> root."""
    base = tempfile.mkdtemp(prefix="vmxprobe-nowrite-trees-")
    out = {}
    for name in BUNDLED:
        root = os.path.join(base, name)
        hostgen.write_tree(fixture.from_fixture(fixture.load(name)), root)
        out[name] = root
    yield out
    shutil.rmtree(base, ignore_errors=True)


# --- the hook itself ---------------------------------------------------------------------


def test_the_hook_refuses_a_write_open_of_the_real_dev_cpu():
    # The hook raises before the system call: nothing is opened. (A CPU number no host
    # has, so that even a broken hook would meet ENOENT.)
    with nowrite_plugin.expecting() as caught:
        with pytest.raises(nowrite_plugin.DevCpuWrite):
            os.open("/dev/cpu/99999/msr", os.O_WRONLY)
        with pytest.raises(nowrite_plugin.DevCpuWrite):
            open("/dev/cpu/99999/cpuid", "r+b")
    assert [v["event"] for v in caught] == ["open", "open"]


def test_the_hook_refuses_our_own_code_writing_into_a_tree(tmp_path):
    d = tmp_path / "root" / "dev" / "cpu" / "0"
    d.mkdir(parents=True)
    with nowrite_plugin.expecting() as caught:
        with pytest.raises(nowrite_plugin.DevCpuWrite):
            write_atomic(str(d / "msr"), "not a register")
    assert caught and caught[0]["by"].startswith("vmxprobe.files")
    assert not (d / "msr").exists()  # refused at the rename onto dev/cpu/0/msr


def test_test_code_may_build_trees(tmp_path):
    # hostgen writes dev/cpu/N/msr files for trees; that is not vmxprobe writing.
    hostgen.write_tree(hostgen.synthetic(2, 1), str(tmp_path / "root"))
    assert (tmp_path / "root" / "dev" / "cpu" / "1" / "msr").is_file()


def test_the_hook_reaches_child_pythons():
    assert os.environ.get(nowrite_plugin.ENV_LOG), "the plugin did not set up children"
    env = {**os.environ, nowrite_plugin.ENV_EXPECT: "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os\ntry:\n    os.open('/dev/cpu/99999/msr', os.O_RDWR)\n"
            "except Exception as e:\n    print(type(e).__name__)",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.stdout.strip() == "DevCpuWrite", r.stderr
    logged = [n for n in os.listdir(nowrite_plugin.log_dir()) if n.startswith("expected-")]
    assert logged


def test_output_never_goes_into_dev_proc_or_sys(tmp_path):
    # -o /dev/stdout would otherwise replace the host's /dev/stdout link with a file.
    for target in ("/dev/stdout", "/dev/cpu/0/report.json", "/proc/self/report", "/sys/report"):
        with pytest.raises(OutputError, match="never into /dev, /proc, /sys"):
            write_atomic(target, "x")
    assert os.path.islink("/dev/stdout")


# --- every bundled fixture, through the live reader --------------------------------------


def _assert_read_only(opens, root):
    assert opens, "the scan opened no device: the check checked nothing"
    for path, flags, _mode in opens:
        assert path.startswith(os.path.join(root, "dev", "cpu")), path
        assert flags & os.O_ACCMODE == os.O_RDONLY, (path, oct(flags))
        assert not flags & (os.O_CREAT | os.O_TRUNC | os.O_APPEND), (path, oct(flags))


@pytest.mark.parametrize("name", BUNDLED)
def test_every_bundled_fixture_scans_and_records_read_only(trees, name):
    root = trees[name]
    with nowrite_plugin.watching() as opens:
        run(LiveHost(root))
        rec = RecordingHost(LiveHost(root))
        collect(rec)
    _assert_read_only(opens, root)


@pytest.mark.parametrize("name", BUNDLED)
def test_replaying_a_bundled_fixture_opens_no_device(name):
    fx = fixture.load(name)
    with nowrite_plugin.watching() as opens:
        run(FixtureHost(fx), fx)
    assert opens == []


# --- under strace ------------------------------------------------------------------------

STRACE = shutil.which("strace")
needs_strace = pytest.mark.skipif(STRACE is None, reason="strace is not installed (apt-get install strace)")

# The system calls that could change a device or a file: everything that names a path
# (%file), and everything that writes through a descriptor.
TRACE = (
    "%file,write,pwrite64,writev,pwritev,pwritev2,ftruncate,fallocate,mmap,sendfile,"
    "copy_file_range,splice,ioctl"
)
_READ_ONLY_FILE_CALLS = {
    "stat",
    "lstat",
    "newfstatat",
    "fstatat64",
    "statx",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "getcwd",
    "chdir",
    "statfs",
    "getxattr",
    "lgetxattr",
    "listxattr",
    "llistxattr",
    "execve",
    "inotify_add_watch",
}
_OPEN = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(open|openat|openat2|creat)\((.*)\) = (-?\d+)")
_CALL = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+)\((.*)")
_FD_WRITES = {
    "write",
    "pwrite64",
    "writev",
    "pwritev",
    "pwritev2",
    "ftruncate",
    "fallocate",
    "sendfile",
    "copy_file_range",
    "splice",
    "ioctl",
}
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")


def strace(argv, cwd=REPO):
    """Run argv under strace -f -y; returns (returncode, trace lines)."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as log:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
            ),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        p = subprocess.run(
            [STRACE, "-f", "-y", "-s", "0", "-e", f"trace={TRACE}", "-o", log.name, *argv],
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
            timeout=600,
        )
        return p, log.read().splitlines()


def dev_cpu_problems(lines):
    """Every traced call that opens a dev/cpu path for writing, changes one, or writes,
    ioctls or maps shared-writable through a descriptor of one; and the read-only opens."""
    problems, opens = [], []
    for line in lines:
        if "/dev/cpu" not in line:
            continue
        m = _OPEN.match(line)
        if m:
            call, args, _ = m.groups()
            path = re.search(r'"([^"]*)"', args)
            if path and "/dev/cpu/" in path.group(1) + "/":
                args.split(",")
                if call == "creat" or any(f in args for f in _WRITE_FLAGS):
                    problems.append(line)
                else:
                    opens.append(path.group(1))
            continue
        m = _CALL.match(line)
        if not m:
            continue
        call, args = m.groups()
        first_fd = re.match(r"\s*\d+<([^>]*)>", args)
        if call in _FD_WRITES:
            if first_fd and "/dev/cpu/" in first_fd.group(1):
                problems.append(line)
        elif call == "mmap":
            if "MAP_SHARED" in args and "PROT_WRITE" in args and re.search(r"<[^>]*/dev/cpu/", args):
                problems.append(line)
        elif call not in _READ_ONLY_FILE_CALLS and re.search(r'"[^"]*/dev/cpu/', args):
            problems.append(line)  # unlink, rename, truncate, chmod, mknod ... of a device path
    return problems, opens


@needs_strace
def test_strace_sees_the_checker_catch_a_write():
    # The parser's own test: a process that does open a dev/cpu path for writing.
    tmp = tempfile.mkdtemp()
    try:
        target = os.path.join(tmp, "dev", "cpu", "0")
        os.makedirs(target)
        p, lines = strace(
            [
                sys.executable,
                "-S",
                "-c",
                f"import os; fd = os.open({target + '/msr'!r}, os.O_RDWR | os.O_CREAT); "
                "os.pwrite(fd, b'x' * 8, 0x3a)",
            ]
        )
        problems, _ = dev_cpu_problems(lines)
        assert any("openat" in x for x in problems) and any("pwrite64" in x for x in problems), lines[-20:]
    finally:
        shutil.rmtree(tmp)


@needs_strace
def test_strace_scan_and_record_of_a_tree_are_read_only(tmp_path):
    root = str(tmp_path / "root")
    hostgen.write_tree(hostgen.synthetic(8, 2), root)
    out = tmp_path / "out"
    out.mkdir()
    for argv in (
        ["scan", "--root", root, "--format", "json", "-o", str(out / "report.json")],
        ["record", "--root", root, "-o", str(out / "fixture.json")],
    ):
        p, lines = strace([sys.executable, "-m", "vmxprobe", *argv])
        assert p.returncode in (0, 1, 3), p.stderr
        problems, opens = dev_cpu_problems(lines)
        assert problems == []
        assert len(opens) >= 16, "every CPU's msr and cpuid device is opened, read-only"


@needs_strace
def test_strace_every_bundled_fixture_read_only(trees):
    # One traced process scans and records every bundled fixture's tree, and replays
    # every bundled fixture (which opens no device at all).
    script = (
        "import sys, json\n"
        "from vmxprobe.host import fixture\n"
        "from vmxprobe.pipeline import run\n"
        "from vmxprobe.host.readings import read_host as collect\n"
        "from vmxprobe.host.sources import FixtureHost, LiveHost, RecordingHost\n"
        "for root in json.loads(sys.argv[1]):\n"
        "    run(LiveHost(root))\n"
        "    collect(RecordingHost(LiveHost(root)))\n"
        "import os; os.access('/vmxprobe-replay-starts', os.F_OK)\n"
        "for name in fixture.bundled_names():\n"
        "    fx = fixture.load(name)\n"
        "    run(FixtureHost(fx), fx)\n"
    )
    import json

    p, lines = strace([sys.executable, "-c", script, json.dumps(sorted(trees.values()))])
    assert p.returncode == 0, p.stderr[-2000:]
    problems, opens = dev_cpu_problems(lines)
    assert problems == []
    assert {o.split("/dev/cpu/")[0] for o in opens} == set(trees.values())
    replay = lines[next(i for i, x in enumerate(lines) if "vmxprobe-replay-starts" in x) :]
    assert not [x for x in replay if "/dev/cpu" in x and _OPEN.match(x)]


@needs_strace
def test_strace_live_scan_of_this_machine_is_read_only():
    p, lines = strace([sys.executable, "-m", "vmxprobe", "scan", "--format", "json"])
    assert p.returncode in (0, 1, 3), p.stderr
    problems, opens = dev_cpu_problems(lines)
    assert problems == []
    if os.path.exists("/dev/cpu/0/cpuid") or os.path.exists("/dev/cpu/0/msr"):
        assert any(o.startswith("/dev/cpu/") for o in opens)
