#!/usr/bin/env bash
# Install what `vmxprobe fixture mount` and tests/test_devfs.py need:
#   fuse3          libfuse3.so.3 and fusermount3 (mount/unmount helper)
#   libfuse3-dev   headers and pkg-config file, for building bindings from source
#   pkg-config     finds libfuse3 for such builds
#   msr-tools      rdmsr/wrmsr, the other tool the tests replay a fixture to
#   util-linux     unshare and mount, for the private bind mount over /dev/cpu
#   mfusepy (PyPI) the FUSE binding, via the project's [fuse] extra
# Idempotent and non-interactive; does nothing when all is already present.
# Debian/Ubuntu only. Run as root or with sudo available.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
APT_PACKAGES=(fuse3 libfuse3-dev pkg-config msr-tools util-linux)

export DEBIAN_FRONTEND=noninteractive

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo -E)
fi

# shellcheck source=scripts/apt-ensure.sh
. "$(dirname "$0")/apt-ensure.sh"
apt_ensure ci-fuse-setup "${APT_PACKAGES[@]}"

# The binding's version range lives in pyproject.toml ([project.optional-dependencies]
# fuse); read it from there so this script and `pip install vmxprobe[fuse]` agree.
spec="$("$PYTHON" - "$REPO/pyproject.toml" <<'EOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
m = re.search(r'^fuse\s*=\s*\["([^"]+)"\]', text, re.M)
print(m.group(1) if m else "mfusepy")
EOF
)"
# pip leaves a satisfying version alone, and upgrades one outside the range.
PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install -q --disable-pip-version-check "$spec"

if [ ! -e /dev/fuse ]; then
    # A kernel with FUSE as a module: load it. In a container, /dev/fuse must be
    # passed in (--device /dev/fuse); the mount tests skip, saying so, without it.
    "${SUDO[@]}" modprobe fuse 2>/dev/null || true
fi
echo "ci-fuse-setup: $(fusermount3 --version 2>&1 | head -n1); $(dpkg-query -W -f='msr-tools ${Version}' msr-tools)"
echo "ci-fuse-setup: $("$PYTHON" -c 'import importlib.metadata as m; print("mfusepy", m.version("mfusepy"))')"
echo "ci-fuse-setup: /dev/fuse $([ -e /dev/fuse ] && echo present || echo MISSING)"
