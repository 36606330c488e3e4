#!/usr/bin/env bash
# Start, stop or check the MongoDB-wire-compatible test server (mongoeco) on 127.0.0.1:27017.
#
#   bash .ci/mongo-server.sh start    # idempotent: creates the venv, starts the server, waits
#   bash .ci/mongo-server.sh stop
#   bash .ci/mongo-server.sh status   # exit 0 if it answers
#
# No MongoDB can be installed on these machines; mongoeco needs Python 3.13, which pyenv has.
# The venv, pid file and log live in .ci/work/ (git-ignored). Environment overrides:
# MONGO_TEST_HOST, MONGO_TEST_PORT, MONGO_TEST_PYTHON (a python3.13 executable).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="$HERE/work"
VENV="$WORK/mongo-venv"
PIDFILE="$WORK/mongo-server.pid"
LOG="$WORK/mongo-server.log"
REQUIREMENTS="$HERE/mongo-requirements.txt"
HOST="${MONGO_TEST_HOST:-127.0.0.1}"
PORT="${MONGO_TEST_PORT:-27017}"

find_python() {
    # mongoeco needs Python 3.13 or newer: an explicit choice, else pyenv's newest 3.13, else
    # python3.13 on PATH (checked by running it: pyenv shims exist for versions not selected).
    if [[ -n "${MONGO_TEST_PYTHON:-}" ]]; then
        echo "$MONGO_TEST_PYTHON"
        return 0
    fi
    if command -v pyenv >/dev/null 2>&1; then
        local version
        version="$(pyenv versions --bare 2>/dev/null | grep -E '^3\.13\.[0-9]+$' | sort -V | tail -n 1)"
        if [[ -n "$version" ]]; then
            echo "$(pyenv prefix "$version")/bin/python3"
            return 0
        fi
    fi
    if python3.13 -c "" >/dev/null 2>&1; then
        command -v python3.13
        return 0
    fi
    echo "mongo-server: no Python 3.13 found (pyenv install 3.13, or set MONGO_TEST_PYTHON)" >&2
    return 1
}

ensure_venv() {
    mkdir -p "$WORK"
    local stamp="$VENV/.requirements"
    if [[ -x "$VENV/bin/python" ]] && cmp -s "$REQUIREMENTS" "$stamp"; then
        return 0
    fi
    local python
    python="$(find_python)"
    "$python" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS" \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    cp "$REQUIREMENTS" "$stamp"
}

answers() {
    # A TCP connect is enough: the server binds only after its engine is ready.
    "$VENV/bin/python" - "$HOST" "$PORT" <<'EOF' 2>/dev/null
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1):
    pass
EOF
}

running_pid() {
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid="$(cat "$PIDFILE")"
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

start() {
    ensure_venv
    if running_pid >/dev/null && answers; then
        echo "mongo-server: already running (pid $(running_pid)) on $HOST:$PORT"
        return 0
    fi
    if answers; then
        echo "mongo-server: something else already answers on $HOST:$PORT; using it"
        return 0
    fi
    nohup "$VENV/bin/python" "$HERE/mongo_server.py" --host "$HOST" --port "$PORT" \
        >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 150); do
        if answers; then
            echo "mongo-server: started (pid $(cat "$PIDFILE")) on $HOST:$PORT"
            return 0
        fi
        if ! running_pid >/dev/null; then
            break
        fi
        sleep 0.2
    done
    echo "mongo-server: failed to start; log follows" >&2
    cat "$LOG" >&2 || true
    stop >/dev/null 2>&1 || true
    return 1
}

stop() {
    local pid
    if pid="$(running_pid)"; then
        kill "$pid"
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        echo "mongo-server: stopped (pid $pid)"
    else
        echo "mongo-server: not running"
    fi
    rm -f "$PIDFILE"
}

status() {
    if [[ -x "$VENV/bin/python" ]] && answers; then
        echo "mongo-server: answering on $HOST:$PORT"
        return 0
    fi
    echo "mongo-server: not answering on $HOST:$PORT"
    return 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
