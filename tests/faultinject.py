"""Run the vmxprobe command with failures injected into chosen system calls.

For the cells of the fault matrix (docs/faults.md) that no real file can produce: the
command runs as a user runs it (vmxprobe.cli.main, exit codes, one-line errors), and
only the calls named in VMXPROBE_FAULTS fail. Usage:

    VMXPROBE_FAULTS='[{"call": "open", "path": "dev/cpu/0/msr", "errno": "EPERM"}]' \\
        python -m tests.faultinject scan --root TREE --format json

A rule: "call" is one of open, pread, read, listdir, fsync, replace; "path" is a
suffix the call's path must end with (for pread/read/fsync, the path the descriptor was
opened with); "errno" is the errno name to fail with; "skip" lets that many matching
calls through first; "times" fails only that many (default: all after skip).

Two more rules change what the process is, not what a call returns: {"call":
"rlimit_as"} lowers RLIMIT_AS to what is mapped plus "slack" bytes just before the
plan's pages are mapped (the kernel then fails mmap with a real ENOMEM), and {"call":
"place", "how": "mbind"} binds each plan page to its node with mbind(2) (a node this
machine does not have fails with a real EINVAL), or {"call": "place", "errno": NAME}
fails the placement with that errno.
"""

from __future__ import annotations

import errno
import json
import os
import sys


def _rules():
    return json.loads(os.environ.get("VMXPROBE_FAULTS", "[]"))


class _Injector:
    def __init__(self, rules):
        self.rules = rules
        self.seen = [0] * len(rules)
        self.paths: dict[int, str] = {}

    def check(self, call, path):
        if path is None:
            return
        path = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
        for i, rule in enumerate(self.rules):
            if rule.get("call") != call or "errno" not in rule:
                continue
            if not path.endswith(rule["path"]):
                continue
            self.seen[i] += 1
            n = self.seen[i] - rule.get("skip", 0)
            if n >= 1 and ("times" not in rule or n <= rule["times"]):
                code = getattr(errno, rule["errno"])
                raise OSError(code, os.strerror(code), path)

    def install(self):
        real_open, real_close = os.open, os.close
        real_pread, real_read, real_listdir = os.pread, os.read, os.listdir
        real_fsync, real_replace = os.fsync, os.replace
        inj = self

        def open_(path, flags, mode=0o777, *, dir_fd=None):
            inj.check("open", path)
            fd = real_open(path, flags, mode, dir_fd=dir_fd)
            inj.paths[fd] = os.fsdecode(path) if not isinstance(path, int) else str(path)
            return fd

        def close_(fd):
            inj.paths.pop(fd, None)
            return real_close(fd)

        def pread_(fd, n, offset):
            inj.check("pread", inj.paths.get(fd))
            return real_pread(fd, n, offset)

        def read_(fd, n):
            inj.check("read", inj.paths.get(fd))
            return real_read(fd, n)

        def listdir_(path="."):
            inj.check("listdir", path)
            return real_listdir(path)

        def fsync_(fd):
            fd_num = fd if isinstance(fd, int) else fd.fileno()
            inj.check("fsync", inj.paths.get(fd_num))
            return real_fsync(fd)

        def replace_(src, dst, *, src_dir_fd=None, dst_dir_fd=None):
            inj.check("replace", dst)
            return real_replace(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

        os.open, os.close, os.pread, os.read, os.listdir = open_, close_, pread_, read_, listdir_
        os.fsync, os.replace = fsync_, replace_
        self._plan_rules()

    def _plan_rules(self):
        limit = next((r for r in self.rules if r.get("call") == "rlimit_as"), None)
        place = next((r for r in self.rules if r.get("call") == "place"), None)
        if limit is None and place is None:
            return
        import functools
        import resource

        from vmxprobe import pipeline
        from vmxprobe.arch.vmx import PAGE_SIZE
        from vmxprobe.host import mempolicy
        from vmxprobe.kernel import pages as plan_mod

        def place_hook(buf, page):
            if "errno" in place:
                code = getattr(errno, place["errno"])
                raise OSError(code, os.strerror(code))
            mempolicy.bind_to_node(plan_mod.page_address(buf), PAGE_SIZE, page.node)

        def materialize(plan):
            hook = place_hook if place is not None else None
            if limit is None:
                return plan_mod.materialize(plan, place=hook)
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            with open("/proc/self/status") as f:
                mapped = int(f.read().split("VmSize:")[1].split()[0]) * 1024
            resource.setrlimit(resource.RLIMIT_AS, (mapped + limit.get("slack", 1 << 20), hard))
            try:
                return plan_mod.materialize(plan, place=hook)
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

        real_run = pipeline.run
        pipeline.run = functools.partial(real_run, materialize_pages=materialize)


def main(argv=None):
    _Injector(_rules()).install()
    from vmxprobe.cli import main as cli_main

    sys.argv = ["vmxprobe"] + list(sys.argv[1:] if argv is None else argv)
    cli_main()


if __name__ == "__main__":
    main()
