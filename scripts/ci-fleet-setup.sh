#!/usr/bin/env bash
# Installs the external programs the fleet, export and deploy tests drive, on Debian 12
# (bookworm) or later. Idempotent and non-interactive: what is already there is left
# alone, and apt is only asked for what is missing.
#
#   prometheus-node-exporter  tests/test_export.py scrapes it (Debian's 1.5.0)
#   jq                        benchmarks/fleet.py compares against `jq -s`
#   ansible-core              tests/test_deploy.py runs deploy/ansible/ (Debian's 2.14)
#   systemd                   systemd-analyze, for `verify` of deploy/systemd/
#   PyYAML, jsonschema        for the Python that runs the tests (PYTHON, default
#                             python3), from PyPI with pip: Debian's python3-yaml
#                             serves only /usr/bin/python3, which may not be it
#
# Installing prometheus-node-exporter on a machine that runs systemd also starts it on
# :9100; the tests start their own on a free port and do not use that one.
set -euo pipefail

PYTHON=${PYTHON:-python3}
SUDO=()
if [ "$(id -u)" != 0 ]; then
    SUDO=(sudo)
fi

missing=()
need() {  # need COMMAND PACKAGE
    if ! command -v "$1" >/dev/null 2>&1; then
        missing+=("$2")
    fi
}
need prometheus-node-exporter prometheus-node-exporter
need jq jq
need ansible-playbook ansible-core
need systemd-analyze systemd

if [ "${#missing[@]}" -gt 0 ]; then
    echo "ci-fleet-setup: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq
    # --no-install-recommends: node_exporter's recommends pull in smartmontools and
    # friends, and systemd's would pull in more than systemd-analyze needs.
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

pymissing=()
"$PYTHON" -c 'import yaml' 2>/dev/null || pymissing+=(pyyaml)
"$PYTHON" -c 'import jsonschema' 2>/dev/null || pymissing+=(jsonschema)
if [ "${#pymissing[@]}" -gt 0 ]; then
    echo "ci-fleet-setup: $PYTHON -m pip install ${pymissing[*]}"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$PYTHON" -m pip install -q "${pymissing[@]}"
fi

for cmd in prometheus-node-exporter jq ansible-playbook systemd-analyze; do
    command -v "$cmd" >/dev/null 2>&1 || { echo "ci-fleet-setup: $cmd still missing" >&2; exit 1; }
done
"$PYTHON" -c 'import yaml, jsonschema'
echo "ci-fleet-setup: ready"
