# shellcheck shell=bash
# Shared helpers for scripts/test and scripts/dev. Source it; do not run it.
#
# Everything here is defined as functions (prefixed sb_) plus a few SB_*
# variables; nothing runs at source time except computing SB_ROOT.

SB_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SB_VENV="$SB_ROOT/.venv"
SB_STAMP="$SB_VENV/.switchboard-install-stamp"
# Locks live outside the work tree so they never show up in `git status`.
SB_LOCK_DIR="${TMPDIR:-/tmp}"

sb_say() { printf '== %s\n' "$*"; }
sb_warn() { printf 'warning: %s\n' "$*" >&2; }
sb_die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

sb_is_root() { [ "$(id -u)" -eq 0 ]; }
sb_is_ci() { [ "${CI:-}" = "true" ] || [ "${CI:-}" = "1" ]; }

sb_sha256() { sha256sum "$1" | cut -d' ' -f1; }

# Run "$@" while holding an exclusive lock named $1 (a word, not a path).
sb_with_lock() {
    local name="$1"
    shift
    local lockfile
    lockfile="$SB_LOCK_DIR/switchboard-$name.lock"
    (
        flock -w 900 9 || sb_die "timed out waiting for lock $lockfile"
        "$@"
    ) 9>"$lockfile"
}

# ---------------------------------------------------------------- python/venv

# Print the path of a Python >= 3.11 interpreter, or fail.
sb_find_python() {
    local cand path
    for cand in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
        [ -n "$cand" ] || continue
        path="$(command -v "$cand" 2>/dev/null)" || continue
        if "$path" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            printf '%s\n' "$path"
            return 0
        fi
    done
    sb_die "no Python >= 3.11 found (tried python3, python3.13, python3.12, python3.11; set PYTHON=...)"
}

_sb_create_venv() {
    local py
    py="$(sb_find_python)"
    sb_say "creating .venv with $py ($("$py" -c 'import sys; print(sys.version.split()[0])'))"
    if ! "$py" -m venv "$SB_VENV"; then
        # Debian's python3 lacks ensurepip unless python3-venv is installed.
        rm -rf "$SB_VENV"
        if sb_is_root && command -v apt-get >/dev/null 2>&1; then
            local ver
            ver="$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
            sb_apt_install "python${ver}-venv" || sb_apt_install python3-venv
            "$py" -m venv "$SB_VENV" || sb_die "could not create .venv"
        else
            sb_die "could not create .venv with $py (on Debian: apt-get install python3-venv)"
        fi
    fi
}

_sb_ensure_venv_locked() {
    local flavour="$1" extras=""
    [ "$flavour" = dev ] && extras="[dev]"
    if [ ! -x "$SB_VENV/bin/python" ] || ! "$SB_VENV/bin/python" -c 'import sys' 2>/dev/null; then
        rm -rf "$SB_VENV"
        _sb_create_venv
    fi
    # The stamp holds the hash of pyproject.toml and of the C kernel's source
    # (the install compiles it) and what was installed: "dev" (the server and
    # the test tools) covers "runtime" (the server alone).
    local want have="" have_flavour=""
    want="$(sb_sha256 "$SB_ROOT/pyproject.toml")-$(sb_sha256 "$SB_ROOT/app/core/_fir.c")"
    [ -f "$SB_STAMP" ] && read -r have have_flavour <"$SB_STAMP"
    if [ "$want" = "$have" ] && { [ "$have_flavour" = dev ] || [ "$have_flavour" = "$flavour" ]; }; then
        sb_say "installing: .venv up to date (pyproject.toml and the C kernel unchanged)"
        return 0
    fi
    sb_say "installing: pip install -e '.$extras'"
    rm -f "$SB_STAMP"
    local log="$SB_VENV/.switchboard-pip.log"
    # Output goes to a log (setuptools' editable-install banner is noise);
    # it is shown only if the install fails.
    if ! (
        cd "$SB_ROOT"
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
            "$SB_VENV/bin/python" -m pip install -q -e ".$extras"
    ) >"$log" 2>&1 </dev/null; then
        cat "$log" >&2
        sb_die "pip install -e '.$extras' failed"
    fi
    printf '%s %s\n' "$want" "$flavour" >"$SB_STAMP"
}

# Create .venv if missing and (re)install the project unless the stamp says
# pyproject.toml has not changed: `sb_ensure_venv runtime` installs what the
# server needs (scripts/dev), `sb_ensure_venv` (dev) the test tools too.
# Puts .venv/bin first on PATH. Safe to call from concurrent runs (serialised
# by a lock).
sb_ensure_venv() {
    local key flavour="${1:-dev}"
    key="venv-$(printf '%s' "$SB_ROOT" | sha256sum | cut -c1-12)"
    sb_with_lock "$key" _sb_ensure_venv_locked "$flavour"
    export VIRTUAL_ENV="$SB_VENV"
    export PATH="$SB_VENV/bin:$PATH"
}

# ------------------------------------------------------------------------ apt

SB_APT_UPDATED=0

_sb_apt_install_locked() {
    local added_policy=0 rc=0
    # Keep package postinst scripts from starting system-wide services
    # (a redis on 6379, a "main" PostgreSQL cluster) that would outlive us.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    if [ "$SB_APT_UPDATED" != 1 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq update || rc=$?
    fi
    if [ "$rc" -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq -y \
            --no-install-recommends install "$@" </dev/null >/dev/null || rc=$?
    fi
    [ "$added_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    return "$rc"
}

# apt-get install the given packages (root only). Returns non-zero on failure.
sb_apt_install() {
    sb_is_root || return 1
    command -v apt-get >/dev/null 2>&1 || return 1
    sb_say "installing system packages: $*"
    if sb_with_lock apt _sb_apt_install_locked "$@"; then
        SB_APT_UPDATED=1
        return 0
    fi
    return 1
}

# --------------------------------------------------------------------- network

# Print a TCP port that is free on 127.0.0.1 right now.
sb_free_port() {
    "${SB_PY:-python3}" - <<'EOF'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

# sb_port_open PORT [HOST]: succeed if something accepts TCP connections.
sb_port_open() {
    local port="$1" host="${2:-127.0.0.1}"
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

# sb_port_listening PORT: succeed if a TCP socket listens on PORT. Reads
# /proc/net/tcp{,6} so it makes no connection (a bare connect makes some
# servers log a failed handshake); falls back to sb_port_open elsewhere.
sb_port_listening() {
    local hex
    hex="$(printf '%04X' "$1")"
    if [ -r /proc/net/tcp ]; then
        grep -qE "^ *[0-9]+: [0-9A-F]+:$hex [0-9A-F]+:0000 0A " /proc/net/tcp /proc/net/tcp6 2>/dev/null
    else
        sb_port_open "$1"
    fi
}

# sb_wait_until SECONDS DESCRIPTION CMD...: poll CMD every 0.1 s until it
# succeeds; fail after SECONDS.
sb_wait_until() {
    local secs="$1" what="$2"
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            sb_warn "$what not ready after ${secs}s"
            return 1
        fi
        sleep 0.1
    done
}

# ------------------------------------------------------------------- browser

# Find Debian's chromium (the console's browser tests drive it through
# playwright, which cannot download a browser of its own here), installing
# the package if root. Sets SB_CHROMIUM. Returns 1 if it cannot be had.
sb_ensure_chromium_binary() {
    if ! command -v chromium >/dev/null 2>&1; then
        sb_apt_install chromium || true
    fi
    SB_CHROMIUM="$(command -v chromium 2>/dev/null)" || {
        SB_CHROMIUM=""
        return 1
    }
    return 0
}
