#!/usr/bin/env bash
# Create (once) a virtualenv holding the real icij-worker, the peer of the interop tests,
# and print its python's path as the last line of stdout.
#
#   python=$(scripts/icij_worker_venv.sh | tail -n 1)
#
# Location: ${ICIJ_NB_CACHE_DIR:-$HOME/.cache/icij_nb}/icij-worker-0.20.2. A stamp file
# records a finished install, so later runs only print the path. A lock (flock) makes
# concurrent runs (parallel test sessions) wait for one install instead of racing.
#
# Why these requirements (PROTOCOL.md §4.4, §4.5): the `fs` and `postgres` extras,
# because icij_worker.task_manager.amqp imports the postgres storage even when the FS
# storage is used; `click<8.2`, because `icij-worker --help` crashes with newer click.
# Progress goes to stderr; on failure pip's output is on stderr and the status is not 0.
set -euo pipefail

version=0.20.2
requirements=("icij-worker[amqp,fs,postgres]==$version" 'click<8.2')
cache=${ICIJ_NB_CACHE_DIR:-$HOME/.cache/icij_nb}
venv=$cache/icij-worker-$version
# The stamp holds the requirements, so changing them above rebuilds the venv.
stamp=$venv/.icij_nb-installed
want="${requirements[*]}"

installed() {
    [[ -f $stamp && "$(<"$stamp")" == "$want" && -x $venv/bin/python ]] \
        && "$venv/bin/python" -c 'import icij_worker' 2>/dev/null
}

mkdir -p "$cache"
if ! installed; then
    exec 9>"$venv.lock"
    # Another run may be installing right now: wait for it (bounded), then re-check.
    flock -w 900 9 || { echo "timed out waiting for the lock $venv.lock" >&2; exit 1; }
    if ! installed; then
        echo "Creating $venv with ${requirements[*]}" >&2
        rm -rf "$venv"
        python3 -m venv "$venv" >&2
        # The grep drops pip's notes about package mirrors that lack a name; pipefail
        # keeps pip's exit status.
        "$venv/bin/python" -m pip install --disable-pip-version-check -q \
            "${requirements[@]}" 2>&1 \
            | { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2
        # Fail here rather than in a test when the AMQP task manager cannot import
        # (icij_worker's __init__ swallows that ImportError).
        "$venv/bin/python" -c 'from icij_worker.task_manager.amqp import AMQPTaskManager' >&2
        printf '%s\n' "$want" >"$stamp"
    fi
    flock -u 9
fi
printf '%s\n' "$venv/bin/python"
