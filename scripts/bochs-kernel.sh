#!/usr/bin/env bash
# Build the bochs tier's fast kernel from Debian's linux-source-6.1: tinyconfig plus
# scripts/bochs-kernel.config, LZ4-compressed, msr/cpuid/kvm/kvm_intel as modules.
# Debian's own bzImage spends about a minute of an emulated boot decompressing XZ; this
# one reaches /init in seconds. The result is cached, keyed on its inputs:
#   bochs-kernel.sh [CACHE_DIR]   (default ${VMXPROBE_BOCHS_CACHE:-~/.cache/vmxprobe-bochs})
# prints the directory holding bzImage, release and lib/modules/<release>/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${1:-${VMXPROBE_BOCHS_CACHE:-$HOME/.cache/vmxprobe-bochs}}"
tarball=/usr/src/linux-source-6.1.tar.xz
fragment="$here/bochs-kernel.config"
if [ ! -r "$tarball" ]; then
    echo "bochs-kernel: $tarball missing (apt-get install linux-source-6.1; scripts/bochs-setup.sh)" >&2
    exit 1
fi
src_version="$(dpkg-query -W -f='${Version}' linux-source-6.1)"
key="$( { echo "$src_version"; gcc --version | head -n1; cat "$fragment" "$0"; } | sha256sum | cut -c1-16)"
out="$cache/kernel-$key"
if [ -f "$out/release" ] && [ -f "$out/bzImage" ]; then
    echo "$out"
    exit 0
fi
mkdir -p "$cache"
work="$(mktemp -d "$cache/kbuild.XXXXXX")"
trap 'rm -rf "$work"' EXIT
log="$work/build.log"
{
    echo "bochs-kernel: building linux-source-6.1 $src_version into $out"
    tar -xf "$tarball" -C "$work"
    src="$work/linux-source-6.1"
    make -C "$src" -s tinyconfig
    "$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$fragment"
    make -C "$src" -s olddefconfig
    # Every line of the fragment must have survived: a dependency that olddefconfig
    # dropped would build a kernel without what the tier tests.
    missing=0
    while IFS= read -r line; do
        case "$line" in
            CONFIG_*)
                grep -qx "$line" "$src/.config" \
                    || { echo "bochs-kernel: $line did not survive olddefconfig"; missing=1; } ;;
            "# CONFIG_"*" is not set")
                opt="${line#\# }"; opt="${opt%% *}"
                ! grep -q "^$opt=" "$src/.config" \
                    || { echo "bochs-kernel: $opt is still set after olddefconfig"; missing=1; } ;;
        esac
    done <"$fragment"
    [ "$missing" -eq 0 ]
    make -C "$src" -s -j"$(nproc)" bzImage modules
    stage="$work/out"
    mkdir -p "$stage"
    make -C "$src" -s INSTALL_MOD_PATH="$stage" modules_install
    cp "$src/arch/x86/boot/bzImage" "$stage/bzImage"
    cp "$src/.config" "$stage/config"
    make -C "$src" -s kernelrelease >"$stage/release"
} >"$log" 2>&1 || { tail -n 40 "$log" >&2; echo "bochs-kernel: build failed (log above)" >&2; exit 1; }
rm -rf "$out"
mv "$work/out" "$out"
echo "$out"
