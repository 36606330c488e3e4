#!/usr/bin/env bash
# Start (default) or stop a three-node local Redis Cluster for the tests: ports 7001-7003, no
# replicas, nothing persisted. Idempotent: when the cluster already answers with
# cluster_state:ok, `start` does nothing.
#
#   .ci/redis-cluster.sh [start|stop|status]
#
# Data and node files live under $REDIS_CLUSTER_DIR (default: <repo>/.ci/work/redis-cluster).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${REDIS_CLUSTER_DIR:-$REPO/.ci/work/redis-cluster}"
PORTS=(7001 7002 7003)
HOST=127.0.0.1

node_up() {
    redis-cli -h "$HOST" -p "$1" ping 2>/dev/null | grep -q PONG
}

cluster_ok() {  # every node answers and each one sees a healthy cluster
    local port
    for port in "${PORTS[@]}"; do
        redis-cli -h "$HOST" -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' ||
            return 1
    done
}

start() {
    if cluster_ok; then
        echo "redis cluster already up on ${PORTS[*]}"
        return 0
    fi
    command -v redis-server >/dev/null || { echo "redis-server not found" >&2; exit 1; }
    # Nodes that answer but form no healthy cluster (a half-finished earlier start) are
    # restarted from scratch: a cluster of empty test nodes is cheap to rebuild.
    stop >/dev/null
    mkdir -p "$DIR"
    for port in "${PORTS[@]}"; do
        mkdir -p "$DIR/$port"
        # A node file from an earlier run would make the node remember a cluster that is gone.
        rm -f "$DIR/$port/nodes.conf"
        redis-server --port "$port" --bind "$HOST" \
            --cluster-enabled yes \
            --cluster-config-file "$DIR/$port/nodes.conf" \
            --cluster-node-timeout 5000 \
            --dir "$DIR/$port" \
            --save "" --appendonly no \
            --daemonize yes \
            --pidfile "$DIR/$port/redis.pid" \
            --logfile "$DIR/$port/redis.log"
    done
    for port in "${PORTS[@]}"; do
        for _ in $(seq 1 50); do
            node_up "$port" && break
            sleep 0.1
        done
        node_up "$port" || { echo "redis node $port did not start" >&2; exit 1; }
    done
    local nodes=()
    for port in "${PORTS[@]}"; do nodes+=("$HOST:$port"); done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
    for _ in $(seq 1 100); do
        if cluster_ok; then
            echo "redis cluster up on ${PORTS[*]}"
            return 0
        fi
        sleep 0.1
    done
    echo "redis cluster did not reach cluster_state:ok" >&2
    exit 1
}

stop() {
    for port in "${PORTS[@]}"; do
        if node_up "$port"; then
            redis-cli -h "$HOST" -p "$port" shutdown nosave >/dev/null 2>&1 || true
        fi
    done
    for port in "${PORTS[@]}"; do
        for _ in $(seq 1 50); do
            node_up "$port" || break
            sleep 0.1
        done
    done
    echo "redis cluster stopped"
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) cluster_ok && echo "cluster_state:ok" || { echo "redis cluster is not up"; exit 1; } ;;
    *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
