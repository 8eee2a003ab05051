"""Run a bash script inside a real Linux kernel booted under QEMU, via virtme-ng.

One call is one boot (about 25-40 s under TCG on two host cores), so batch
many checks into one script. The guest sees the host's root filesystem
read-only over 9p (with writable tmpfs overlays on /etc, /tmp, /usr, /var,
...); /work/main is visible but not writable. The script's stdout and stderr
come back separately; its exit status is carried in a sentinel line on stdout
that is stripped from the returned output.

Inside the script these variables are set:
  VM_REPO         the repository root (host path, read-only in the guest)
  VM_OUTDIR       a host directory writable from the guest, only if `outdir` is given
  VM_PYTHON       the host interpreter running the tests; /root is mode 0700, so
                  an unprivileged user in the guest must use VM_GUEST_PYTHON
  VM_GUEST_PYTHON the system interpreter (/usr/bin/python3), which any user can run
                  and which has click (python3-click), so that
                  `PYTHONPATH=$VM_REPO $VM_GUEST_PYTHON -m vmxprobe` works for all
The guest runs as root; use `setpriv --reuid=65534 --regid=65534
--clear-groups CMD` for an unprivileged command.

Requirements (scripts/vm-setup.sh installs them): qemu-system-x86,
linux-image-amd64 (kernel in /boot, modules in /lib/modules), busybox-static,
python3-click, and virtme-ng from PyPI. KVM is not used (--disable-kvm): QEMU
runs in TCG mode, where the guest CPU has no VMX and every MSR read through
/dev/cpu/N/msr returns 0, unknown MSRs included.

Where the tests must run (CI=true or VMXPROBE_VM_REQUIRED=1), a missing
requirement fails the test instead of skipping it.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The two-node topology used by the smoke tests: node 0 = CPUs 0-1, node 1 = CPUs 2-3.
TWO_NODES = ("1G,cpus=0-1", "1G,cpus=2-3")

_SENTINEL_PREFIX = "__VMXPROBE_VM_RC_"

# The guest shares the host's root file system: this interpreter is the guest's too.
GUEST_PYTHON = "/usr/bin/python3"


class VMError(RuntimeError):
    """The VM did not run the script to completion (QEMU error, guest crash, timeout)."""

    def __init__(self, message: str, result: VMResult):
        super().__init__(
            f"{message}\n--- vng command: {shlex.join(result.args)}"
            f"\n--- stdout (tail):\n{result.stdout[-3000:]}"
            f"\n--- stderr (tail):\n{result.stderr[-3000:]}"
        )
        self.result = result


@dataclasses.dataclass
class VMResult:
    """Like subprocess.CompletedProcess; returncode is the guest script's exit status."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    vng_returncode: int | None = None
    seconds: float = 0.0

    def check_returncode(self) -> None:
        if self.returncode != 0:
            raise subprocess.CalledProcessError(self.returncode, self.args, self.stdout, self.stderr)


def _find_vng() -> str | None:
    # Prefer the vng installed beside the running interpreter: a pyenv shim on
    # PATH may exist for a Python version that does not have virtme-ng.
    here = os.path.join(os.path.dirname(sys.executable), "vng")
    if os.access(here, os.X_OK):
        return here
    return shutil.which("vng")


def find_kernel() -> str | None:
    """The kernel to boot: $VMXPROBE_VM_KERNEL, else the newest /boot/vmlinuz-* with modules."""
    env = os.environ.get("VMXPROBE_VM_KERNEL")
    if env:
        return env if os.path.isfile(env) else None

    def version_key(path: str):
        ver = os.path.basename(path)[len("vmlinuz-") :]
        return [int(p) if p.isdigit() else p for p in re.split(r"[.-]", ver)]

    candidates = []
    for path in glob.glob("/boot/vmlinuz-*"):
        ver = os.path.basename(path)[len("vmlinuz-") :]
        if os.access(path, os.R_OK) and os.path.isdir(f"/lib/modules/{ver}/kernel"):
            candidates.append(path)
    if not candidates:
        return None
    try:
        return max(candidates, key=version_key)
    except TypeError:  # mixed int/str parts: fall back to plain ordering
        return max(candidates)


def missing_requirements() -> str | None:
    """Return why a VM cannot be booted here, or None if everything is present."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return f"VM tests need an x86_64 Linux host, not {platform.system()} {platform.machine()}"
    missing = []
    if _find_vng() is None:
        missing.append("vng not found (pip install virtme-ng)")
    if shutil.which("qemu-system-x86_64") is None:
        missing.append("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
    if not any(shutil.which(b) for b in ("busybox-static", "busybox.static", "busybox")):
        missing.append("busybox not found (apt-get install busybox-static)")
    probe = (
        subprocess.run([GUEST_PYTHON, "-c", "import click"], capture_output=True)
        if os.access(GUEST_PYTHON, os.X_OK)
        else None
    )
    if probe is None or probe.returncode != 0:
        missing.append(f"{GUEST_PYTHON} cannot import click (apt-get install python3-click)")
    if find_kernel() is None:
        if os.environ.get("VMXPROBE_VM_KERNEL"):
            missing.append(f"VMXPROBE_VM_KERNEL={os.environ['VMXPROBE_VM_KERNEL']} is not a file")
        else:
            missing.append(
                "no readable /boot/vmlinuz-* with /lib/modules/<version>/kernel "
                "(apt-get install linux-image-amd64)"
            )
    if missing:
        return "cannot boot a VM: " + "; ".join(missing) + "; scripts/vm-setup.sh installs all"
    return None


def vm_required() -> bool:
    """CI runs the VM tests after scripts/vm-setup.sh: a skip there would hide a
    broken setup, so it fails instead."""
    return (
        os.environ.get("CI", "").lower() in ("1", "true", "yes")
        or os.environ.get("VMXPROBE_VM_REQUIRED") == "1"
    )


def _skip(reason: str):
    import pytest

    if vm_required():
        pytest.fail(f"{reason} (VM tests are required here: CI or VMXPROBE_VM_REQUIRED=1)", pytrace=False)
    pytest.skip(reason)


def _qemu_opts_arg(qemu_opts: str | Sequence[str] | None) -> list[str]:
    if not qemu_opts:
        return []
    if isinstance(qemu_opts, str):
        # vng pastes --qemu-opts into a shell command line: a string is taken as
        # shell words, exactly as on vng's own command line.
        return [f"--qemu-opts={qemu_opts}"]
    return ["--qemu-opts=" + " ".join(shlex.quote(o) for o in qemu_opts)]


def build_command(
    script_path: str,
    *,
    kernel: str,
    cpus: int,
    memory: str,
    numa: Sequence[str] | None,
    qemu_opts: str | Sequence[str] | None,
    outdir: str | None,
    numa_distance: Sequence[str] | None = None,
    append: Sequence[str] | None = None,
) -> list[str]:
    cmd = [
        _find_vng() or "vng",
        "--run",
        kernel,
        "--disable-kvm",
        "--cpus",
        str(cpus),
        "--memory",
        memory,
    ]
    for node in numa or ():
        cmd += ["--numa", node]
    for dist in numa_distance or ():
        cmd += ["--numa-distance", dist]
    if outdir:
        cmd += ["--rwdir", outdir]
    for arg in append or ():
        cmd += ["--append", arg]
    cmd += ["--exec", f"bash {shlex.quote(script_path)}"]
    # --qemu-opts last: vng appends it after its own QEMU options, so a later
    # -smp merges into vng's "-smp N" and a later -cpu replaces "-cpu max".
    cmd += _qemu_opts_arg(qemu_opts)
    return cmd


def _wrapper(user_script: str, sentinel: str, outdir: str | None, cwd: str) -> str:
    lines = [
        "#!/bin/bash",
        f"export VM_REPO={shlex.quote(REPO_ROOT)}",
        f"export VM_PYTHON={shlex.quote(sys.executable)}",
        f"export VM_GUEST_PYTHON={shlex.quote(GUEST_PYTHON)}",
        "export PYTHONDONTWRITEBYTECODE=1",
    ]
    if outdir:
        lines.append(f"export VM_OUTDIR={shlex.quote(outdir)}")
    lines += [
        f"cd {shlex.quote(cwd)} || exit 125",
        f"bash {shlex.quote(user_script)}",
        "__rc=$?",
        # The sentinel carries a per-run nonce; the parser cuts it out of stdout
        # even when the script's last line had no final newline.
        f"printf '%s%d__\\n' {shlex.quote(sentinel)} \"$__rc\"",
        'exit "$__rc"',
    ]
    return "\n".join(lines) + "\n"


def run_in_vm(
    script: str,
    *,
    cpus: int = 4,
    memory: str = "2G",
    numa: Sequence[str] | None = None,
    numa_distance: Sequence[str] | None = None,
    qemu_opts: str | Sequence[str] | None = None,
    timeout: float = 300,
    outdir: str | None = None,
    cwd: str = REPO_ROOT,
    kernel: str | None = None,
    append: Sequence[str] | None = None,
) -> VMResult:
    """Boot one VM, run `script` with bash as root inside it, return its output.

    numa: vng --numa specs, e.g. ["1G,cpus=0-1", "1G,cpus=2-3"] (memory must add
      up to `memory`); nodes are numbered in order. A size of 0 makes a node
      without memory: ["1G,cpus=0", "0,cpus=1-2", "1G,cpus=3"].
    numa_distance: vng --numa-distance specs, "SRC,DST=VAL" ("0,1=30"); QEMU wants
      one for every pair of nodes once any is given (the reverse is implied).
    qemu_opts: extra QEMU arguments, a shell-syntax string or a list of words,
      e.g. "-smp cpus=4,maxcpus=8" for possible CPUs 0-7 with 0-3 present.
    append: kernel command line parameters, e.g. ["movablecore=1G"] (vng --append;
      never pass QEMU's -append in qemu_opts: the last -append wins and would drop
      the one vng needs to start the guest).
    outdir: host directory mounted read-write in the guest at the same path,
      exported as $VM_OUTDIR, for files the guest writes back.

    Skips the calling test (pytest.skip) if vng, QEMU, busybox or a kernel is
    missing. Raises VMError if the script did not run to its end (QEMU failed
    to start, the guest crashed or hung, or `timeout` seconds passed).
    """
    reason = missing_requirements()
    if reason:
        _skip(reason)
    kernel = kernel or find_kernel()
    assert kernel is not None

    sentinel = f"{_SENTINEL_PREFIX}{secrets.token_hex(8)}="
    with tempfile.TemporaryDirectory(prefix="vmxprobe-vm-") as tmp:
        # Host /tmp is the lower layer of the guest's /tmp overlay, so files
        # written here before the boot are readable in the guest. The script
        # goes in a file, not on the kernel command line (vng passes --exec
        # there, base64-encoded, and it is limited to 2048 bytes on x86).
        user_script = os.path.join(tmp, "script.sh")
        wrapper = os.path.join(tmp, "wrapper.sh")
        with open(user_script, "w") as f:
            f.write(script)
        with open(wrapper, "w") as f:
            f.write(_wrapper(user_script, sentinel, outdir, cwd))
        cmd = build_command(
            wrapper,
            kernel=kernel,
            cpus=cpus,
            memory=memory,
            numa=numa,
            qemu_opts=qemu_opts,
            outdir=outdir,
            numa_distance=numa_distance,
            append=append,
        )
        start = time.monotonic()
        # New session so that a timeout kills QEMU too, not only vng.
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            timed_out = True
        seconds = time.monotonic() - start

    stdout = out.decode("utf-8", "replace")
    stderr = err.decode("utf-8", "replace")
    result = VMResult(cmd, -1, stdout, stderr, None if timed_out else proc.returncode, seconds)
    if "statically linked busybox could not be found" in stderr:
        _skip("cannot boot a VM: vng needs a static busybox (apt-get install busybox-static)")
    if timed_out:
        raise VMError(f"VM did not finish within {timeout} s", result)

    idx = stdout.rfind(sentinel)
    m = re.match(r"(\d+)__\n?", stdout[idx + len(sentinel) :]) if idx >= 0 else None
    if m is None:
        raise VMError(
            f"the guest script did not run to its end (vng exit status {proc.returncode})",
            result,
        )
    result.returncode = int(m.group(1))
    result.stdout = stdout[:idx] + stdout[idx + len(sentinel) + m.end() :]
    return result


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def sections(stdout: str, marker: str = "@@") -> dict[str, str]:
    """Split output made of `@@ name` header lines into {name: text}.

    Lets one boot run many checks: the script prints `@@ name` before each one.
    """
    out: dict[str, list[str]] = {}
    current = None
    for line in stdout.splitlines():
        if line.startswith(marker + " "):
            current = line[len(marker) + 1 :].strip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


if __name__ == "__main__":
    # Manual use: python3 tests/vm/harness.py 'cat /proc/cpuinfo' [vng --numa specs...]
    why = missing_requirements()
    if why:
        sys.exit(why)
    res = run_in_vm(sys.argv[1], numa=sys.argv[2:] or None)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    print(f"[exit {res.returncode}, {res.seconds:.1f} s]", file=sys.stderr)
    sys.exit(res.returncode)
