# Shared set-up for scripts/demo and scripts/test: system packages and the project venv.
# Sourced, not run. Installs only what is missing, so repeated runs are quick.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root to run: $*" >&2; return 1; fi
}

apt_install() {
    # Install the Debian packages named in "$@" that are not installed yet.
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing Debian packages: ${missing[*]}"
    apt_update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}"
}

apt_update() {
    # Once per run: package lists are also what `apt-get download` (the lab's kernel) reads.
    if [ -z "${DRAGONFLY_APT_UPDATED:-}" ]; then
        as_root apt-get update -qq
        export DRAGONFLY_APT_UPDATED=1
    fi
}

pick_python() {
    # The zipapp is built for and runs on CPython 3.11 (Debian 12's python3).
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null && "$candidate" -c \
            'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            PYTHON="$(command -v "$candidate")"; return 0
        fi
    done
    echo "Dragonfly needs CPython 3.11 (Debian 12's python3); none found" >&2
    return 1
}

ensure_venv() {
    # $1: pip extras, e.g. "[test]"
    pick_python
    if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
        apt_install python3-venv
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)$1"
    if [ ! -e "$stamp" ]; then
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT$1"
        touch "$stamp"
    fi
}
