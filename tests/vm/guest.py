"""What runs inside the guests: one bash script per boot, made of steps.

A step either prints a `@@ name` section (small facts, read with harness.sections())
or runs a command through `run NAME CMD...`, which leaves NAME.out, NAME.err and
NAME.rc in $VM_OUTDIR for the tests to read (reports are too big for sections).
"""

from __future__ import annotations

# Shared by every script: how vmxprobe is run, as root and as others.
PRELUDE = r"""
set -u
export PYTHONPATH="$VM_REPO"
VMXPROBE="$VM_GUEST_PYTHON -m vmxprobe"
NOBODY="setpriv --reuid=65534 --regid=65534 --clear-groups"
# Root without CAP_SYS_RAWIO: msr_open() answers EPERM (capable(CAP_SYS_RAWIO)).
NORAWIO="setpriv --inh-caps=-sys_rawio --bounding-set=-sys_rawio"
run() {
  local name=$1; shift
  "$@" >"$VM_OUTDIR/$name.out" 2>"$VM_OUTDIR/$name.err"
  echo $? >"$VM_OUTDIR/$name.rc"
}
# The kernel's own placement: load tests/oracle/root_vmcs_oracle.ko ($ORACLE_KO, built on
# the host by scripts/kernel-oracle.sh), keep /proc/root_vmcs_oracle ("cpu node nid" per
# possible CPU) as NAME.out, what the kernel logged meanwhile as NAME.dmesg, and unload
# it again so that a later step can ask anew.
oracle() {
  local name=$1 before
  before=$(dmesg | wc -l)
  insmod "$ORACLE_KO" 2>"$VM_OUTDIR/$name.err"
  echo $? >"$VM_OUTDIR/$name.rc"
  cat /proc/root_vmcs_oracle >"$VM_OUTDIR/$name.out" 2>>"$VM_OUTDIR/$name.err"
  rmmod root_vmcs_oracle 2>>"$VM_OUTDIR/$name.err"
  dmesg | tail -n +$((before + 1)) >"$VM_OUTDIR/$name.dmesg"
}
# The firmware's tables as root reads them, for tests/data/acpi (README there).
dump_acpi() {
  local t
  for t in APIC SRAT FACP; do
    [ -e /sys/firmware/acpi/tables/$t ] && cp /sys/firmware/acpi/tables/$t "$VM_OUTDIR/acpi-$t.bin"
  done
  cat /sys/devices/system/node/has_memory >"$VM_OUTDIR/has_memory.txt"
}
# A root whose /proc/cpuinfo claims VMX and whose /dev/cpu/N/{msr,cpuid} and /sys are
# this guest's own. QEMU's TCG cannot offer VMX (it filters CPUID.01H:ECX.VMX), so on
# the guest's own root /proc/cpuinfo settles -EOPNOTSUPP before any MSR matters; here
# the MSRs decide, and every errno comes from this kernel's msr and cpuid drivers.
make_vmx_root() {
  local r=/tmp/vmxroot c n
  rm -rf "$r"; mkdir -p "$r/proc/sys" "$r/dev/cpu"
  ln -s /sys "$r/sys"
  ln -s /proc/sys/kernel "$r/proc/sys/kernel"
  sed -E 's/^(flags[[:space:]]*:.*)$/\1 vmx/' /proc/cpuinfo >"$r/proc/cpuinfo"
  for c in /sys/devices/system/cpu/cpu[0-9]*; do
    n=${c##*/cpu}
    mkdir -p "$r/dev/cpu/$n"
    ln -s "/dev/cpu/$n/msr" "$r/dev/cpu/$n/msr"
    ln -s "/dev/cpu/$n/cpuid" "$r/dev/cpu/$n/cpuid"
  done
  chmod -R a+rX "$r"
}
"""

# Reads MSRs 0x3a (IA32_FEATURE_CONTROL) and 0x480 (IA32_VMX_BASIC) on every
# online CPU through /dev/cpu/N/msr.
MSR_PY = r"""
import errno, glob, os, struct
def read(fd, msr):
    try:
        data = os.pread(fd, 8, msr)
    except OSError as e:
        return errno.errorcode[e.errno]
    return "%#018x" % struct.unpack("<Q", data)[0] if len(data) == 8 else "SHORT"
for path in sorted(glob.glob("/dev/cpu/*/msr"), key=lambda p: int(p.split("/")[3])):
    cpu = path.split("/")[3]
    fd = os.open(path, os.O_RDONLY)
    print(cpu, read(fd, 0x3a), read(fd, 0x480))
    os.close(fd)
"""

# What an offlined CPU's msr device gives, and that it comes back.
OFFLINE_PY = r"""
import errno, os
fd = os.open("/dev/cpu/3/msr", os.O_RDONLY)
with open("/sys/devices/system/cpu/cpu3/online", "w") as f:
    f.write("0")
print("online", open("/sys/devices/system/cpu/online").read().strip())
print("node1", open("/sys/devices/system/node/node1/cpulist").read().strip())
print("devnode", os.path.exists("/dev/cpu/3/msr"))
try:
    os.pread(fd, 8, 0x3a)
    print("read ok")
except OSError as e:
    print("read", errno.errorcode[e.errno])
with open("/sys/devices/system/cpu/cpu3/online", "w") as f:
    f.write("1")
print("online_again", open("/sys/devices/system/cpu/online").read().strip())
print("read_again", len(os.pread(fd, 8, 0x3a)))
"""

# vmxprobe/host/mempolicy.py alone, loaded by path.
NUMA_PY = r"""
import ctypes, errno, importlib.util, mmap, os
spec = importlib.util.spec_from_file_location("numa", os.environ["VM_REPO"] + "/vmxprobe/host/mempolicy.py")
numa = importlib.util.module_from_spec(spec)
spec.loader.exec_module(numa)
print("available", numa.numa_available())
for node in (0, 1, 63):
    m = mmap.mmap(-1, 4096)
    c = ctypes.c_char.from_buffer(m)
    addr = ctypes.addressof(c)
    try:
        numa.bind_to_node(addr, 4096, node)
    except OSError as e:
        print("bind", node, errno.errorcode[e.errno])
    else:
        m[0] = 1
        print("bind", node, "ok", numa.node_of_address(addr), numa.nodes_of_pages([addr]))
    del c
    m.close()
"""

UNPRIV_PY = r"""
import errno, os
print("uid", os.getuid())
for dev in ("msr", "cpuid"):
    try:
        os.open("/dev/cpu/0/" + dev, os.O_RDONLY)
        print(dev, "open ok")
    except OSError as e:
        print(dev, "open", errno.errorcode[e.errno])
"""

NORAWIO_PY = r"""
import errno, os
caps = [l for l in open("/proc/self/status") if l.startswith("CapEff")][0].split()[1]
print("uid", os.getuid(), "cap_sys_rawio", bool(int(caps, 16) >> 17 & 1))
try:
    os.open("/dev/cpu/0/msr", os.O_RDONLY)
    print("msr open ok")
except OSError as e:
    print("msr open", errno.errorcode[e.errno])
"""

# A second kernel interface on the same question: vmxprobe's own materialisation of
# this machine's plan, then /proc/self/numa_maps for each page's mapping, which shows
# the policy the kernel holds for it (bind:N) and the node of its page (N<n>=1).
NUMA_MAPS_PY = r"""
from vmxprobe.host.readings import read_host
from vmxprobe.host.sources import LiveHost
from vmxprobe.kernel.numa import cpu_to_node
from vmxprobe.kernel.pages import Placement, materialize
from vmxprobe.kernel.root_vmcs import build_plan
from vmxprobe.kernel.verdict import judge
scan = read_host(LiveHost("/"))
plan = build_plan(scan.topology, cpu_to_node(scan.topology), judge(scan).revision_id)
placement = Placement.for_source(True)
import bisect
with materialize(plan, place=placement.place) as m:
    starts, fields = [], []
    for line in open("/proc/self/numa_maps"):
        addr, _, rest = line.partition(" ")
        starts.append(int(addr, 16))
        fields.append(rest.split())
    for page in plan.pages:
        # Neighbouring pages bound to one node may share a mapping (the kernel merges
        # them): the line of the mapping that starts at or below the page is its own.
        f = fields[bisect.bisect_right(starts, m.address(page.cpu)) - 1]
        nodes = [x for x in f if x[0] == "N" and "=" in x]
        print(page.cpu, page.node, page.serving_node, f[0], " ".join(nodes))
"""


def py(name: str, code: str, prefix: str = "") -> str:
    return f"echo '@@ {name}'\n{prefix}\"$VM_GUEST_PYTHON\" - <<'PY'\n{code}\nPY\n"


# --- boot 1: two nodes of two CPUs -----------------------------------------------------

TWO_NODES = ("1G,cpus=0-1", "1G,cpus=2-3")

TWO_NODE_SCRIPT = (
    PRELUDE
    + r"""
echo '@@ nodes'
for n in /sys/devices/system/node/node[0-9]*; do
  echo "$(basename $n) $(cat $n/cpulist) | $(cat $n/distance)"
done
echo '@@ has_memory'; cat /sys/devices/system/node/has_memory
echo '@@ cpus'; cat /sys/devices/system/cpu/possible /sys/devices/system/cpu/present
echo '@@ cpuinfo'
grep -m1 '^vendor_id' /proc/cpuinfo
grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -x -e vmx -e svm -e hypervisor | sort | tr '\n' ' '; echo
echo '@@ modules_before'
test -e /dev/cpu/0/msr && echo "msr present" || echo "msr absent"
test -e /dev/cpu/0/cpuid && echo "cpuid present" || echo "cpuid absent"

make_vmx_root

# No msr driver (ENOENT): the guest's own root, then the root where the MSRs decide.
run nomsr-live $VMXPROBE scan --format json
run nomsr-vmxroot $VMXPROBE scan --root /tmp/vmxroot
run nomsr-vmxroot-json $VMXPROBE scan --root /tmp/vmxroot --format json

echo '@@ modprobe'
modprobe msr; echo "msr rc $?"
modprobe cpuid; echo "cpuid rc $?"
"""
    + py("msr", MSR_PY)
    + py("unpriv", UNPRIV_PY, "$NOBODY ")
    + r"""
# An unprivileged user (EACCES: the device nodes are mode 0600).
run user-live $NOBODY $VMXPROBE scan --format json
run user-vmxroot $NOBODY $VMXPROBE scan --root /tmp/vmxroot
run user-vmxroot-json $NOBODY $VMXPROBE scan --root /tmp/vmxroot --format json

# Root without CAP_SYS_RAWIO (EPERM from msr_open()). The cpuid driver asks for no
# capability and would show CPUID without VMX, so it is unloaded for these runs.
rmmod cpuid
"""
    + py("norawio", NORAWIO_PY, "$NORAWIO ")
    + r"""
run norawio-vmxroot $NORAWIO $VMXPROBE scan --root /tmp/vmxroot
run norawio-vmxroot-json $NORAWIO $VMXPROBE scan --root /tmp/vmxroot --format json
modprobe cpuid

# The bar: a live scan, every page bound and found by the kernel on its node.
run live-json $VMXPROBE scan --format json
run live-text $VMXPROBE scan
oracle oracle-live
"""
    + py("numa_maps", NUMA_MAPS_PY)
    + py("offline", OFFLINE_PY)
    + r"""
# A CPU taken offline before the scan: planned, reported, not probed.
echo 0 > /sys/devices/system/cpu/cpu3/online
run offline-json $VMXPROBE scan --format json
run offline-text $VMXPROBE scan
oracle oracle-offline
echo 1 > /sys/devices/system/cpu/cpu3/online
"""
    + py("numa", NUMA_PY)
    + r"""
echo '@@ writeback'
echo "from guest" > "$VM_OUTDIR/written-in-guest"; echo "outdir rc $?"
touch "$VM_REPO/.written-in-guest" 2>/dev/null; echo "repo rc $?"
echo '@@ end'
"""
)

# --- boot 2: a memoryless node, and more possible than present CPUs -----------------------

# Node 1 has CPUs 1-2 and no memory; it is nearer to node 2 (15) than to node 0 (30),
# so its pages come from node 2, not from the lowest node with memory. CPUs 4-7 are
# possible but not present (QEMU maxcpus=8); their firmware nodes are listed too.
MEMORYLESS = ("1G,cpus=0,cpus=4", "0,cpus=1-2,cpus=5-6", "1G,cpus=3,cpus=7")
MEMORYLESS_DISTANCES = ("0,1=30", "0,2=20", "1,2=15")
MEMORYLESS_QEMU_OPTS = "-smp cpus=4,maxcpus=8"
FIXTURE_NAME = "qemu-tcg-memoryless-node"

MEMORYLESS_SCRIPT = (
    PRELUDE
    + r"""
echo '@@ nodes'
for n in /sys/devices/system/node/node[0-9]*; do
  echo "$(basename $n) $(cat $n/cpulist) | $(cat $n/distance) | $(awk '/MemTotal/ {print $4}' $n/meminfo)"
done
echo '@@ node_masks'
for f in possible online has_cpu has_memory has_normal_memory; do
  echo "$f $(cat /sys/devices/system/node/$f)"
done
echo '@@ cpu_masks'
for f in possible present online offline; do echo "$f $(cat /sys/devices/system/cpu/$f)"; done
echo '@@ cpu_dirs'
ls -d /sys/devices/system/cpu/cpu[0-9]* | xargs -n1 basename
echo '@@ msr_devs'
modprobe msr && modprobe cpuid && ls /dev/cpu
"""
    + py("msr", MSR_PY)
    + r"""
run record $VMXPROBE record -o "$VM_OUTDIR/recorded.json" --name """
    + FIXTURE_NAME
    + r""" \
  --description "recorded in a QEMU TCG guest"
run live-json $VMXPROBE scan --format json
run live-text $VMXPROBE scan
run replay-json $VMXPROBE scan --fixture "$VM_OUTDIR/recorded.json" --format json
run replay-text $VMXPROBE scan --fixture "$VM_OUTDIR/recorded.json"
oracle oracle-live
dump_acpi
"""
    + py("numa_maps", NUMA_MAPS_PY)
    + py("numa", NUMA_PY)
    + r"""
echo '@@ end'
"""
)


# --- boot 3: four nodes, absent CPUs left to QEMU's default node ---------------------------

# QEMU node 0: CPU 0 and 1G below 4G. Node 1: 1G below 4G and no CPU (Linux numbers it 3:
# it meets the domain only among the SRAT's memory entries, after the CPU domains). Node
# 2 (Linux 1): CPU 1 and no memory. Node 3 (Linux 2): CPU 2 and 1G above 4G, all of it
# ZONE_MOVABLE: movablecore=2G asks for 2G of movable memory, and memory below 4G
# (ZONE_DMA32) can never be movable (find_zone_movable_pfns_for_nodes()), so the kernel
# core is all below 4G. CPUs 3-4 are possible but in no -numa list: QEMU gives them its
# default node 0 in the SRAT (and warns that partial NUMA mappings are deprecated).
# Distances are asymmetric: from the memoryless node the nearest memory is the movable
# node (15), then the CPU-less one (30), then node 0 (40), while node 0 is nearest *to* it
# (15): reading a distance file as a column instead of a row gives another answer.
FOUR_NODES = ("1G,cpus=0", "1G", "0,cpus=1", "1G,cpus=2")
FOUR_NODE_DISTANCES = (
    "0,1=20",
    "1,0=20",
    "0,2=15",
    "2,0=40",
    "0,3=20",
    "3,0=25",
    "1,2=40",
    "2,1=30",
    "1,3=30",
    "3,1=20",
    "2,3=15",
    "3,2=45",
)
FOUR_NODE_QEMU_OPTS = "-smp cpus=3,maxcpus=5"
FOUR_NODE_APPEND = ("movablecore=2G",)

# --- boot 4: no NUMA at all (no SRAT), absent CPUs ------------------------------------------

NO_NUMA_QEMU_OPTS = "-smp cpus=2,maxcpus=4"

# What both of these boots report: the layout, the kernel's answer, vmxprobe's, the tables.
FACTS_SCRIPT = (
    PRELUDE
    + r"""
echo '@@ node_masks'
for f in possible online has_cpu has_memory has_normal_memory; do
  echo "$f $(cat /sys/devices/system/node/$f)"
done
echo '@@ cpu_masks'
for f in possible present online; do echo "$f $(cat /sys/devices/system/cpu/$f)"; done
echo '@@ nodes'
for n in /sys/devices/system/node/node[0-9]*; do
  echo "$(basename $n) $(cat $n/cpulist) | $(cat $n/distance)"
done
echo '@@ zones'
awk '/^Node/ {node=$2; zone=$4} /^ +present/ && $2 > 0 {print "node" node, zone}' /proc/zoneinfo \
  | tr -d ,
oracle oracle-live
run live-json $VMXPROBE scan --format json
dump_acpi
echo '@@ end'
"""
)
