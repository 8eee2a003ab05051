#!/usr/bin/env python3
"""Build the bochs tier's boot image (docs/bochs.md) and the firmware it boots with.

One ISO serves every boot: GRUB, two kernels (Debian's own linux-image and the fast one
scripts/bochs-kernel.sh builds from Debian's linux-source-6.1), and one LZ4-compressed
initramfs holding a static busybox, Debian's python3 with the part of its standard
library that vmxprobe and the guest script import, click, this checkout's vmxprobe/
tree, tests/bochs/bochs_guest.py, and each kernel's msr, cpuid, kvm and kvm_intel modules.
The case (kernel and command line) comes from a small floppy per boot
(`case_floppy`), so the ISO is built once and cached under
${VMXPROBE_BOCHS_CACHE:-~/.cache/vmxprobe-bochs}/image-<key>, the key hashing every
input file.

Firmware locks: Bochs' BIOS (bochsbios, BIOS-bochs-latest) writes IA32_FEATURE_CONTROL
itself on every CPU that reports VMX in CPUID: `rdmsr 0x3a; or eax, 5; wrmsr`, once in
the boot CPU's 32-bit setup and once in the trampoline the application processors run
at SIPI. `patched_bios` changes that immediate in a copy, for all CPUs or only one
side, and checks that exactly the intended bytes changed.

    python3 scripts/bochs_image.py        build (or find) the image; print its directory
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUEST_DIR = os.path.join(REPO, "tests", "bochs")
GUEST_PYTHON = "/usr/bin/python3"
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
BOCHS_BIOS = "/usr/share/bochs/BIOS-bochs-latest"
# The modules each kernel carries: what the guest loads, and whatever they depend on.
GUEST_MODULES = ("msr", "cpuid", "kvm_intel")
# Extension modules the module finder reaches only through optional imports (hashlib's
# OpenSSL backend, decimal's C accelerator, the interactive console): vmxprobe and the
# guest never use them, and _hashlib alone would bring 5 MiB of libcrypto. The pure
# Python fallbacks (hashlib's built-in hashes, _pydecimal) stay importable.
SKIP_EXTENSIONS = ("_hashlib", "_ssl", "_decimal", "readline", "_curses", "_sqlite3", "_tkinter")
# Standard library packages the module finder reaches only through code that vmxprobe and
# the guest never run (doctest and pydoc through inspect, e-mail parsing through
# importlib.metadata, the event loop through click's and subprocess' optional paths).
# They would treble the initramfs, which GRUB reads through an emulated CD drive. A
# wrong entry here shows up as an ImportError in the first boot's output.
SKIP_PACKAGES = (
    "pydoc",
    "pydoc_data",
    "doctest",
    "unittest",
    "test",
    "lib2to3",
    "distutils",
    "tkinter",
    "idlelib",
    "ensurepip",
    "asyncio",
    "multiprocessing",
    "concurrent",
    "email",
    "http",
    "xmlrpc",
    "urllib.request",
    "pdb",
    "webbrowser",
    "xml.dom",
    "xml.sax",
    "xml.etree",
)


class ImageError(RuntimeError):
    """The image could not be built; the message says what is missing and how to get it."""


def cache_dir() -> str:
    return os.environ.get("VMXPROBE_BOCHS_CACHE") or os.path.expanduser("~/.cache/vmxprobe-bochs")


@dataclasses.dataclass
class Kernel:
    label: str  # "fast" or "debian"
    image: str  # bzImage / vmlinuz path
    release: str  # uname -r
    modules: str  # the /lib/modules/<release> directory


@dataclasses.dataclass
class Image:
    dir: str
    iso: str
    kernels: dict[str, Kernel]
    key: str
    built: bool  # False when it came from the cache
    seconds: float

    def manifest(self) -> dict:
        with open(os.path.join(self.dir, "manifest.json")) as f:
            return json.load(f)


def _run(cmd, what: str, **kw) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    except FileNotFoundError:
        raise ImageError(f"{what}: {cmd[0]} not found (scripts/bochs-setup.sh installs it)") from None
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-15:]
        raise ImageError(f"{what} failed (exit {p.returncode}): " + " | ".join(tail))
    return p.stdout


def fast_kernel(cache: str) -> Kernel:
    out = (
        _run(
            ["bash", os.path.join(REPO, "scripts", "bochs-kernel.sh"), cache],
            "building the fast kernel (scripts/bochs-kernel.sh)",
        )
        .strip()
        .splitlines()[-1]
    )
    release = open(os.path.join(out, "release")).read().strip()
    return Kernel("fast", os.path.join(out, "bzImage"), release, os.path.join(out, "lib", "modules", release))


def debian_kernel() -> Kernel:
    """Debian's own 6.1 kernel, the newest in /boot with its modules."""
    found = []
    for path in glob.glob("/boot/vmlinuz-6.1.*"):
        release = os.path.basename(path)[len("vmlinuz-") :]
        mods = f"/lib/modules/{release}"
        if os.access(path, os.R_OK) and os.path.isfile(f"{mods}/modules.dep"):
            found.append(
                (tuple(int(x) if x.isdigit() else 0 for x in re.split(r"[.-]", release)), path, release, mods)
            )
    if not found:
        raise ImageError(
            "no readable /boot/vmlinuz-6.1.* with /lib/modules/<release>/modules.dep "
            "(apt-get install linux-image-amd64; scripts/bochs-setup.sh)"
        )
    _, path, release, mods = max(found)
    return Kernel("debian", path, release, mods)


def busybox() -> str:
    for path in BUSYBOX_CANDIDATES:
        if os.path.isfile(path):
            out = (
                subprocess.run(["file", "-L", path], capture_output=True, text=True).stdout
                if shutil.which("file")
                else "statically linked"
            )
            if "dynamically linked" not in out:
                return path
    raise ImageError("no static busybox (apt-get install busybox-static)")


# --- what goes into the initramfs ----------------------------------------------------------

_FINDER = r"""
import json, modulefinder, os, sys
top, script, skip = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
mf = modulefinder.ModuleFinder(path=[top] + sys.path[1:], excludes=skip)
for dirpath, dirnames, filenames in os.walk(top):
    dirnames.sort()
    for name in sorted(filenames):
        if name.endswith(".py"):
            rel = os.path.relpath(os.path.join(dirpath, name), top)[:-3].split(os.sep)
            if rel[-1] == "__init__":
                rel.pop()
            mf.import_hook(".".join(rel))
mf.run_script(script)
print(json.dumps(sorted({m.__file__ for m in mf.modules.values() if m.__file__})))
"""


def python_files(stage: str) -> list[str]:
    """Every file of the guest interpreter's standard library that vmxprobe's package tree
    and the guest script can import, found by the standard module finder run by that
    interpreter (so the list follows the checkout, not a list kept here)."""
    out = _run(
        [
            GUEST_PYTHON,
            "-S",
            "-c",
            _FINDER,
            os.path.join(stage, "opt", "vmxprobe"),
            os.path.join(stage, "opt", "guest.py"),
            ",".join(SKIP_PACKAGES),
        ],
        "finding the standard library modules the guest imports",
    )
    stdlib = _run(
        [GUEST_PYTHON, "-S", "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"],
        "locating the guest interpreter's standard library",
    ).strip()
    files = [f for f in json.loads(out) if f.startswith(stdlib + os.sep)]
    # Codecs are looked up by name at run time, which no finder can see.
    files += glob.glob(os.path.join(stdlib, "encodings", "*.py"))
    files = [
        f for f in files if not (f.endswith(".so") and os.path.basename(f).split(".")[0] in SKIP_EXTENSIONS)
    ]
    return sorted(set(files))


def shared_libraries(binaries: list[str]) -> list[str]:
    libs = set()
    for b in binaries:
        for line in _run(["ldd", b], f"ldd {b}").splitlines():
            m = re.search(r"(/\S+) \(0x", line)
            if m:
                libs.add(m.group(1))
    return sorted(libs)


def _copy(src: str, root: str, dest: str | None = None) -> str:
    target = os.path.join(root, (dest or src).lstrip("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy2(src, target, follow_symlinks=True)
    return target


def _compile(root: str, top: str, sourceless: bool) -> None:
    """Bytecode by the guest's own interpreter, its paths as the guest sees them, checked
    by hash only when asked (the guest writes none, and compiling under emulation costs
    seconds per command). The standard library goes sourceless (legacy .pyc beside where
    the .py was, the .py dropped): half the bytes for GRUB to read."""
    _run(
        [
            GUEST_PYTHON,
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            root,
            "-p",
            "/",
        ]
        + (["-b"] if sourceless else [])
        + [os.path.join(root, top)],
        f"compiling {top}",
    )
    if sourceless:
        for path in glob.glob(os.path.join(root, top, "**", "*.py"), recursive=True):
            os.unlink(path)


def module_closure(mod_dir: str, names=GUEST_MODULES) -> dict[str, list[str]]:
    """{module path relative to mod_dir: [its dependencies' paths]} for `names` and
    everything they need, from the kernel's own modules.dep."""
    deps = {}
    with open(os.path.join(mod_dir, "modules.dep")) as f:
        for line in f:
            path, _, rest = line.partition(":")
            deps[path] = rest.split()
    by_name = {re.sub(r"\.ko(\.\w+)?$", "", os.path.basename(p)).replace("-", "_"): p for p in deps}
    out = {}
    todo = []
    for n in names:
        if n not in by_name:
            raise ImageError(f"{mod_dir}: no module {n} in modules.dep")
        todo.append(by_name[n])
    while todo:
        p = todo.pop()
        if p not in out:
            out[p] = deps[p]
            todo.extend(deps[p])
    return out


ORACLE = "extra/root_vmcs_oracle.ko"


def oracle_module(kernel: Kernel, cache: str) -> str:
    """tests/oracle/root_vmcs_oracle.ko for Debian's kernel, built by
    scripts/kernel-oracle.sh against that kernel's linux-headers and cached: the kernel's
    own cpu_to_node() and page_to_nid() for every possible CPU (/proc/root_vmcs_oracle)."""
    out = os.path.join(cache, f"oracle-{kernel.release}")
    ko = os.path.join(out, "root_vmcs_oracle.ko")
    sources = sorted(glob.glob(os.path.join(REPO, "tests", "oracle", "*")))
    stamp = hashlib.sha256(b"".join(open(p, "rb").read() for p in sources)).hexdigest()
    stamp_file = os.path.join(out, "sources.sha256")
    if os.path.isfile(ko) and os.path.isfile(stamp_file) and open(stamp_file).read() == stamp:
        return ko
    env = {**os.environ, "VMXPROBE_VM_KERNEL": kernel.image}
    _run(
        ["bash", os.path.join(REPO, "scripts", "kernel-oracle.sh"), "build", out],
        "building the oracle module (scripts/kernel-oracle.sh; linux-headers for Debian's kernel)",
        env=env,
    )
    with open(stamp_file, "w") as f:
        f.write(stamp)
    return ko


def install_modules(kernel: Kernel, root: str, extra: str | None = None) -> None:
    closure = module_closure(kernel.modules)
    dest = f"/lib/modules/{kernel.release}"
    for rel in closure:
        if not rel.endswith(".ko"):
            raise ImageError(f"{kernel.modules}/{rel}: compressed modules are not supported here")
        _copy(os.path.join(kernel.modules, rel), root, f"{dest}/{rel}")
    if extra is not None:
        # The oracle depends on nothing the kernel does not have built in.
        _copy(extra, root, f"{dest}/{ORACLE}")
        closure = {**closure, ORACLE: []}
    with open(os.path.join(root, dest.lstrip("/"), "modules.dep"), "w") as f:
        for rel, deps in sorted(closure.items()):
            f.write(f"{rel}: {' '.join(deps)}\n".replace(": \n", ":\n"))


def stage_root(root: str, kernels: list[Kernel], oracle: str | None = None) -> dict:
    for d in ("bin", "dev", "proc", "sys", "tmp", "root", "opt/vmxprobe"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    _copy(busybox(), root, "/bin/busybox")
    shutil.copytree(
        os.path.join(REPO, "vmxprobe"),
        os.path.join(root, "opt", "vmxprobe", "vmxprobe"),
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    click_dir = _run(
        [GUEST_PYTHON, "-c", "import click, os; print(os.path.dirname(click.__file__))"],
        f"{GUEST_PYTHON} importing click (apt-get install python3-click)",
    ).strip()
    shutil.copytree(
        click_dir,
        os.path.join(root, "opt", "vmxprobe", "click"),
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    _copy(os.path.join(GUEST_DIR, "bochs_guest.py"), root, "/opt/guest.py")
    init = _copy(os.path.join(GUEST_DIR, "init.sh"), root, "/init")
    os.chmod(init, 0o755)

    python = os.path.realpath(GUEST_PYTHON)
    _copy(python, root, "/usr/bin/python3")
    stdlib_files = python_files(root)
    for f in stdlib_files:
        _copy(f, root)
    libs = shared_libraries([python] + [f for f in stdlib_files if f.endswith(".so")])
    for lib in libs:
        _copy(lib, root)
    _compile(root, "usr/lib", sourceless=True)
    _compile(root, "opt", sourceless=False)
    for k in kernels:
        install_modules(k, root, oracle if k.label == "debian" else None)
    return {"stdlib_files": len(stdlib_files), "libraries": libs}


def write_cpio(root: str, out: str) -> None:
    """A newc archive of `root` (what the kernel unpacks into its rootfs)."""
    ino = [1]

    def header(name: str, mode: int, size: int, nlink: int = 1) -> bytes:
        fields = [ino[0], mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name) + 1, 0]
        ino[0] += 1
        h = b"070701" + b"".join(b"%08X" % v for v in fields) + name.encode() + b"\0"
        return h + b"\0" * (-len(h) % 4)

    with open(out, "wb") as f:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            if rel_dir != ".":
                f.write(header(rel_dir, 0o040755, 0, 2))
            for name in sorted(filenames) + sorted(
                d for d in dirnames if os.path.islink(os.path.join(dirpath, d))
            ):
                path = os.path.join(dirpath, name)
                rel = os.path.normpath(os.path.join(rel_dir, name))
                if os.path.islink(path):
                    data = os.readlink(path).encode()
                    f.write(header(rel, 0o120777, len(data)) + data + b"\0" * (-len(data) % 4))
                    continue
                with open(path, "rb") as src:
                    data = src.read()
                mode = 0o100755 if os.access(path, os.X_OK) else 0o100644
                f.write(header(rel, mode, len(data)) + data + b"\0" * (-len(data) % 4))
        f.write(header("TRAILER!!!", 0, 0, 1))


GRUB_CFG = """\
# The case floppy (harness: case_floppy) says which kernel boots with which command line.
set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
insmod fat
if [ -f (fd0)/case.cfg ]; then
  source (fd0)/case.cfg
else
  echo "vmxprobe-bochs: no case floppy (fd0)/case.cfg"
fi
"""


def _input_files(kernels: list[Kernel]) -> list[str]:
    files = [k.image for k in kernels]
    for k in kernels:
        files += [os.path.join(k.modules, p) for p in module_closure(k.modules)]
    files += sorted(glob.glob(os.path.join(REPO, "vmxprobe", "**", "*.py"), recursive=True))
    files += sorted(glob.glob(os.path.join(REPO, "vmxprobe", "**", "*.json"), recursive=True))
    files += [
        os.path.join(GUEST_DIR, "bochs_guest.py"),
        os.path.join(GUEST_DIR, "init.sh"),
        os.path.abspath(__file__),
        os.path.realpath(GUEST_PYTHON),
        busybox(),
    ]
    return files


def image_key(kernels: list[Kernel], oracle: str | None = None) -> str:
    h = hashlib.sha256()
    for path in _input_files(kernels) + ([oracle] if oracle else []):
        h.update(path.encode() + b"\0")
        with open(path, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    h.update(_run(["grub-mkrescue", "--version"], "grub-mkrescue --version").encode())
    return h.hexdigest()[:16]


def build(cache: str | None = None, log=None) -> Image:
    """The cached image for this checkout, built first if its inputs changed."""
    import time

    start = time.monotonic()
    cache = cache or cache_dir()
    os.makedirs(cache, exist_ok=True)
    kernels = [fast_kernel(cache), debian_kernel()]
    oracle = oracle_module(kernels[1], cache)
    key = image_key(kernels, oracle)
    out = os.path.join(cache, f"image-{key}")
    iso = os.path.join(out, "boot.iso")
    by_label = {k.label: k for k in kernels}
    if os.path.isfile(os.path.join(out, "manifest.json")):
        return Image(out, iso, by_label, key, False, time.monotonic() - start)
    for tool in ("grub-mkrescue", "xorriso", "mformat", "lz4"):
        if shutil.which(tool) is None:
            raise ImageError(
                f"{tool} not found (apt-get install grub-pc-bin grub-common xorriso "
                "mtools lz4; scripts/bochs-setup.sh)"
            )
    work = tempfile.mkdtemp(prefix="image.", dir=cache)
    try:
        root = os.path.join(work, "root")
        facts = stage_root(root, kernels, oracle)
        isodir = os.path.join(work, "iso")
        os.makedirs(os.path.join(isodir, "boot", "grub"))
        cpio = os.path.join(work, "initramfs.cpio")
        write_cpio(root, cpio)
        # LZ4 (legacy frame, which the kernel's RD_LZ4 reads; both kernels have it): GRUB
        # reads the initramfs through the BIOS' emulated CD drive at about a second of
        # emulation per MiB, and the kernel inflates LZ4 far faster than that.
        _run(
            ["lz4", "-l", "-9", "-q", "-f", cpio, os.path.join(isodir, "boot", "initramfs.lz4")],
            "compressing the initramfs (apt-get install lz4)",
        )
        for k in kernels:
            shutil.copy(k.image, os.path.join(isodir, "boot", f"vmlinuz-{k.label}"))
        with open(os.path.join(isodir, "boot", "grub", "grub.cfg"), "w") as f:
            f.write(GRUB_CFG)
        staging = os.path.join(work, "out")
        os.makedirs(staging)
        _run(
            [
                "grub-mkrescue",
                "-o",
                os.path.join(staging, "boot.iso"),
                isodir,
            ],
            "grub-mkrescue",
        )
        manifest = {
            "key": key,
            "kernels": {k.label: {"release": k.release, "image": k.image} for k in kernels},
            "initramfs_bytes": os.path.getsize(cpio),
            "initramfs_lz4_bytes": os.path.getsize(os.path.join(isodir, "boot", "initramfs.lz4")),
            "iso_bytes": os.path.getsize(os.path.join(staging, "boot.iso")),
            "stdlib_files": facts["stdlib_files"],
            "libraries": facts["libraries"],
            "python": _run(
                [GUEST_PYTHON, "-c", "import sys; print(sys.version.split()[0])"], "python version"
            ).strip(),
        }
        with open(os.path.join(staging, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=1)
        if os.path.isdir(out):
            shutil.rmtree(out)
        os.rename(staging, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Image(out, iso, by_label, key, True, time.monotonic() - start)


# --- firmware ------------------------------------------------------------------------------

# rombios' two writes of IA32_FEATURE_CONTROL, as assembled in BIOS-bochs-latest:
#   boot CPU (32-bit):   b9 3a 00 00 00  mov ecx, 0x3a     0f 32  rdmsr
#                        83 c8 05        or eax, 5         0f 30  wrmsr
#   APs (16-bit code, operand-size prefixes): the same with 66 before mov, or.
FEAT_CTL_WRITES = {
    "bsp": bytes.fromhex("b93a0000000f3283c8050f30"),
    "ap": bytes.fromhex("66b93a0000000f326683c8050f30"),
}
# Offset of the `or` immediate within each pattern.
_IMM = {"bsp": 9, "ap": 11}


def patched_bios(value: int, cpus: str, cache: str | None = None) -> str:
    """A copy of Bochs' BIOS that locks IA32_FEATURE_CONTROL to `value` (bit 0, the lock,
    must be set) on the boot CPU ("bsp"), the application processors ("ap") or "all",
    leaving the other side's 0x5. Returns its path; raises ImageError unless exactly the
    intended immediates changed."""
    if not (0 <= value <= 0x7F and value & 1):
        raise ValueError(f"feature-control value {value:#x}: must fit the or-immediate and set the lock")
    sides = {"all": ("bsp", "ap"), "bsp": ("bsp",), "ap": ("ap",)}[cpus]
    with open(BOCHS_BIOS, "rb") as f:
        orig = f.read()
    data = bytearray(orig)
    for side in sides:
        pat = FEAT_CTL_WRITES[side]
        at = [m.start() for m in re.finditer(re.escape(pat), orig)]
        if len(at) != 1:
            raise ImageError(
                f"{BOCHS_BIOS}: expected one {side} write of IA32_FEATURE_CONTROL "
                f"({pat.hex()}), found {len(at)}: this bochsbios is not the one "
                "the patch was worked out on"
            )
        data[at[0] + _IMM[side]] = value
    changed = [i for i in range(len(orig)) if orig[i] != data[i]]
    if len(changed) != (len(sides) if value != 5 else 0):
        raise ImageError(f"patching {BOCHS_BIOS}: {len(changed)} bytes changed, expected {len(sides)}")
    digest = hashlib.sha256(orig).hexdigest()[:12]
    out_dir = os.path.join(cache or cache_dir(), "bios")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, f"BIOS-bochs-latest.{digest}.fc{value:#x}-{cpus}")
    if not os.path.isfile(out):
        tmp = out + f".tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, out)
    return out


if __name__ == "__main__":
    try:
        img = build()
    except ImageError as e:
        sys.exit(f"bochs-image: {e}")
    print(img.dir)
    print(("built" if img.built else "cached") + f" in {img.seconds:.1f} s", file=sys.stderr)
