# shellcheck shell=bash
# Sourced by scripts/test, scripts/check, scripts/example and .ci/run. Not executable on its own.
#
# Defines REPO_ROOT, VENV, PY and `ensure_venv`, which makes sure $VENV exists and holds an
# editable install of this repo with the `dev` extra (`pip install -e '.[dev]'`).
# The install is skipped when nothing it depends on changed: a stamp in $VENV records a hash of
# pyproject.toml, the repo path and the interpreter. Delete .venv (or the stamp) to force a rebuild.
#
# Environment:
#   SAYIIR_PYTHON  interpreter used to create the venv (default: first of python3, python3.13,
#                  python3.12, python3.11 that is >= 3.11)
#   SAYIIR_VENV    venv location (default: <repo>/.venv)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SAYIIR_VENV:-$REPO_ROOT/.venv}"
PY="$VENV/bin/python"
_SAYIIR_STAMP="$VENV/.sayiir-install-stamp"
_SAYIIR_EXTRAS="dev"

export PIP_DISABLE_PIP_VERSION_CHECK=1

# Colours only on a terminal (CI logs stay plain).
if [[ -t 1 ]]; then
    C_BOLD=$'\033[1m' C_RED=$'\033[31m' C_GREEN=$'\033[32m' C_OFF=$'\033[0m'
else
    C_BOLD='' C_RED='' C_GREEN='' C_OFF=''
fi

_sayiir_log() { printf '%s[sayiir]%s %s\n' "$C_BOLD" "$C_OFF" "$*" >&2; }

_sayiir_find_python() {
    local candidates=() c
    if [[ -n "${SAYIIR_PYTHON:-}" ]]; then
        candidates=("$SAYIIR_PYTHON")
    else
        candidates=(python3 python3.13 python3.12 python3.11)
    fi
    for c in "${candidates[@]}"; do
        if command -v "$c" >/dev/null 2>&1 \
            && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$c"
            return 0
        fi
    done
    _sayiir_log "need Python >= 3.11 (tried: ${candidates[*]}); set SAYIIR_PYTHON=/path/to/python3"
    return 1
}

_sayiir_wanted_stamp() {
    # Everything that should trigger a reinstall when it changes.
    {
        printf 'extras=%s\nrepo=%s\n' "$_SAYIIR_EXTRAS" "$REPO_ROOT"
        "$PY" -c 'import sys; print(sys.version)'
        cat "$REPO_ROOT/pyproject.toml"
    } | sha256sum | cut -d' ' -f1
}

_sayiir_ensure_venv_locked() {
    if ! "$PY" -c 'import sys' >/dev/null 2>&1; then
        local base
        base="$(_sayiir_find_python)" || return 1
        _sayiir_log "creating $VENV with $base ($("$base" --version 2>&1))"
        rm -rf "$VENV"
        if ! "$base" -m venv "$VENV"; then
            _sayiir_log "python -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
            rm -rf "$VENV"
            return 1
        fi
    fi
    local want
    want="$(_sayiir_wanted_stamp)" || return 1
    if [[ -f "$_SAYIIR_STAMP" && "$(cat "$_SAYIIR_STAMP")" == "$want" ]]; then
        return 0
    fi
    _sayiir_log "installing sayiir in editable mode with [$_SAYIIR_EXTRAS] into $VENV"
    # Every step checks its status explicitly: `set -e` does not apply inside `f || ...`.
    rm -f "$_SAYIIR_STAMP" || return 1
    if ! "$PY" -m pip install --quiet --editable "$REPO_ROOT[$_SAYIIR_EXTRAS]"; then
        _sayiir_log "pip install failed"
        return 1
    fi
    printf '%s\n' "$want" >"$_SAYIIR_STAMP" || return 1
    _sayiir_log "install done"
}

ensure_venv() {
    # Serialize concurrent bootstraps (e.g. scripts/test and scripts/example started together)
    # with a lock on the scripts/ directory itself: no lock file to clean up.
    local rc=0
    if command -v flock >/dev/null 2>&1; then
        exec {_sayiir_lock_fd}<"$REPO_ROOT/scripts"
        flock "$_sayiir_lock_fd"
        _sayiir_ensure_venv_locked || rc=$?
        flock -u "$_sayiir_lock_fd"
        exec {_sayiir_lock_fd}<&-
    else
        _sayiir_ensure_venv_locked || rc=$?
    fi
    return "$rc"
}
