#!/usr/bin/env bash
# Install what the bochs tier (tests/bochs, docs/bochs.md) needs. The tier builds its
# fast kernel and boot image itself, cached (`python3 scripts/bochs_image.py` builds them
# ahead of time):
#   bochs bochsbios vgabios bochs-term   Bochs 2.7 with VMX and SMP, its BIOS and VGA BIOS
#   grub-pc-bin grub-common xorriso mtools   the BIOS-bootable ISO and the case floppies
#   lz4                                  compresses the initramfs
#   busybox-static python3-click         the initramfs' shell and vmxprobe's dependency
#   linux-image-amd64                    Debian's kernel, booted as it is by one case
#   linux-source-6.1 + build tools       the fast kernel (scripts/bochs-kernel.sh)
#   msr-tools                            rdmsr/wrmsr, to compare by hand (docs/bochs.md)
# Idempotent and non-interactive. Debian 12 only. Run as root or with sudo available.
set -euo pipefail
cd "$(dirname "$0")/.."
APT_PACKAGES=(bochs bochsbios vgabios bochs-term grub-pc-bin grub-common xorriso mtools
              busybox-static python3-click linux-image-amd64 msr-tools linux-source-6.1
              build-essential bc flex bison libelf-dev libssl-dev kmod file lz4)
# shellcheck source=scripts/apt-ensure.sh
. scripts/apt-ensure.sh
apt_ensure bochs-setup "${APT_PACKAGES[@]}"
echo "bochs-setup: $(bochs --help 2>&1 | grep -m1 -o 'Bochs x86 Emulator [^ ]*')"
