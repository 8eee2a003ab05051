#!/usr/bin/env bash
# Run the test suite on both ends of the Python range pyproject.toml declares
# (requires-python >= 3.9; the newest release tried is 3.13), each in its own venv with
# the newest click pip resolves for it (8.1 on 3.9, 8.x on 3.13). The tiers that boot a
# kernel (vm, bochs) are left to the main run: they test the kernel, not the interpreter.
#
#   scripts/python-ends.sh [PYTEST ARGS...]
#
# An interpreter is looked for in pyenv (PYENV_ROOT/versions/X.Y.*) and on PATH
# (pythonX.Y). Under CI=true a missing end is an error; elsewhere it is skipped with a
# note.
set -euo pipefail
cd "$(dirname "$0")/.."
ENDS=(3.9 3.13)
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/vmxprobe"
PYENV_ROOT="${PYENV_ROOT:-$HOME/.pyenv}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
ci() { case "${CI:-}" in 1 | true | yes) return 0 ;; *) return 1 ;; esac }

find_python() {
	local want=$1 found=""
	for dir in "$PYENV_ROOT"/versions/"$want".*; do
		[ -x "$dir/bin/python$want" ] && found="$dir/bin/python$want"
	done
	[ -n "$found" ] || found=$(command -v "python$want" || true)
	echo "$found"
}

status=0
for want in "${ENDS[@]}"; do
	python=$(find_python "$want")
	if [ -z "$python" ]; then
		if ci; then
			echo "python-ends: no Python $want (pyenv install $want, or apt-get install python$want)" >&2
			status=1
		else
			echo "python-ends: no Python $want here; skipped" >&2
		fi
		continue
	fi
	venv="$CACHE/py$want"
	if [ ! -x "$venv/bin/python" ]; then
		"$python" -m venv "$venv"
	fi
	"$venv/bin/python" -m pip install -q --upgrade -e '.[test,fuse]'
	echo "== Python $("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])')," \
		"click $("$venv/bin/python" -c 'import click, importlib.metadata as m; print(m.version("click"))')"
	if ! "$venv/bin/python" -m pytest -q -p no:cacheprovider -m 'not vm and not bochs' "$@"; then
		status=1
	fi
done
exit $status
