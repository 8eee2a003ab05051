"""Boot a case of the bochs tier: Bochs (an Intel CPU model with VMX), GRUB, a 6.1 kernel,
and tests/bochs/bochs_guest.py as /init's work. docs/bochs.md describes the tier.

One boot image (scripts/bochs_image.py) serves every case; a case is the Bochs CPU model
and count, the firmware (Bochs' BIOS, or a copy that locks IA32_FEATURE_CONTROL to
another value), and a floppy whose GRUB snippet picks the kernel and puts the case name
on its command line. A boot ends when Bochs exits after the guest's ACPI power-off
(Bochs' exit status is then 1: that is success), or is killed at its own deadline.

    python3 tests/bochs/bochs_harness.py [CASE...]    boot cases by hand, print what each said
    python3 tests/bochs/bochs_harness.py --table SUMMARY.json   docs/bochs.md's table of boots

Where the tier must run (CI=true or VMXPROBE_BOCHS_REQUIRED=1) a missing requirement
fails the test instead of skipping it.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import bochs_image  # noqa: E402

BOCHS = "bochs"
VGA_BIOS = "/usr/share/vgabios/vgabios.bin"
BEGIN = "@@VMXPROBE-BOCHS-BEGIN@@"
END_RE = re.compile(r"@@VMXPROBE-BOCHS-END ([0-9a-f]{64})@@")
SETUP_HINT = "bash scripts/bochs-setup.sh (or scripts/test-deps.sh) installs everything"
# Kernel lines worth keeping with a fixture: what the kernel said about VMX, KVM and
# IA32_FEATURE_CONTROL (x86/cpu: "VMX (outside TXT) disabled by BIOS", kvm: ...).
LOG_RE = re.compile(r"\bkvm\b|kvm_intel|\bvmx\b|feat_ctl|IA32_FEAT|\bTXT\b|disabled by bios|VMCS", re.I)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    model: str  # Bochs `cpu: model=`
    cpus: int = 1
    kernel: str = "fast"  # "fast" (scripts/bochs-kernel.sh) or "debian"
    feat_ctl: int | None = None  # IA32_FEATURE_CONTROL the firmware locks; None: Bochs' 0x5
    feat_ctl_cpus: str = "all"  # "all", "bsp" or "ap": which CPUs get feat_ctl
    # Seconds of wall time before the boot is killed: about three times what a boot takes
    # with a core to itself, as the machine may be shared.
    deadline: int = 480
    why: str = ""

    @property
    def firmware(self) -> str:
        if self.feat_ctl is None:
            return "Bochs BIOS (IA32_FEATURE_CONTROL 0x5, locked, on every CPU)"
        where = {"all": "every CPU", "bsp": "the boot CPU", "ap": "the application processors"}
        return (
            f"Bochs BIOS patched: IA32_FEATURE_CONTROL {self.feat_ctl:#x} on "
            f"{where[self.feat_ctl_cpus]}" + ("" if self.feat_ctl_cpus == "all" else ", 0x5 elsewhere")
        )


# Longest first: two run at a time, and the Debian kernel and the SMP boots take longest.
# Seven models from Penryn to Cannon Lake, five of them ready; the locks ride on models
# that have no ready boot of their own (their capability MSRs are still recorded).
CASES = [
    Case(
        "skylake-x-debian",
        "corei7_skylake_x",
        kernel="debian",
        deadline=900,
        why="Debian's own kernel and modules; VMCS size 4096, the PAGE_SIZE edge",
    ),
    Case(
        "broadwell-smp2",
        "broadwell_ult",
        cpus=2,
        deadline=900,
        why="SMP: every CPU read, one plan page per possible CPU",
    ),
    Case(
        "lock-ap-off-smp2",
        "corei7_haswell_4770",
        cpus=2,
        feat_ctl=0x1,
        feat_ctl_cpus="ap",
        deadline=900,
        why="only CPU 1 locked with VMX off; the boot CPU has 0x5",
    ),
    Case(
        "penryn",
        "core2_penryn_t9600",
        why="no EPT, no VPID: 0x48c and 0x491 do not exist; kvm_intel loads without EPT",
    ),
    Case("haswell", "corei7_haswell_4770"),
    Case("cannon-lake", "corei3_cnl", why="the newest model the 6.1 kernel boots under Bochs"),
    Case(
        "lock-vmx-off",
        "corei5_lynnfield_750",
        feat_ctl=0x1,
        why="firmware locks VMX off: the kernel hides vmx and refuses kvm_intel",
    ),
    Case(
        "lock-smx-only",
        "corei7_sandy_bridge_2600k",
        feat_ctl=0x3,
        why="firmware allows VMX inside SMX only (0x3): as good as off outside TXT",
    ),
]
BY_NAME = {c.name: c for c in CASES}


# "vmx flags" names vmxprobe's table prints that Linux 6.1 does not: 6.1's
# arch/x86/include/asm/vmxfeatures.h marks them "" (no name in /proc/cpuinfo), e.g.
# VMX_FEATURE_EPT_VIOLATION_VE ( 2*32+ 18) /* "" Conditionally reflect EPT violations
# as #VE exceptions */; later kernels name it. vmxprobe does not model kernel versions,
# so on 6.1 its kernel view lists these as missing, and says the kernel predates them.
UNNAMED_IN_6_1 = frozenset({"ept_violation_ve"})


def kernel_view_beyond_6_1(report: dict) -> list:
    """capabilities.kernel_view entries that 6.1's unnamed flags do not explain."""
    out = []
    for entry in report["capabilities"]["kernel_view"]:
        if entry["extra"] or not set(entry["missing"]) <= UNNAMED_IN_6_1 or not entry["missing"]:
            out.append(entry)
    return out


class BochsError(RuntimeError):
    pass


def bochs_required() -> bool:
    return (
        os.environ.get("CI", "").lower() in ("1", "true", "yes")
        or os.environ.get("VMXPROBE_BOCHS_REQUIRED") == "1"
    )


def missing_requirements() -> str | None:
    missing = []
    if shutil.which(BOCHS) is None:
        missing.append("bochs not found (apt-get install bochs bochsbios vgabios bochs-term)")
    for path, pkg in (
        (bochs_image.BOCHS_BIOS, "bochsbios"),
        (VGA_BIOS, "vgabios"),
        ("/usr/src/linux-source-6.1.tar.xz", "linux-source-6.1"),
    ):
        if not os.path.isfile(path):
            missing.append(f"{path} missing (apt-get install {pkg})")
    for tool, pkg in (
        ("grub-mkrescue", "grub-common"),
        ("xorriso", "xorriso"),
        ("mformat", "mtools"),
        ("lz4", "lz4"),
        ("mcopy", "mtools"),
        ("gcc", "build-essential"),
        ("flex", "flex"),
        ("bison", "bison"),
        ("bc", "bc"),
    ):
        if shutil.which(tool) is None:
            missing.append(f"{tool} not found (apt-get install {pkg})")
    if not os.path.isdir("/usr/lib/grub/i386-pc"):
        missing.append("/usr/lib/grub/i386-pc missing (apt-get install grub-pc-bin)")
    try:
        bochs_image.busybox()
        bochs_image.debian_kernel()
    except bochs_image.ImageError as e:
        missing.append(str(e))
    if missing:
        return "cannot run the bochs tier: " + "; ".join(missing) + f"; {SETUP_HINT}"
    return None


def package_version(pkg: str) -> str:
    p = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    return p.stdout.strip() or "unknown"


def bochs_version() -> str:
    """ "2.7" from Bochs' banner, with Debian's package version."""
    p = subprocess.run([BOCHS, "--help"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    m = re.search(r"Bochs x86 Emulator (\S+)", p.stdout + p.stderr)
    return m.group(1) if m else "unknown"


# --- one boot ---------------------------------------------------------------------------------


def kernel_cmdline(case: Case) -> str:
    # random.trust_cpu=on: python's getrandom() would otherwise wait for entropy that an
    # emulated machine gathers slowly (models without RDRAND still wait a little).
    # idle=halt: an idle emulated CPU halts instead of spinning through mwait emulation.
    return (
        "console=ttyS0,115200 earlyprintk=serial,ttyS0,115200 panic=0 random.trust_cpu=on "
        f"idle=halt tsc=reliable vmxprobe.case={case.name}"
    )


def case_floppy(case: Case, workdir: str) -> str:
    cfg = os.path.join(workdir, "case.cfg")
    with open(cfg, "w") as f:
        f.write(
            f'echo "vmxprobe-bochs: case {case.name}, kernel {case.kernel}"\n'
            f"linux /boot/vmlinuz-{case.kernel} {kernel_cmdline(case)}\n"
            "initrd /boot/initramfs.lz4\n"
            "boot\n"
        )
    img = os.path.join(workdir, "case.img")
    for cmd in (["mformat", "-i", img, "-C", "-f", "1440", "::"], ["mcopy", "-i", img, cfg, "::case.cfg"]):
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise BochsError(f"{' '.join(cmd)}: {p.stderr.strip()}")
    return img


def bochsrc(case: Case, image: bochs_image.Image, workdir: str, bios: str, floppy: str) -> str:
    return "\n".join(
        [
            f"# vmxprobe bochs tier, case {case.name}",
            "memory: guest=512, host=512",
            f"cpu: model={case.model}, count={case.cpus}, ips=20000000, reset_on_triple_fault=0",
            f"romimage: file={bios}",
            f"vgaromimage: file={VGA_BIOS}",
            "pci: enabled=1, chipset=i440fx",
            f"ata0-master: type=cdrom, path={image.iso}, status=inserted",
            f"floppya: 1_44={floppy}, status=inserted",
            "boot: cdrom",
            "floppy_bootsig_check: disabled=1",
            f"com1: enabled=1, mode=file, dev={os.path.join(workdir, 'serial.out')}",
            # Debian's bochs has no headless display; rfb without waiting for a client is one.
            'display_library: rfb, options="timeout=0"',
            "clock: sync=none, time0=utc",
            f"log: {os.path.join(workdir, 'bochs.log')}",
            "panic: action=fatal",
            "error: action=report",
            "info: action=report",
            "debug: action=ignore",
            "mouse: enabled=0",
            "",
        ]
    )


@dataclasses.dataclass
class Boot:
    case: Case
    workdir: str
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    bochs_rc: int | None = None
    timed_out: bool = False
    console: str = ""
    bundle: dict | None = None
    error: str | None = None

    def tail(self, n: int = 40) -> str:
        lines = [ln for ln in self.console.splitlines() if not re.fullmatch(r"[A-Za-z0-9+/=]{76}", ln)]
        return "\n".join(lines[-n:])

    def describe_failure(self) -> str:
        return (
            f"bochs case {self.case.name} ({self.case.model} x{self.case.cpus}, kernel "
            f"{self.case.kernel}): {self.error}; Bochs exit {self.bochs_rc}, "
            f"{self.seconds:.0f} s wall; files in {self.workdir}\n"
            f"--- last console lines:\n{self.tail()}"
        )

    # What the guest reported, decoded.
    def report(self, name: str) -> dict:
        return json.loads(self.bundle[name]["stdout"])

    @property
    def fixture(self) -> dict:
        return json.loads(self.bundle["record"]["fixture"])

    def kernel_outcome(self) -> dict:
        b = self.bundle
        # The command line names the case (vmxprobe.case=lock-vmx-off): not a kernel verdict.
        log = [ln for ln in b["kmsg"] if LOG_RE.search(ln) and "command line:" not in ln.lower()]
        return {
            "kvm_intel": b["load_kvm_intel"]["result"],
            "dev_kvm": b["dev_kvm"],
            "kvm_run": b["kvm_run"]["ran"],
            "log": log,
        }


def _decode(console: str) -> dict:
    start = console.rfind(BEGIN)
    if start < 0:
        raise BochsError("the guest printed no result bundle")
    m = END_RE.search(console, start)
    if m is None:
        raise BochsError("the result bundle is cut short (no end marker)")
    blob = "".join(console[start + len(BEGIN) : m.start()].split())
    if hashlib.sha256(blob.encode()).hexdigest() != m.group(1):
        raise BochsError("the result bundle does not match its checksum (console output mixed in?)")
    return json.loads(zlib.decompress(base64.b64decode(blob)))


def _kill(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        for _ in range(50):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:
                return
            time.sleep(0.1)


def boot(case: Case, image: bochs_image.Image, workdir: str) -> Boot:
    os.makedirs(workdir, exist_ok=True)
    result = Boot(case, workdir)
    bios = (
        bochs_image.BOCHS_BIOS
        if case.feat_ctl is None
        else bochs_image.patched_bios(case.feat_ctl, case.feat_ctl_cpus)
    )
    floppy = case_floppy(case, workdir)
    rc_path = os.path.join(workdir, "bochsrc")
    with open(rc_path, "w") as f:
        f.write(bochsrc(case, image, workdir, bios, floppy))
    # Debian's bochs has the internal debugger, which stops before the first instruction:
    # its command file says continue.
    cmds = os.path.join(workdir, "debugger.rc")
    with open(cmds, "w") as f:
        f.write("c\n")
    serial = os.path.join(workdir, "serial.out")
    open(serial, "w").close()
    start = time.monotonic()
    with open(os.path.join(workdir, "bochs.stdout"), "w") as out:
        proc = subprocess.Popen(
            [BOCHS, "-q", "-f", rc_path, "-rc", cmds],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,
        )
    status = rusage = None
    done_at = None
    while True:
        pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            status, rusage = st, ru
            break
        now = time.monotonic()
        if done_at is None:
            with open(serial, errors="replace") as f:
                text = f.read()
            if END_RE.search(text) or "Kernel panic" in text:
                done_at = now
        # After the bundle (or a panic) the guest has nothing more to say: give the
        # power-off a moment, then stop Bochs ourselves.
        if now - start > case.deadline or (done_at is not None and now - done_at > 30):
            result.timed_out = done_at is None
            rusage_before = _cpu_of(proc.pid)
            _kill(proc.pid)
            result.cpu_seconds = rusage_before
            break
        time.sleep(0.5)
    proc.returncode = os.waitstatus_to_exitcode(status) if status is not None else None
    result.seconds = time.monotonic() - start
    if rusage is not None:
        result.cpu_seconds = rusage.ru_utime + rusage.ru_stime
    result.bochs_rc = proc.returncode
    with open(serial, errors="replace") as f:
        result.console = f.read()
    if result.timed_out:
        result.error = f"no result within the boot's deadline of {case.deadline} s; killed"
        return result
    try:
        result.bundle = _decode(result.console)
    except (BochsError, ValueError, zlib.error) as e:
        result.error = str(e)
        return result
    with open(os.path.join(workdir, "bundle.json"), "w") as f:
        json.dump(result.bundle, f, indent=1)
    return result


def _cpu_of(pid: int) -> float:
    """utime + stime of a live process (before it is killed and its rusage lost)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def run_cases(
    cases: list[Case], image: bochs_image.Image, root: str, parallel: int = 2, log=None
) -> dict[str, Boot]:
    from concurrent.futures import ThreadPoolExecutor

    def one(case):
        b = boot(case, image, os.path.join(root, case.name))
        if log:
            log(
                f"bochs: {case.name}: {b.seconds:.0f} s wall, {b.cpu_seconds:.0f} s CPU"
                + (f", {b.error}" if b.error else "")
            )
        return b

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return {b.case.name: b for b in pool.map(one, cases)}


def summary_row(b: Boot) -> dict:
    """One row of docs/bochs.md's table of boots."""
    row = {
        "case": b.case.name,
        "model": b.case.model,
        "cpus": b.case.cpus,
        "kernel": b.case.kernel,
        "firmware": b.case.firmware,
        "wall_seconds": round(b.seconds, 1),
        "cpu_seconds": round(b.cpu_seconds, 1),
        "error": b.error,
    }
    if b.bundle:
        scan = json.loads(b.bundle["scan"]["stdout"]) if b.bundle["scan"]["stdout"].startswith("{") else {}
        v = scan.get("verdict", {})
        row.update(
            {
                "release": b.bundle["release"],
                "vmx_basic": scan.get("vmx_basic", {}).get("raw")
                if isinstance(scan.get("vmx_basic"), dict)
                else None,
                "feature_control": sorted(
                    {c.get("msr", {}).get("0x3a", "?") for c in scan.get("per_cpu", [])}
                ),
                "vmxprobe": {
                    "exit": b.bundle["scan"]["rc"],
                    "x86_vmx_init": v.get("x86_vmx_init"),
                    "kvm_intel": v.get("kvm_intel"),
                    "ready": v.get("ready"),
                },
                "kernel": {k: v for k, v in b.kernel_outcome().items() if k != "log"},
            }
        )
    return row


def markdown_table(rows: list[dict]) -> str:
    """docs/bochs.md's table of boots, from summary rows (conftest's summary.json)."""
    out = [
        (
            "| case | Bochs model | CPUs | kernel | IA32_FEATURE_CONTROL | VMX_BASIC | vmxprobe "
            "(exit) | kernel: kvm_intel, KVM_RUN | wall / CPU s |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("error"):
            out.append(
                f"| {r['case']} | {r['model']} | {r['cpus']} | {r['kernel']} | | | "
                f"| {r['error']} | {r['wall_seconds']:.0f} / {r['cpu_seconds']:.0f} |"
            )
            continue
        v, k = r["vmxprobe"], r["kernel"]
        verdict = ("ready" if v["ready"] else f"not ready, kvm_intel {v['kvm_intel']}") + f" ({v['exit']})"
        kernel = f"{k['kvm_intel']}, " + ("guest ran to HLT" if k["kvm_run"] else "no guest")
        fc = ", ".join(f"{int(x, 16):#x}" for x in r["feature_control"])
        out.append(
            f"| {r['case']} | `{r['model']}` | {r['cpus']} | {r['release']} | {fc} | "
            f"`{r['vmx_basic']}` | {verdict} | {kernel} | "
            f"{r['wall_seconds']:.0f} / {r['cpu_seconds']:.0f} |"
        )
    return "\n".join(out)


# --- fixtures -------------------------------------------------------------------------------------


def fixture_path(case: Case) -> str:
    return os.path.join(REPO, "fixtures", f"bochs-{case.name}.json")


def fixture_document(b: Boot, emulator_version: str) -> dict:
    """The guest's `vmxprobe record` output with where it came from added: the emulator,
    the model, the firmware, and what the kernel itself decided on these registers."""
    doc = b.fixture
    case = b.case
    doc["description"] = (
        f"Bochs {emulator_version} {case.model}, {case.cpus} CPU(s), "
        f"{case.firmware}; Linux {b.bundle['release']}"
    )
    prov = doc["provenance"]
    prov.update(
        {
            "emulator": "bochs",
            "emulator_version": f"{emulator_version} (Debian bochs {package_version('bochs')})",
            "cpu_model": case.model,
            "cpu_count": case.cpus,
            "firmware": case.firmware,
            "kernel_release": b.bundle["release"],
            "kernel_cmdline": b.bundle["cmdline"],
            "kernel_outcome": b.kernel_outcome(),
            "notes": (
                "recorded by `vmxprobe record` as root in a Bochs guest through the kernel's "
                "msr and cpuid drivers (tests/bochs, docs/bochs.md); kernel_outcome is what that "
                "kernel did next: kvm_intel's load (finit_module errno), /dev/kvm, and KVM_RUN "
                "of a real-mode guest to HLT"
            ),
        }
    )
    return doc


def write_fixture(b: Boot, emulator_version: str) -> str:
    path = fixture_path(b.case)
    with open(path, "w") as f:
        json.dump(fixture_document(b, emulator_version), f, indent=1)
        f.write("\n")
    return path


if __name__ == "__main__":
    if sys.argv[1:2] == ["--table"]:
        with open(sys.argv[2]) as f:
            print(markdown_table(json.load(f)["boots"]))
        sys.exit(0)
    why = missing_requirements()
    if why:
        sys.exit(why)
    names = sys.argv[1:] or [c.name for c in CASES]
    img = bochs_image.build()
    print(f"image {img.dir} ({'built' if img.built else 'cached'} in {img.seconds:.0f} s)")
    root = os.path.join(bochs_image.cache_dir(), "runs", time.strftime("%Y%m%d-%H%M%S"))
    boots = run_cases([BY_NAME[n] for n in names], img, root, log=print)
    for name, b in boots.items():
        if b.error:
            print(b.describe_failure())
            continue
        scan = b.report("scan")
        v = scan["verdict"]
        print(
            f"{name}: vmxprobe exit {b.bundle['scan']['rc']} kvm_intel={v['kvm_intel']} "
            f"ready={v['ready']}; kernel {b.kernel_outcome()}"
        )
