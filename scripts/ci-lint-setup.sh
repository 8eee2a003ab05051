#!/usr/bin/env bash
# Install the checkers the lint tests drive, on Debian 12 (bookworm) or later:
#   Debian shellcheck    tests/test_shellcheck.py, over every shell script
#   Debian prometheus    for promtool only: tests/test_export.py checks the textfile
#                        (Debian's 2.42); the server it brings is kept from starting
#   PyPI ansible-lint    tests/test_deploy.py at the moderate profile
#   PyPI kubernetes-validate  tests/test_deploy.py on deploy/kubernetes/ (it bundles
#                        the API schemas, so it works offline)
# systemd-analyze (verify, security) comes from scripts/ci-fleet-setup.sh.
#
# The two PyPI tools get a virtualenv of their own, VMXPROBE_LINT_VENV (default
# ~/.cache/vmxprobe/lint-venv; the tests look there too): ansible-lint brings its own
# ansible-core, which must not replace the one tests/test_deploy.py runs the playbook
# with, nor mix its dependencies into the test interpreter's.
# Idempotent and non-interactive; does nothing when all is already present.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
# ~ rather than $HOME: bash falls back to the password database when HOME is unset.
VENV=${VMXPROBE_LINT_VENV:-~/.cache/vmxprobe/lint-venv}
# Pinned: a new release of a checker may add rules, and a red build should come from a
# change here, not from a release elsewhere. Raise them on purpose.
LINT_PINS=(ansible-lint==26.10.1 ansible-core==2.19.14 kubernetes-validate==1.37.0)

export DEBIAN_FRONTEND=noninteractive
SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo -E)

# shellcheck source=scripts/apt-ensure.sh
. "$(dirname "$0")/apt-ensure.sh"
apt_ensure ci-lint-setup shellcheck

if ! command -v promtool >/dev/null 2>&1; then
    # Debian ships promtool only inside the server's package, whose postinst starts
    # the server (on :9090) and enables it at boot. A policy-rc.d that answers 101
    # ("action forbidden") keeps invoke-rc.d and deb-systemd-invoke from starting
    # it during this install; one the machine already has is left in place.
    policy=/usr/sbin/policy-rc.d
    ours=
    if [ ! -e "$policy" ]; then
        ours=1
        trap '"${SUDO[@]}" rm -f "$policy"' EXIT
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 0755 "$policy"
    fi
    apt_ensure ci-lint-setup prometheus
    if [ -n "$ours" ]; then
        "${SUDO[@]}" rm -f "$policy"
        trap - EXIT
    fi
    if [ -d /run/systemd/system ]; then
        "${SUDO[@]}" systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
fi

if ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
    # Debian's python3 keeps ensurepip, which venv needs, in python3-venv.
    apt_ensure ci-lint-setup python3-venv
fi
pins_met() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "${LINT_PINS[@]}" <<'EOF'
import importlib.metadata as m, sys
sys.exit(any(m.version(name) != version
             for name, version in (pin.split("==") for pin in sys.argv[1:])))
EOF
}
if pins_met 2>/dev/null; then
    echo "ci-lint-setup: $VENV has ${LINT_PINS[*]}"
else
    echo "ci-lint-setup: installing ${LINT_PINS[*]} into $VENV"
    "$PYTHON" -m venv "$VENV"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -q "${LINT_PINS[@]}"
    pins_met
fi

echo "ci-lint-setup: $(shellcheck --version | sed -n 's/^version: /shellcheck /p')"
echo "ci-lint-setup: $(promtool --version 2>&1 | head -n1)"
echo "ci-lint-setup: $("$VENV/bin/ansible-lint" --version --nocolor 2>/dev/null | head -n1)"
echo "ci-lint-setup: kubernetes-validate $("$VENV/bin/kubernetes-validate" --version 2>&1 | head -n1)"
