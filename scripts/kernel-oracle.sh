#!/usr/bin/env bash
# Build tests/oracle/root_vmcs_oracle.ko, the kernel's own answer to "on which node is
# each possible CPU's root VMCS page allocated" (see tests/oracle/root_vmcs_oracle.c).
#
#   bash scripts/kernel-oracle.sh build DIR   build DIR/root_vmcs_oracle.ko
#   bash scripts/kernel-oracle.sh deps        install what `build` needs, build nothing
#
# The module is built for the Debian kernel installed in /boot that the VM tests boot:
# the newest /boot/vmlinuz-VERSION with /lib/modules/VERSION/kernel (the same choice as
# tests/vm/harness.py find_kernel()), or the one $VMXPROBE_VM_KERNEL names. That is
# usually not the kernel this machine runs. The build tree is /lib/modules/VERSION/build
# from Debian's linux-headers-VERSION, installed when missing (with make and gcc);
# $ORACLE_KDIR names another build tree and skips the install.
#
# Load it in a guest running that kernel:  insmod DIR/root_vmcs_oracle.ko
#                                           cat /proc/root_vmcs_oracle   # cpu node nid
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
src="$here/../tests/oracle"
# shellcheck source=scripts/apt-ensure.sh
. "$here/apt-ensure.sh"

die() {
    echo "kernel-oracle: $*" >&2
    exit 1
}

usage() {
    echo "usage: bash scripts/kernel-oracle.sh build DIR | deps" >&2
    exit 2
}

# The kernel version to build for, as harness.find_kernel() chooses the kernel to boot.
kernel_version() {
    local image ver best=""
    if [ -n "${VMXPROBE_VM_KERNEL:-}" ]; then
        [ -f "$VMXPROBE_VM_KERNEL" ] || die "VMXPROBE_VM_KERNEL=$VMXPROBE_VM_KERNEL is not a file"
        ver="$(basename "$VMXPROBE_VM_KERNEL")"
        [ "${ver#vmlinuz-}" != "$ver" ] \
            || die "VMXPROBE_VM_KERNEL=$VMXPROBE_VM_KERNEL is not named vmlinuz-VERSION; set ORACLE_KDIR to its build tree"
        echo "${ver#vmlinuz-}"
        return
    fi
    for image in /boot/vmlinuz-*; do
        [ -e "$image" ] || continue
        ver="${image#/boot/vmlinuz-}"
        [ -d "/lib/modules/$ver/kernel" ] && best="$best$ver"$'\n'
    done
    best="$(printf '%s' "$best" | sort -V | tail -n1)"
    [ -n "$best" ] || die "no /boot/vmlinuz-VERSION with /lib/modules/VERSION/kernel; install one with: apt-get install linux-image-amd64 (scripts/vm-setup.sh)"
    echo "$best"
}

# Install make, gcc and linux-headers-VERSION unless the build tree is already there.
ensure_build_tree() {
    local ver=$1
    if [ -n "${ORACLE_KDIR:-}" ]; then
        [ -f "$ORACLE_KDIR/Makefile" ] || die "ORACLE_KDIR=$ORACLE_KDIR has no Makefile: not a kernel build tree"
        command -v make >/dev/null || die "make not found; install it with: apt-get install make"
        return
    fi
    if [ ! -f "/lib/modules/$ver/build/Makefile" ] || ! command -v make >/dev/null \
        || ! command -v gcc >/dev/null; then
        command -v apt-get >/dev/null \
            || die "no build tree /lib/modules/$ver/build and no apt-get to install linux-headers-$ver"
        if ! apt-cache show "linux-headers-$ver" >/dev/null 2>&1; then
            # The index may just be stale on a fresh machine.
            DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get update -q >&2 || true
            apt-cache show "linux-headers-$ver" >/dev/null 2>&1 \
                || die "the apt sources have no linux-headers-$ver for the kernel in /boot; install a kernel and headers that match with: apt-get install linux-image-amd64 linux-headers-amd64"
        fi
        apt_ensure kernel-oracle make gcc "linux-headers-$ver" >&2
    fi
    [ -f "/lib/modules/$ver/build/Makefile" ] \
        || die "linux-headers-$ver is installed but /lib/modules/$ver/build/Makefile is missing"
}

SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo -E)

[ $# -ge 1 ] || usage
case "$1" in
build)
    [ $# -eq 2 ] || usage
    out=$2
    ;;
deps)
    [ $# -eq 1 ] || usage
    ;;
*)
    usage
    ;;
esac

if [ -n "${ORACLE_KDIR:-}" ]; then
    # Another build tree: its own kernel.release names the version, /boot is not asked.
    ver="$(cat "$ORACLE_KDIR/include/config/kernel.release" 2>/dev/null || echo "of $ORACLE_KDIR")"
else
    ver="$(kernel_version)"
fi
ensure_build_tree "$ver"
if [ "$1" = deps ]; then
    echo "kernel-oracle: ready to build for $ver"
    exit 0
fi

kdir="${ORACLE_KDIR:-/lib/modules/$ver/build}"
mkdir -p "$out" || die "cannot create $out"
out="$(cd "$out" && pwd)"
# Kbuild writes its objects next to the sources: build a copy, so that the checkout
# (read-only inside the VM guests) stays clean.
cp "$src/root_vmcs_oracle.c" "$src/Kbuild" "$out/"
rm -f "$out/root_vmcs_oracle.ko"
if ! make -C "$kdir" M="$out" modules >"$out/build.log" 2>&1; then
    tail -n 20 "$out/build.log" >&2
    die "make -C $kdir M=$out modules failed (full log: $out/build.log)"
fi
[ -f "$out/root_vmcs_oracle.ko" ] || die "make succeeded but left no $out/root_vmcs_oracle.ko (log: $out/build.log)"
magic="$(modinfo -F vermagic "$out/root_vmcs_oracle.ko" 2>/dev/null || true)"
if [ -z "${ORACLE_KDIR:-}" ] && [ "${magic%% *}" != "$ver" ]; then
    die "$out/root_vmcs_oracle.ko has vermagic '$magic', not $ver: the build tree does not match the kernel"
fi
echo "kernel-oracle: built $out/root_vmcs_oracle.ko for ${magic%% *}"
