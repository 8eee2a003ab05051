#!/usr/bin/env bash
# Install what tests/vm needs to boot a Debian kernel under QEMU (TCG, no KVM):
#   qemu-system-x86   QEMU
#   linux-image-amd64 the guest kernel (/boot/vmlinuz-*) and its modules (msr.ko)
#   busybox-static    virtme-ng builds its initramfs from a static busybox
#   python3-click     vmxprobe's one dependency for /usr/bin/python3, which the guest
#                     (sharing this root file system) runs as root and as nobody
#   virtme-ng (PyPI)  the vng launcher, installed for $PYTHON (default python3)
# Idempotent and non-interactive; does nothing when all is already present.
# Debian/Ubuntu only. Run as root or with sudo available.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
VIRTME_NG_SPEC="${VIRTME_NG_SPEC:-virtme-ng==1.42}"
APT_PACKAGES=(qemu-system-x86 linux-image-amd64 busybox-static python3-click)

export DEBIAN_FRONTEND=noninteractive

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo -E)
fi

# shellcheck source=scripts/apt-ensure.sh
. "$(dirname "$0")/apt-ensure.sh"
apt_ensure vm-setup "${APT_PACKAGES[@]}"

if "$PYTHON" -c 'import virtme_ng' 2>/dev/null; then
    echo "vm-setup: virtme-ng present for $PYTHON"
else
    echo "vm-setup: installing $VIRTME_NG_SPEC for $PYTHON"
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install -q --disable-pip-version-check "$VIRTME_NG_SPEC"
fi

kernel="$(find /boot -maxdepth 1 -name 'vmlinuz-*' 2>/dev/null | sort -V | tail -n1 || true)"
if [ -z "$kernel" ]; then
    echo "vm-setup: no /boot/vmlinuz-* after installing linux-image-amd64" >&2
    exit 1
fi
if [ ! -r "$kernel" ]; then
    # Ubuntu installs kernels mode 0600; the tests read the image as the current user.
    "${SUDO[@]}" chmod 0644 "$kernel"
fi

vng_bin="$(dirname "$("$PYTHON" -c 'import sys; print(sys.executable)')")/vng"
[ -x "$vng_bin" ] || vng_bin="$(command -v vng || true)"
echo "vm-setup: kernel $kernel"
echo "vm-setup: $(qemu-system-x86_64 --version | head -n1)"
echo "vm-setup: $("$vng_bin" --version 2>&1 | head -n1) ($vng_bin)"
echo "vm-setup: guest interpreter $(/usr/bin/python3 -c 'import sys, click; print(sys.executable, sys.version.split()[0], "with click", click.__version__)')"
