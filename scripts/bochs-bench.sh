#!/usr/bin/env bash
# Time the bochs tier against its budget (15 minutes wall on two cores, kernel build
# included when cold): wall and CPU time of `python3 -m pytest -m bochs`, with the load
# average before and after (the machine may be shared, which inflates wall time only).
#   scripts/bochs-bench.sh [--cold] [PYTEST ARGS...]   --cold first empties the cache
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${VMXPROBE_BOCHS_CACHE:-$HOME/.cache/vmxprobe-bochs}"
if [ "${1:-}" = --cold ]; then
    rm -rf "$cache"
    echo "bochs-bench: cache $cache emptied"
    shift
fi
echo "bochs-bench: load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s)
status=0
/usr/bin/time -f "bochs-bench: %e s wall, %U s user + %S s system CPU (children included)" \
    env PYTHONPATH="$PWD" python3 -m pytest -m bochs -q "$@" || status=$?
echo "bochs-bench: $(( $(date +%s) - start )) s wall in all; budget 900 s"
echo "bochs-bench: load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$status"
