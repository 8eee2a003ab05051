# shellcheck shell=bash
# Sourced by the setup scripts: apt_ensure TAG PACKAGE... installs the Debian packages
# that are not installed yet, non-interactively, with sudo when not root.
apt_ensure() {
    local tag=$1; shift
    local sudo=() missing=() pkg
    [ "$(id -u)" -eq 0 ] || sudo=(sudo -E)
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$' \
            || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "$tag: apt packages present: $*"
        return 0
    fi
    echo "$tag: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
}
