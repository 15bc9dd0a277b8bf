# shellcheck shell=bash
# Shared set-up for scripts/test and scripts/quickstart. Source it from the repo root;
# it defines functions only and changes nothing by itself.

ICIJ_NB_VENV=${ICIJ_NB_VENV:-.venv}
# Prefer the venv's kernelspecs over any in ~/.local/share/jupyter, so the "python3"
# kernel that papermill and nbclient start is always the venv's Python.
export JUPYTER_PREFER_ENV_PATH=1

icij_step() {
    printf '\n==> %s\n' "$*"
}

icij_warn() {
    printf 'WARNING: %s\n' "$*" >&2
}

icij_die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

# icij_venv EXTRA: create $ICIJ_NB_VENV if missing and `pip install -e .[EXTRA]` into it.
# The install is skipped when pyproject.toml has not changed since the last one for
# that extra (a sha256 stamp file in the venv).
icij_venv() {
    local extra=$1 stamp want
    if [[ ! -x $ICIJ_NB_VENV/bin/python ]] || ! "$ICIJ_NB_VENV/bin/python" -c '' 2>/dev/null; then
        command -v python3 >/dev/null || icij_die "python3 not found on PATH (Python 3.11+ is needed)"
        python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            || icij_die "python3 is $(python3 -V 2>&1); icij_nb needs Python 3.11 or newer"
        icij_step "Creating virtual environment $ICIJ_NB_VENV ($(python3 -V 2>&1))"
        rm -rf "$ICIJ_NB_VENV"
        python3 -m venv "$ICIJ_NB_VENV" \
            || icij_die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    fi
    stamp="$ICIJ_NB_VENV/.icij_nb-install-$extra.sha256"
    want=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [[ -f $stamp && "$(<"$stamp")" == "$want" ]]; then
        icij_step "Packages up to date in $ICIJ_NB_VENV (.[$extra], pyproject.toml unchanged)"
        return 0
    fi
    icij_step "Installing icij_nb[$extra] (editable) into $ICIJ_NB_VENV"
    rm -f "$stamp"
    # The grep drops pip's notes about package mirrors that lack a name; pipefail keeps
    # pip's exit status.
    "$ICIJ_NB_VENV/bin/python" -m pip install --disable-pip-version-check -q -e ".[$extra]" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
    printf '%s\n' "$want" >"$stamp"
}

# icij_kernel: register the venv's Python as the Jupyter kernel "python3" inside the
# venv (.venv/share/jupyter/kernels/python3), for papermill and nbclient.
icij_kernel() {
    icij_step "Registering Jupyter kernel python3 -> $ICIJ_NB_VENV/bin/python"
    "$ICIJ_NB_VENV/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
}

# _icij_http_ok URL: true when URL answers 200 with guest:guest (no proxy, 3 s timeout).
_icij_http_ok() {
    python3 - "$1" <<'PY'
import base64
import sys
import urllib.request

auth = base64.b64encode(b"guest:guest").decode()
request = urllib.request.Request(sys.argv[1], headers={"Authorization": f"Basic {auth}"})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(request, timeout=3) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

# _icij_port_open HOST PORT
_icij_port_open() {
    python3 -c 'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3).close()' \
        "$1" "$2" 2>/dev/null
}

# _icij_broker_problem MESSAGE: fatal under ICIJ_NB_REQUIRE_RABBITMQ=1, a warning otherwise.
_icij_broker_problem() {
    if [[ ${ICIJ_NB_REQUIRE_RABBITMQ:-} == 1 ]]; then
        icij_die "$* (ICIJ_NB_REQUIRE_RABBITMQ=1)"
    fi
    icij_warn "$*; tests marked rabbitmq will be skipped"
}

# icij_rabbitmq: make sure a local RabbitMQ answers on 127.0.0.1:5672 and its management
# API on 127.0.0.1:15672, starting the server and enabling the plugin as needed.
icij_rabbitmq() {
    local mgmt=http://127.0.0.1:15672/api/overview i deadline
    icij_step "Checking RabbitMQ on 127.0.0.1:5672 (management on :15672)"
    if [[ -n ${ICIJ_NB_TEST_AMQP_URL:-} ]]; then
        echo "ICIJ_NB_TEST_AMQP_URL is set: using that broker, leaving the local one alone"
        return 0
    fi
    if ! command -v rabbitmqctl >/dev/null; then
        _icij_broker_problem "RabbitMQ is not installed (on Debian: apt-get install rabbitmq-server)"
        return 0
    fi
    if ! timeout 60 rabbitmqctl -q status >/dev/null 2>&1; then
        echo "RabbitMQ is not running; starting it with rabbitmq-server -detached"
        rabbitmq-server -detached || true
        # await_startup fails at once until the node is reachable, so poll it.
        deadline=$((SECONDS + 60))
        until timeout 15 rabbitmqctl -q await_startup --timeout 10 >/dev/null 2>&1; do
            if ((SECONDS >= deadline)); then
                _icij_broker_problem "RabbitMQ did not start within 60 s"
                return 0
            fi
            sleep 1
        done
    fi
    if ! _icij_http_ok "$mgmt"; then
        echo "Enabling rabbitmq_management"
        rabbitmq-plugins -q enable rabbitmq_management >/dev/null \
            || { _icij_broker_problem "could not enable rabbitmq_management"; return 0; }
        for ((i = 0; i < 60; i++)); do
            _icij_http_ok "$mgmt" && break
            sleep 1
        done
        if ! _icij_http_ok "$mgmt"; then
            _icij_broker_problem "RabbitMQ management API did not answer on $mgmt within 60 s"
            return 0
        fi
    fi
    if ! _icij_port_open 127.0.0.1 5672; then
        _icij_broker_problem "RabbitMQ runs but nothing listens on 127.0.0.1:5672"
        return 0
    fi
    echo "RabbitMQ is up: amqp://127.0.0.1:5672, management $mgmt"
}

# icij_chromium: make sure Debian's chromium is at /usr/bin/chromium for the browser
# tests (Playwright drives it; its own browser download does not work offline). As
# root it is installed with apt-get; otherwise a message says what to run. Without
# it, tests/browser is skipped, or fails under ICIJ_NB_REQUIRE_BROWSER=1.
icij_chromium() {
    icij_step "Checking chromium for the browser tests"
    if [[ -x /usr/bin/chromium ]]; then
        echo "chromium is at /usr/bin/chromium"
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        icij_warn "/usr/bin/chromium is missing and this is not root: run 'sudo apt-get install -y chromium'; browser tests will be skipped"
        return 0
    fi
    if ! command -v apt-get >/dev/null; then
        icij_warn "/usr/bin/chromium is missing and apt-get is not available; browser tests will be skipped"
        return 0
    fi
    echo "Installing Debian's chromium with apt-get"
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; then
        icij_warn "apt-get install chromium failed; browser tests will be skipped"
    fi
}
