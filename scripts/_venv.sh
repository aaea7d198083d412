# shellcheck shell=bash
# Sourced by scripts/test, check, example, bench, docs, wheel-smoke and .ci/run. Not executable on its own.
#
# Defines REPO_ROOT, VENV, PY and `ensure_venv`, which makes sure $VENV exists and holds an
# editable install of this repo with the `dev` extra (`pip install -e '.[dev]'`), and
# `ensure_extra NAME`, which adds the packages of another extra (docs, release) to it.
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

_sayiir_extra_requirements() {
    # The requirements of one optional extra, read from pyproject.toml (one per line).
    "$PY" - "$REPO_ROOT/pyproject.toml" "$1" <<'PYEOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    extras = tomllib.load(f)["project"]["optional-dependencies"]
if sys.argv[2] not in extras:
    sys.exit(f"pyproject.toml has no extra {sys.argv[2]!r}")
print("\n".join(extras[sys.argv[2]]))
PYEOF
}

ensure_extra() {
    # Install the requirements of extra $1 (e.g. docs, release) into $VENV, once per version
    # of pyproject.toml (a stamp per extra). The editable sayiir install is left as it is:
    # only the extra's own packages are installed, so this is quick and needs no rebuild.
    local name="$1" stamp="$VENV/.sayiir-extra-$1-stamp" want text
    local -a reqs
    want="$(_sayiir_wanted_stamp)" || return 1
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    text="$(_sayiir_extra_requirements "$name")" || return 1
    mapfile -t reqs <<<"$text"
    _sayiir_log "installing the [$name] extra into $VENV"
    if ! "$PY" -m pip install --quiet "${reqs[@]}"; then
        _sayiir_log "pip install of the [$name] extra failed"
        return 1
    fi
    printf '%s\n' "$want" >"$stamp"
}
