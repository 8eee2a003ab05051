#!/usr/bin/env bash
# Install everything the test suite needs on a Debian machine (idempotent,
# non-interactive; uses sudo when not root), then vmxprobe itself in editable mode:
#   - FUSE device replay and msr-tools' rdmsr (scripts/ci-fuse-setup.sh)
#   - node_exporter, jq, ansible-core, systemd-analyze, PyYAML (scripts/ci-fleet-setup.sh)
#   - QEMU, Debian's kernel and virtme-ng for the `vm` tests (scripts/vm-setup.sh)
#   - make, gcc and the linux-headers for that kernel, to build the oracle module the
#     `vm` tests load (scripts/kernel-oracle.sh deps)
#   - shellcheck, promtool, ansible-lint, kubernetes-validate (scripts/ci-lint-setup.sh)
#   - Bochs, GRUB, linux-source-6.1 and its build tools for the `bochs` tests (scripts/bochs-setup.sh)
#   - strace, for the no-write check
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export PYTHON DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo -E)

"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends strace util-linux shellcheck >/dev/null
bash scripts/ci-fuse-setup.sh
bash scripts/ci-fleet-setup.sh
bash scripts/vm-setup.sh
bash scripts/kernel-oracle.sh deps
bash scripts/ci-lint-setup.sh
bash scripts/bochs-setup.sh
"$PYTHON" -m pip install -q -e '.[test,fuse,lint]'
