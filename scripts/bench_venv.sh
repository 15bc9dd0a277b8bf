#!/usr/bin/env bash
# Create (once) a virtualenv holding a system the benchmarks compare icij_nb with
# (Celery, Dask), never a dependency of icij_nb, and print its python's path as the
# last line of stdout.
#
#   python=$(scripts/bench_venv.sh celery | tail -n 1)
#   python=$(scripts/bench_venv.sh dask | tail -n 1)
#
# Location: ${ICIJ_NB_CACHE_DIR:-$HOME/.cache/icij_nb}/bench-<name>. As in
# scripts/icij_worker_venv.sh: a stamp file records a finished install (with its
# requirements, so changing them rebuilds), and a lock makes concurrent runs wait.
set -euo pipefail

name=${1:?usage: bench_venv.sh celery|dask}
case $name in
    celery) requirements=('celery==5.5.3') ; probe='import celery' ;;
    dask) requirements=('distributed==2025.7.0') ; probe='import distributed' ;;
    *) echo "unknown benchmark venv: $name (celery or dask)" >&2; exit 2 ;;
esac
cache=${ICIJ_NB_CACHE_DIR:-$HOME/.cache/icij_nb}
venv=$cache/bench-$name
stamp=$venv/.icij_nb-installed
want="${requirements[*]}"

installed() {
    [[ -f $stamp && "$(<"$stamp")" == "$want" && -x $venv/bin/python ]] \
        && "$venv/bin/python" -c "$probe" 2>/dev/null
}

mkdir -p "$cache"
if ! installed; then
    exec 9>"$venv.lock"
    flock -w 900 9 || { echo "timed out waiting for the lock $venv.lock" >&2; exit 1; }
    if ! installed; then
        echo "Creating $venv with ${requirements[*]}" >&2
        rm -rf "$venv"
        python3 -m venv "$venv" >&2
        "$venv/bin/python" -m pip install --disable-pip-version-check -q \
            "${requirements[@]}" 2>&1 \
            | { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2
        "$venv/bin/python" -c "$probe" >&2
        printf '%s\n' "$want" >"$stamp"
    fi
    flock -u 9
fi
printf '%s\n' "$venv/bin/python"
