#!/usr/bin/env python3
"""Benchmark `vmxprobe fleet` against `jq -s` doing the same grouping on the same files.

    python3 -m benchmarks.fleet                        # 10,000 and 100,000 reports
    python3 -m benchmarks.fleet --counts 2000 --check

Generates varied synthetic scan reports (schema v1, CPU counts 2..512, ready / not
ready / undetermined, several revision ids and hypervisors, some stale, some fixture
replays, a few of an unknown schema version) into a folder per count, reads them all
once so both tools start from a warm page cache, then runs each tool and reports wall
time and peak resident memory (from wait4's rusage of that run alone). jq gets the
files as one stream (find | xargs cat | jq -s), since 100,000 paths do not fit in one
command line, and runs under an address-space limit (--jq-memory) so that slurping a
large fleet fails inside the limit rather than taking the machine down.

--check exits 1 unless: vmxprobe beats jq on the smallest count; the time per report
on the largest count is at most --max-ratio times that on the smallest (so 10x the
reports take at most about 10x as long); vmxprobe's peak memory grows by at most
--flat-mib; and the two tools' counts agree.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# --- the generator -----------------------------------------------------------------------

# How often each CPU count occurs: most hosts are mid-sized, a few are tiny or huge.
CPU_COUNTS = [
    (2, 5),
    (4, 8),
    (8, 10),
    (16, 12),
    (32, 15),
    (48, 10),
    (64, 15),
    (96, 8),
    (128, 8),
    (192, 4),
    (256, 3),
    (384, 1),
    (512, 1),
]

INTEL_MODELS = [  # (family, model, stepping, name, revision id)
    (6, 63, 2, "Intel(R) Xeon(R) CPU E5-2680 v3 @ 2.50GHz", 0x12),
    (6, 79, 1, "Intel(R) Xeon(R) CPU E5-2690 v4 @ 2.60GHz", 0x4),
    (6, 85, 4, "Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz", 0x4),
    (6, 85, 7, "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", 0x4),
    (6, 106, 6, "Intel(R) Xeon(R) Platinum 8358 CPU @ 2.60GHz", 0x4),
    (6, 143, 8, "Intel(R) Xeon(R) Platinum 8480+", 0x4),
    (6, 94, 3, "Intel(R) Core(TM) i7-6700 CPU @ 3.40GHz", 0x4),
    (6, 45, 7, "Intel(R) Xeon(R) CPU E5-2670 0 @ 2.60GHz", 0x10),
]
KVM_REVISION = 0x11E57ED0

# (profile, weight)
PROFILES = [
    ("ready", 62),
    ("nested", 10),
    ("locked_off", 8),
    ("guest_no_vmx", 8),
    ("undetermined", 6),
    ("amd", 4),
    ("unlocked_bad", 2),
]

NOW_FMT = "%Y-%m-%dT%H:%M:%SZ"


def _weighted(rng, pairs):
    total = sum(w for _, w in pairs)
    x = rng.uniform(0, total)
    for item, w in pairs:
        x -= w
        if x <= 0:
            return item
    return pairs[-1][0]


def _cpulist(n):
    return "0" if n == 1 else f"0-{n - 1}"


def _basic(rev, size):
    raw = (1 << 55) | (6 << 50) | (size << 32) | rev
    return {
        "raw": f"0x{raw:016x}",
        "revision_id": rev,
        "vmcs_size": size,
        "phys_addr_32bit": False,
        "dual_monitor": rev != KVM_REVISION,
        "memory_type": 6,
        "ins_outs": True,
        "true_controls": True,
        "no_hw_error_code_cc": False,
        "no_seamret_invd_vmcs": False,
        "memory_type_name": "WB",
        "reserved": [],
    }


def _fc(value):
    locked, outside = bool(value & 1), bool(value & 4)
    state = ("enabled_locked" if outside else "disabled_locked") if locked else "unlocked"
    return {
        "raw": f"0x{value:016x}",
        "locked": locked,
        "vmx_inside_smx": bool(value & 2),
        "vmx_outside_smx": outside,
        "senter_local_functions": 0,
        "senter_global_enable": False,
        "sgx_launch_control": False,
        "sgx_enabled": False,
        "lmce_enabled": False,
        "state": state,
    }


_PER_CPU_CACHE: dict = {}


def _per_cpu_text(n, nodes, msr, cpuid_vmx, vmx_flag):
    """per_cpu as it sits in an indent=2 report, cached per shape: formatting hundreds of
    entries with json's indenting encoder for every file would dominate generation."""
    key = (n, nodes, tuple(sorted(msr.items())), cpuid_vmx, vmx_flag)
    text = _PER_CPU_CACHE.get(key)
    if text is None:
        per_node = max(1, n // nodes)
        entries = [
            {
                "cpu": c,
                "node": min(c // per_node, nodes - 1),
                "node_source": "link",
                "present": True,
                "online": True,
                "probed": True,
                "msr": dict(msr),
                "cpuid_vmx": cpuid_vmx,
                "vmx_flag": vmx_flag,
            }
            for c in range(n)
        ]
        text = json.dumps(entries, indent=2).replace("\n", "\n  ")
        _PER_CPU_CACHE[key] = text
    return text


def make_report(
    rng, now: float, stale_fraction=0.05, fixture_fraction=0.005, future_schema_fraction=0.001
) -> str:
    """One synthetic scan report (JSON text, as `vmxprobe scan --format json` writes it)."""
    n = _weighted(rng, CPU_COUNTS)
    nodes = 1 if n <= 16 else (2 if n <= 128 else 4)
    profile = _weighted(rng, PROFILES)
    fam, model, step, name, rev = rng.choice(INTEL_MODELS)
    vendor, hv, emulated, undetermined = "GenuineIntel", None, None, []
    basic, fc = _basic(rev, 1024 if rev != 0x10 else 4096), _fc(0x5)
    cpuid_vmx = vmx_flag = True
    ready, determined, init, kvm = True, True, "ok", "ok"
    reasons = [
        f"CPU 0: IA32_VMX_BASIC (0x480) = {basic['raw']}: revision id 0x{rev:x} (bits 30:0), "
        f"VMCS size {basic['vmcs_size']} (bits 44:32) <= PAGE_SIZE, memory type 6 (WB)",
        f"all {n} online CPU(s) {_cpulist(n)} have VMX enabled and the same IA32_VMX_BASIC as the boot CPU",
    ]
    if profile == "nested":
        hv, emulated = "KVM", "KVM nested VMX"
        basic = _basic(KVM_REVISION, 4096)
        fam, model, step, name = 6, 85, 4, "Intel Xeon Processor (Skylake, IBRS)"
        n, nodes = min(n, 64), 1
        reasons.insert(
            0,
            "CPU 0: IA32_VMX_BASIC revision 0x11e57ed0 is KVM's VMCS12_REVISION: these are "
            "the VMX capabilities KVM emulates for its guest (nested VMX), not the hardware's",
        )
    elif profile == "locked_off":
        fc, vmx_flag = _fc(0x1), False
        ready, init, kvm = False, "EOPNOTSUPP", "EOPNOTSUPP"
        reasons = [
            "CPU 0: IA32_FEATURE_CONTROL (0x3a) = 0x0000000000000001: locked (bit 0) with VMX outside "
            'SMX (bit 2) clear; init_ia32_feat_ctl() clears X86_FEATURE_VMX ("VMX (outside TXT) '
            'disabled by BIOS"); x86_vmx_init() returns -EOPNOTSUPP'
        ]
    elif profile == "unlocked_bad":
        fc = _fc(0x0)
        ready, init, kvm = False, "EOPNOTSUPP", "EOPNOTSUPP"
        reasons = [
            "CPU 0: IA32_FEATURE_CONTROL (0x3a) = 0x0000000000000000: not locked; the kernel should "
            "have locked it at boot: x86_vmx_init() returns -EOPNOTSUPP"
        ]
    elif profile == "guest_no_vmx":
        hv = rng.choice(["KVM", "KVM", "VMware", "Microsoft Hv", "Xen HVM"])
        basic = fc = None
        cpuid_vmx = vmx_flag = False
        n, nodes = min(n, 64), 1
        ready, init, kvm = False, "EOPNOTSUPP", "EOPNOTSUPP"
        reasons = [
            "CPU 0: CPUID.01H:ECX.VMX[bit 5] = 0: no X86_FEATURE_VMX; x86_vmx_init() returns -EOPNOTSUPP",
            f"this is a guest of {hv} that does not expose VMX to it: enable nested virtualization "
            "on the host to use VMX here",
        ]
    elif profile == "undetermined":
        basic = fc = None
        ready, determined, init, kvm = False, False, None, None
        reasons = []
        undetermined = [
            "IA32_VMX_BASIC could not be read on CPU 0 (ENOENT): the msr driver is not loaded: "
            "run `modprobe msr` (kernel option CONFIG_X86_MSR)"
        ]
    elif profile == "amd":
        vendor, fam, model, step, name = "AuthenticAMD", 25, 1, 1, "AMD EPYC 7763 64-Core Processor"
        basic = fc = None
        cpuid_vmx = vmx_flag = False
        ready, init, kvm = False, "EOPNOTSUPP", "EOPNOTSUPP"
        reasons = [
            "CPU 0: CPUID.01H:ECX.VMX[bit 5] = 0: no X86_FEATURE_VMX; x86_vmx_init() returns -EOPNOTSUPP",
            "AuthenticAMD CPU: it has SVM (AMD-V), not VMX; the root VMCS plan does not apply",
        ]
    rev_id = None if basic is None else basic["revision_id"]
    if profile == "undetermined":
        msr = {"0x3a": "ENOENT", "0x480": "ENOENT"}
    elif basic is None:
        msr = {"0x3a": fc["raw"] if fc else "EIO", "0x480": "EIO"}
    else:
        msr = {"0x3a": fc["raw"], "0x480": basic["raw"]}
    age = rng.uniform(8, 60) * 86400 if rng.random() < stale_fraction else rng.uniform(0, 3 * 86400)
    fixture = rng.random() < fixture_fraction
    per_node = max(1, n // nodes)
    plan_nodes = []
    for k in range(nodes):
        lo, hi = k * per_node, (n if k == nodes - 1 else (k + 1) * per_node)
        plan_nodes.append(
            {
                "node": k,
                "serving_node": k,
                "cpus": _cpulist_range(lo, hi),
                "pages": hi - lo,
                "inferred_cpus": "",
            }
        )
    materialized = bool(init == "ok")
    doc = {
        "schema_version": 2 if rng.random() < future_schema_fraction else 1,
        "tool": {"name": "vmxprobe", "version": rng.choice(["0.1.0", "0.1.0", "0.1.0", "0.0.9"])},
        "generated_at": time.strftime(NOW_FMT, time.gmtime(now - age)),
        "source": (
            {
                "kind": "fixture",
                "name": "intel-2s-ready",
                "origin": "composed",
                "description": "Intel two-socket host: ready",
            }
            if fixture
            else {"kind": "live", "name": "/"}
        ),
        "host": {
            "vendor": vendor,
            "family": fam,
            "model": model,
            "stepping": step,
            "model_name": name,
            "hypervisor": hv,
            "kernel": rng.choice(
                ["6.1.0-27-amd64", "6.1.0-28-amd64", "6.12.9-amd64", "5.14.0-427.el9.x86_64"]
            ),
        },
        "cpus": {
            "possible": _cpulist(n),
            "present": _cpulist(n),
            "online": _cpulist(n),
            "probed": _cpulist(n),
        },
        "vmx_basic": basic,
        "feature_control": fc,
        "per_cpu": "@PER_CPU@",
        "topology": {
            "nodes": list(range(nodes)),
            "nodes_with_memory": list(range(nodes)),
            "notes": [],
            "missing": [],
            "file_errors": {},
        },
        "verdict": {
            "x86_vmx_init": init,
            "kvm_intel": kvm,
            "ready": ready,
            "determined": determined,
            "boot_cpu": 0,
            "emulated": emulated,
            "reasons": reasons,
            "undetermined": undetermined,
        },
        "plan": {
            "page_size": 4096,
            "pages": n,
            "bytes": n * 4096,
            "revision_id": rev_id,
            "header": None if rev_id is None else f"0x{rev_id:08x}",
            "nodes": plan_nodes,
            "materialized": materialized,
            "verified": {"pages": n, "ok": n, "bad": []} if materialized else None,
            "placement": "unbound",
        },
    }
    text = json.dumps(doc, indent=2)
    return text.replace('"@PER_CPU@"', _per_cpu_text(n, nodes, msr, cpuid_vmx, vmx_flag), 1) + "\n"


def _cpulist_range(lo, hi):
    return str(lo) if hi - lo == 1 else f"{lo}-{hi - 1}"


def generate(folder: str, count: int, seed: int = 1, now: float = None, **kw) -> int:
    """Write `count` reports into `folder` (created); returns the bytes written."""
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(seed)
    now = time.time() if now is None else now
    total = 0
    racks = max(1, count // 40)
    for i in range(count):
        text = make_report(rng, now, **kw)
        name = f"dc{i % 3 + 1}-r{(i // 40) % racks:04d}-h{i:06d}.json"
        with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
            f.write(text)
        total += len(text)
    return total


# --- the runs ----------------------------------------------------------------------------

JQ_FILTER = r"""
def count_by(f): map(f) | group_by(.) | map({key: (.[0] | tostring), value: length}) | from_entries;
def status: if .verdict.ready then "ready" elif .verdict.determined == false then "undetermined"
            else "not_ready" end;
(map(select(.schema_version == 1))) as $r
| {
  files: length,
  read: ($r | length),
  unknown_schema: (map(select(.schema_version != 1)) | length),
  readiness: ($r | count_by(status)),
  by_revision_id: ($r | count_by(if .vmx_basic then .vmx_basic.revision_id else .plan.revision_id end
                                 | if . == null then "unknown" else . end)),
  by_vmcs_size: ($r | count_by(.vmx_basic.vmcs_size // "unknown")),
  by_cpu_model: ($r | count_by("\(.host.model_name // .host.vendor) "
                               + "(\(.host.family)/\(.host.model)/\(.host.stepping))")),
  by_hypervisor: ($r | count_by(.host.hypervisor // "none")),
  by_feature_control: ($r | count_by(.feature_control.state // "unreadable")),
  by_tool_version: ($r | count_by(.tool.version)),
  not_ready: ($r | map(select(status == "not_ready") | {host: .source.name, reason: .verdict.reasons[0]})
              | {count: length, hosts: (sort_by(.host) | .[:20])}),
  undetermined: ($r | map(select(status == "undetermined")) | length),
  stale: ($r | map(select((.generated_at | fromdate) < (now - $stale))) | length),
  fixtures: ($r | map(select(.source.kind == "fixture")) | length)
}
"""


def timed(argv, *, shell=False, memory_limit=None):
    """Run once; (wall s, CPU s, peak RSS MiB of the run's largest process, rc, stdout, stderr)."""

    def limit():
        if memory_limit:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    out = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, shell=shell, stdout=out, stderr=subprocess.PIPE, preexec_fn=limit)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    return (
        wall,
        ru.ru_utime + ru.ru_stime,
        ru.ru_maxrss / 1024,
        p.returncode,
        out.read().decode(errors="replace"),
        err.decode(errors="replace"),
    )


def warm(folder):
    for entry in os.scandir(folder):
        with open(entry.path, "rb") as f:
            while f.read(1 << 20):
                pass


def run_vmxprobe(folder, stale, repeat=1):
    """Best wall time of `repeat` runs (the least disturbed by whatever else the machine
    is doing), with that run's CPU time; the largest peak memory of all runs."""
    argv = [
        sys.executable,
        "-m",
        "vmxprobe",
        "fleet",
        "--format",
        "json",
        "--stale-after",
        f"{stale}s",
        folder,
    ]
    runs = [timed(argv) for _ in range(repeat)]
    wall, cpu, _, rc, out, err = min(runs, key=lambda r: r[0])
    ok = rc in (0, 1, 3)
    return {
        "tool": "vmxprobe fleet",
        "wall": wall,
        "cpu": cpu,
        "rss_mib": max(r[2] for r in runs),
        "rc": rc,
        "runs": [round(r[0], 2) for r in runs],
        "result": json.loads(out) if ok else None,
        "error": None if ok else err.strip()[-300:],
    }


def run_jq(folder, stale, memory_limit):
    filt = tempfile.NamedTemporaryFile("w", suffix=".jq", delete=False)
    filt.write(JQ_FILTER)
    filt.close()
    cmd = (
        f"find {sh_quote(folder)} -maxdepth 1 -name '*.json' -print0 | xargs -0 cat | "
        f"jq -s --argjson stale {int(stale)} -f {sh_quote(filt.name)}"
    )
    try:
        wall, cpu, rss, rc, out, err = timed(cmd, shell=True, memory_limit=memory_limit)
    finally:
        os.unlink(filt.name)
    ok = rc == 0
    error = None
    if not ok:
        error = err.strip()[-300:] or f"exit {rc}"
        if "memory" in error.lower() or rc in (-9, 137, 5) or "alloc" in error.lower():
            error = f"out of memory under its {memory_limit / 2**30:.0f} GiB address-space limit ({error})"
    return {
        "tool": "jq -s",
        "wall": wall,
        "cpu": cpu,
        "rss_mib": rss,
        "rc": rc,
        "result": json.loads(out) if ok else None,
        "error": error,
    }


def sh_quote(s):
    import shlex

    return shlex.quote(s)


def agree(v: dict, j: dict) -> list[str]:
    """Differences between the two tools' counts (empty: they agree)."""
    problems = []
    if v["readiness"] != {k: j["readiness"].get(k, 0) for k in v["readiness"]}:
        problems.append(f"readiness {v['readiness']} vs {j['readiness']}")
    rev_v = {("unknown" if k == "unknown" else str(int(k, 16))): c for k, c in v["by_revision_id"].items()}
    if rev_v != j["by_revision_id"]:
        problems.append(f"revision ids {rev_v} vs {j['by_revision_id']}")
    for key in ("by_vmcs_size", "by_cpu_model", "by_hypervisor", "by_feature_control", "by_tool_version"):
        if v[key] != j[key]:
            problems.append(f"{key} {v[key]} vs {j[key]}")
    if v["unknown_schema"]["count"] != j["unknown_schema"]:
        problems.append(f"unknown schema {v['unknown_schema']['count']} vs {j['unknown_schema']}")
    for key in ("stale", "fixtures"):
        if v[key]["count"] != j[key]:
            problems.append(f"{key} {v[key]['count']} vs {j[key]}")
    if v["not_ready"]["count"] != j["not_ready"]["count"]:
        problems.append(f"not ready {v['not_ready']['count']} vs {j['not_ready']['count']}")
    return problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--counts", default="10000,100000", help="comma-separated report counts (default %(default)s)"
    )
    ap.add_argument("--dir", help="where to generate (default: a new folder under $TMPDIR or /var/tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the generated reports")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of vmxprobe per count, best wall time kept (default 3); jq runs once",
    )
    ap.add_argument("--no-jq", action="store_true", help="time vmxprobe only")
    ap.add_argument("--jq-memory", type=float, default=8, help="jq's address-space limit in GiB (default 8)")
    ap.add_argument("--stale-after", type=int, default=7 * 86400, help="seconds (default 7 days)")
    ap.add_argument("--check", action="store_true", help="exit 1 unless the bars hold (see the docstring)")
    ap.add_argument(
        "--max-ratio",
        type=float,
        default=1.2,
        help="--check: largest/smallest wall time at most this times the count ratio (default 1.2)",
    )
    ap.add_argument(
        "--flat-mib", type=float, default=8, help="--check: peak memory growth allowed (default 8 MiB)"
    )
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    counts = sorted(int(c) for c in args.counts.split(","))
    use_jq = not args.no_jq and shutil.which("jq") is not None
    if not args.no_jq and not use_jq:
        print("jq not found: timing vmxprobe only (apt-get install jq)", file=sys.stderr)
    base = args.dir or tempfile.mkdtemp(prefix="vmxprobe-bench-", dir=os.environ.get("TMPDIR") or "/var/tmp")
    now = time.time()
    results = []
    problems = []
    try:
        for count in counts:
            folder = os.path.join(base, f"reports-{count}")
            if os.path.isdir(folder) and len(os.listdir(folder)) == count:
                size = sum(e.stat().st_size for e in os.scandir(folder))
                gen = 0.0
            else:
                shutil.rmtree(folder, ignore_errors=True)
                t0 = time.perf_counter()
                size = generate(folder, count, seed=args.seed, now=now)
                gen = time.perf_counter() - t0
            print(
                f"{count} reports, {size / 2**20:.0f} MiB ({size / count / 1024:.1f} KiB each)"
                + (f", generated in {gen:.1f} s" if gen else " (reused)"),
                flush=True,
            )
            warm(folder)
            v = run_vmxprobe(folder, args.stale_after, args.repeat)
            v["count"] = count
            results.append(v)
            if v["error"]:
                problems.append(f"vmxprobe fleet failed on {count}: {v['error']}")
            if use_jq:
                j = run_jq(folder, args.stale_after, int(args.jq_memory * 2**30))
                j["count"] = count
                results.append(j)
                if j["result"] is not None and v["result"] is not None:
                    diffs = agree(v["result"], j["result"])
                    j["agrees"] = not diffs
                    if diffs:
                        problems.append(f"{count}: the tools disagree: {'; '.join(diffs)}")
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(base, ignore_errors=True)

    print(f"{'reports':>8}  {'tool':<15} {'wall s':>8} {'CPU s':>7} {'peak RSS MiB':>13}  result")
    for r in results:
        what = r["error"] or ("ok" + (", counts agree with vmxprobe" if r.get("agrees") else ""))
        if r.get("runs") and len(r["runs"]) > 1:
            what += f" (best of {r['runs']})"
        print(
            f"{r['count']:>8}  {r['tool']:<15} {r['wall']:>8.2f} {r['cpu']:>7.2f} "
            f"{r['rss_mib']:>13.1f}  {what}"
        )
    vm = [r for r in results if r["tool"] == "vmxprobe fleet" and not r["error"]]
    jqr = {r["count"]: r for r in results if r["tool"] == "jq -s"}
    if len(vm) >= 2:
        lo, hi = vm[0], vm[-1]
        ratio = hi["wall"] / lo["wall"]
        scale = hi["count"] / lo["count"]
        growth = hi["rss_mib"] - lo["rss_mib"]
        print(
            f"vmxprobe: {hi['count']} reports took {ratio:.1f}x the wall time of {lo['count']} "
            f"({hi['cpu'] / lo['cpu']:.1f}x the CPU time) for {scale:.0f}x the reports; "
            f"peak memory {lo['rss_mib']:.1f} -> {hi['rss_mib']:.1f} MiB"
        )
        if ratio > scale * args.max_ratio:
            problems.append(f"time grew {ratio:.1f}x for {scale:.0f}x the reports")
        if growth > args.flat_mib:
            problems.append(f"peak memory grew by {growth:.1f} MiB")
    if vm and vm[0]["count"] in jqr:
        j = jqr[vm[0]["count"]]
        if j["error"] is None and j["wall"] <= vm[0]["wall"]:
            problems.append(f"jq -s was faster on {vm[0]['count']} reports")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{k: v for k, v in r.items() if k != "result"} for r in results], f, indent=2)
    for p in problems:
        print(f"FAIL: {p}", file=sys.stderr)
    return 1 if (args.check and problems) else 0


if __name__ == "__main__":
    sys.exit(main())
