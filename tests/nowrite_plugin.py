"""No test, and nothing a test runs, opens an MSR or CPUID device for writing.

An audit hook (sys.addaudithook) sees every open() and os.open() of the test process,
and, through a sitecustomize put on PYTHONPATH for child processes, of every Python the
tests start (the CLI tests run `python -m vmxprobe`). It refuses, and records:

* opening a path under a dev/cpu/ folder with any access mode but O_RDONLY, or with
  O_CREAT, O_TRUNC or O_APPEND; and truncating, removing, renaming onto, chmod- or
  chown-ing such a path;
* when the path is the real /dev/cpu (after resolving links), whoever does it; when it
  is a dev/cpu/ folder of a host tree, when vmxprobe's own code does it (the tests that
  build trees write their dev/cpu files themselves, which is how trees are made).

The hook raises before the system call happens, so a violation never reaches a device.
The test in which one happens fails; one outside any test fails the session.

Registering (conftest.py: `pytest_plugins = ["tests.nowrite_plugin"]`, or `-p tests.nowrite_plugin`)
makes it active from the start of the session and fails the very test; importing it
(tests/test_nowrite.py does) activates the hook from then on, and test_nowrite.py fails
the session at its end if anything was recorded.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import sys
import tempfile

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
MUTATING = ("os.truncate", "os.remove", "os.rename", "os.chmod", "os.chown", "os.utime")
ENV_LOG = "VMXPROBE_NOWRITE_LOG"
ENV_EXPECT = "VMXPROBE_NOWRITE_EXPECT"

_violations: list[dict] = []  # this process
_expected: list | None = None  # set while a test provokes violations on purpose
_installed = False
_log_dir: str | None = None
_watchers: list[list] = []


class DevCpuWrite(RuntimeError):
    """Raised by the audit hook: not an OSError, so no `except OSError` swallows it."""


def _decode(path):
    if isinstance(path, int):
        return None
    try:
        return os.fsdecode(os.fspath(path))
    except TypeError:
        return None


def _resolve(path: str, dir_fd=None) -> str:
    if not os.path.isabs(path) and isinstance(dir_fd, int) and dir_fd >= 0:
        try:
            path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
        except OSError:
            pass
    return os.path.abspath(path)


def _under_dev_cpu(path: str) -> tuple[bool, bool]:
    """(under some dev/cpu/ folder, under the real /dev/cpu)."""
    parts = path.split(os.sep)
    tree = any(parts[i] == "dev" and parts[i + 1] == "cpu" for i in range(len(parts) - 1))
    real = False
    if tree:
        try:
            resolved = os.path.realpath(path)
        except (OSError, ValueError):
            resolved = path
        real = resolved == "/dev/cpu" or resolved.startswith("/dev/cpu/") or path.startswith("/dev/cpu/")
    return tree, real


def _by_vmxprobe() -> str | None:
    f = sys._getframe(2)
    while f is not None:
        name = f.f_globals.get("__name__", "")
        if name == "vmxprobe" or name.startswith("vmxprobe."):
            return f"{name}:{f.f_lineno}"
        f = f.f_back
    return None


def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        if _watchers:
            p = _decode(path)
            if p is not None and _under_dev_cpu(_resolve(p))[0]:
                for w in _watchers:
                    w.append((_resolve(p), flags, mode))
        writes = bool(flags & WRITE_FLAGS) if isinstance(flags, int) else False
        if isinstance(mode, str) and any(c in mode for c in "wax+"):
            writes = True
        if not writes:
            return
        paths = [(_decode(path), None)]
    elif event in MUTATING:
        if event == "os.rename":
            paths = [(_decode(args[0]), args[2]), (_decode(args[1]), args[3])]
        else:
            dir_fd = args[-1] if event in ("os.remove", "os.chmod", "os.chown") else None
            paths = [(_decode(args[0]), dir_fd)]
    else:
        return
    for path, dir_fd in paths:
        if path is None:
            continue
        full = _resolve(path, dir_fd)
        if "cpu" not in full:
            continue
        tree, real = _under_dev_cpu(full)
        if not tree:
            continue
        who = _by_vmxprobe()
        if not real and who is None:
            continue  # a test building a host tree
        _record(
            {
                "event": event,
                "path": full,
                "flags": args[2] if event == "open" else None,
                "by": who or "test code",
                "pid": os.getpid(),
                "argv": sys.argv[:4],
            }
        )
        raise DevCpuWrite(
            f"{event} of {full} for writing (by {who or 'test code'}): "
            "vmxprobe never writes to an MSR or CPUID device"
        )


def _record(v: dict) -> None:
    if _expected is not None:
        _expected.append(v)
        return
    # A child started to provoke a violation on purpose logs it apart.
    kind = "expected" if os.environ.get(ENV_EXPECT) else "violations"
    if kind == "violations":
        _violations.append(v)
    log = _log_dir or os.environ.get(ENV_LOG)
    if log:
        try:
            with open(os.path.join(log, f"{kind}-{os.getpid()}.jsonl"), "a") as f:
                f.write(json.dumps(v) + "\n")
        except OSError:
            pass


def log_dir() -> str | None:
    return _log_dir or os.environ.get(ENV_LOG)


@contextlib.contextmanager
def watching():
    """Every open of a path under a dev/cpu/ folder in this process, while it lasts:
    (path, flags) pairs, read-only ones included."""
    seen: list = []
    _watchers.append(seen)
    try:
        yield seen
    finally:
        _watchers.remove(seen)


def install(child: bool = False) -> None:
    """Install the hook in this process (once), and arrange for child Pythons to."""
    global _installed, _log_dir
    if _installed:
        return
    _installed = True
    sys.addaudithook(_hook)
    if child or os.environ.get(ENV_LOG):
        return  # a child: the parent made the log folder and the sitecustomize
    _log_dir = tempfile.mkdtemp(prefix="vmxprobe-nowrite-")
    os.chmod(_log_dir, 0o1777)  # children that drop privileges log here too
    atexit.register(shutil.rmtree, _log_dir, True)  # after the session's last check
    site = os.path.join(_log_dir, "site")
    os.mkdir(site)
    os.chmod(site, 0o755)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(site, "sitecustomize.py"), "w") as f:
        f.write(_SITECUSTOMIZE.format(repo=repo, site=site))
    os.environ[ENV_LOG] = _log_dir
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [site] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    )


_SITECUSTOMIZE = """\
# Written by tests/nowrite_plugin.py: installs its audit hook in every Python the tests
# start, then runs any sitecustomize this one hides.
import importlib.machinery, importlib.util, sys
sys.path.insert(0, {repo!r})
try:
    from tests import nowrite_plugin
    nowrite_plugin.install(child=True)
finally:
    sys.path.remove({repo!r})
_spec = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if p != {site!r}])
if _spec is not None and _spec.loader is not None:
    _mod = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_mod)
"""


def violations() -> list[dict]:
    """Everything recorded so far, in this process and in its children."""
    found = list(_violations)
    if _log_dir:
        for name in sorted(os.listdir(_log_dir)):
            if name.startswith("violations-") and not name.endswith(f"-{os.getpid()}.jsonl"):
                with open(os.path.join(_log_dir, name)) as f:
                    found += [json.loads(line) for line in f if line.strip()]
    return found


@contextlib.contextmanager
def expecting():
    """Provoke violations on purpose (the hook's own tests): they are refused as usual
    but kept apart, and yielded."""
    global _expected
    caught: list = []
    saved, _expected = _expected, caught
    try:
        yield caught
    finally:
        _expected = saved


install(child="pytest" not in sys.modules)


# --- pytest hooks (active when this module is registered as a plugin) -------------------

# Only under pytest: a child Python needs the hook alone, and importing pytest in every
# `python -m vmxprobe` the tests start would cost each of them a tenth of a second.
pytest = sys.modules.get("pytest")

if pytest is not None:

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(item):
        before = len(violations())
        result = yield
        after = violations()
        if len(after) > before:
            raise AssertionError(
                "opened an MSR/CPUID device for writing: "
                + "; ".join(f"{v['event']} {v['path']} by {v['by']}" for v in after[before:])
            )
        return result

    def pytest_sessionfinish(session, exitstatus):
        found = violations()
        if found:
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(
                    f"nowrite: {len(found)} write(s) to dev/cpu: "
                    + "; ".join(f"{v['path']} by {v['by']}" for v in found[:5]),
                    red=True,
                )
            session.exitstatus = 1
