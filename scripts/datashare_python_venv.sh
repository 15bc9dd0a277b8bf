#!/usr/bin/env bash
# Create (once) a virtualenv holding the real datashare-python worker, the Temporal peer
# of the interop tests, and print its python's path as the last line of stdout.
#
#   python=$(scripts/datashare_python_venv.sh | tail -n 1)
#
# datashare-python needs Python >= 3.12 (PEP 695 syntax, though it declares >= 3.11):
# the interpreter is $ICIJ_NB_PY312, else python3.12 on PATH, else pyenv's 3.12.1.
# Location: ${ICIJ_NB_CACHE_DIR:-$HOME/.cache/icij_nb}/datashare-python-<version>, with
# a stamp and a lock as in icij_worker_venv.sh.
set -euo pipefail

version=0.12.12
requirements=("datashare-python==$version")
cache=${ICIJ_NB_CACHE_DIR:-$HOME/.cache/icij_nb}
venv=$cache/datashare-python-$version
stamp=$venv/.icij_nb-installed
want="${requirements[*]}"

python312=""
for candidate in "${ICIJ_NB_PY312:-}" python3.12 python3.13 /root/.pyenv/versions/3.12.1/bin/python; do
    # pyenv shims exist on PATH even when they cannot run: try each one.
    if [[ -n $candidate ]] && "$candidate" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then
        python312=$candidate
        break
    fi
done
[[ -n $python312 ]] || { echo "datashare-python needs Python >= 3.12: set ICIJ_NB_PY312" >&2; exit 1; }

installed() {
    [[ -f $stamp && "$(<"$stamp")" == "$want" && -x $venv/bin/python ]] \
        && "$venv/bin/python" -c 'import datashare_python' 2>/dev/null
}

mkdir -p "$cache"
if ! installed; then
    exec 9>"$venv.lock"
    flock -w 900 9 || { echo "timed out waiting for the lock $venv.lock" >&2; exit 1; }
    if ! installed; then
        echo "Creating $venv with ${requirements[*]} on $python312" >&2
        rm -rf "$venv"
        "$python312" -m venv "$venv" >&2
        "$venv/bin/python" -m pip install --disable-pip-version-check -q \
            "${requirements[@]}" 2>&1 \
            | { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2
        "$venv/bin/python" -c 'import datashare_python.worker' >&2
        printf '%s\n' "$want" >"$stamp"
    fi
    flock -u 9
fi
printf '%s\n' "$venv/bin/python"
