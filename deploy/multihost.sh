#!/usr/bin/env bash
# Several hosts on one machine: network namespaces joined by a bridge, one host with
# PostgreSQL and Redis, two api hosts, two worker hosts and a client host that runs
# `gql-media bench --url` against the first api, with latency between hosts.
#
#   sudo deploy/multihost.sh [--delay-ms 2] [--keep] [-- bench arguments]
#
# --delay-ms: one way between two hosts (default 2: a round trip takes 4 ms more than on
# loopback). Every service a host offers to others (PostgreSQL, Redis, each api) listens on
# the host's loopback behind deploy/delay_proxy.py on the host's address, which delays each
# direction by that much: this machine's kernel has no netem (`tc qdisc ... netem` says
# "Specified qdisc kind is unknown"), so the latency is added in user space. Bench arguments
# default to `--only submit,pickup,e2e,drain --submit-concurrency 1,16`. Needs root, ip
# (iproute2), PostgreSQL's server binaries (initdb, postgres) and redis-server; uses the
# gql-media of $GQL_MEDIA_BIN (default: .venv/bin/gql-media) and the python beside it.
# Everything is removed on exit unless --keep.
set -euo pipefail
cd "$(dirname "$0")/.."

DELAY_MS=2
KEEP=0
BENCH_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --delay-ms) DELAY_MS="$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --) shift; BENCH_ARGS=("$@"); break ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
if [ ${#BENCH_ARGS[@]} -eq 0 ]; then
    BENCH_ARGS=(--only submit,pickup,e2e,drain --submit-concurrency 1,16)
fi

GQL_MEDIA_BIN="$(realpath "${GQL_MEDIA_BIN:-.venv/bin/gql-media}")"
PYTHON="$(dirname "$GQL_MEDIA_BIN")/python"
PROXY="$(realpath deploy/delay_proxy.py)"
PG_BIN="$(dirname "$(ls /usr/lib/postgresql/*/bin/postgres | sort -V | tail -n1)")"
PREFIX=gmh
BRIDGE=${PREFIX}br0
NET=10.77.0
WORK="$(mktemp -d /tmp/gql-media-multihost.XXXXXX)"
chmod 755 "$WORK"
declare -A ADDR=([db]=10 [api1]=11 [api2]=12 [worker1]=21 [worker2]=22 [client]=30)
PIDS=()
FORWARD_RULE=0

log() { echo "multihost: $*" >&2; }

cleanup() {
    local status=$?
    if [ "$KEEP" = 1 ]; then
        log "kept: namespaces ${PREFIX}-*, files in $WORK"
        exit $status
    fi
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -f "$WORK/redis.pid" ]; then kill "$(cat "$WORK/redis.pid")" 2>/dev/null || true; fi
    if [ -f "$WORK/pg/postmaster.pid" ]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
    fi
    for host in "${!ADDR[@]}"; do
        ip netns del "$PREFIX-$host" 2>/dev/null || true
        ip link del "${PREFIX}v${ADDR[$host]}" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    if [ "$FORWARD_RULE" = 1 ]; then
        iptables -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit $status
}
trap cleanup EXIT INT TERM

in_host() { local host=$1; shift; ip netns exec "$PREFIX-$host" "$@"; }

spawn() {  # spawn <host> <log> <command...>: in the background, its pid kept for the cleanup
    local host=$1 log=$2; shift 2
    ip netns exec "$PREFIX-$host" "$@" > "$log" 2>&1 &  # ip execs the command: same pid
    PIDS+=($!)
}

link() {  # link <host> <port>: others reach the host's loopback port through a delay
    spawn "$1" "$WORK/proxy-$1-$2.log" "$PYTHON" "$PROXY" --listen "$NET.${ADDR[$1]}:$2" \
        --target "127.0.0.1:$2" --delay-ms "$DELAY_MS"
}

wait_for() {  # wait_for <what> <host> <command...>: until it succeeds there, 60 s at most
    local what=$1 host=$2; shift 2
    for _ in $(seq 1 600); do
        if timeout 2 ip netns exec "$PREFIX-$host" "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    log "$what did not come up"; return 1
}

log "network: bridge $BRIDGE; ${DELAY_MS} ms one way between hosts"
ip link add "$BRIDGE" type bridge
ip addr add "$NET.1/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
# Docker's FORWARD policy drops what its own bridges do not carry; let this one's through
if command -v iptables >/dev/null && iptables -S FORWARD >/dev/null 2>&1; then
    iptables -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
    FORWARD_RULE=1
fi
for host in "${!ADDR[@]}"; do
    ns="$PREFIX-$host"
    outer="${PREFIX}v${ADDR[$host]}"
    ip netns add "$ns"
    ip link add "$outer" type veth peer name eth0 netns "$ns"
    ip link set "$outer" master "$BRIDGE" up
    in_host "$host" ip addr add "$NET.${ADDR[$host]}/24" dev eth0
    in_host "$host" ip link set lo up
    in_host "$host" ip link set eth0 up
done

DB="$NET.${ADDR[db]}"
log "db host: PostgreSQL and Redis at $DB"
mkdir -p "$WORK/pg" "$WORK/run"
chown postgres "$WORK/pg" "$WORK/run"
runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK/pg" -U postgres --auth=trust >/dev/null
in_host db runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/run/pg.log" -w \
    -o "-c listen_addresses=127.0.0.1 -c unix_socket_directories=$WORK/run -c max_connections=300 -c fsync=off" \
    start >/dev/null
in_host db redis-server --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --daemonize yes --pidfile "$WORK/redis.pid" --logfile "$WORK/redis.log"
link db 5432
link db 6379
wait_for redis client redis-cli -h "$DB" ping

export GQL_MEDIA_DATABASE_URL="postgresql+asyncpg://postgres@$DB:5432/postgres"
export GQL_MEDIA_REDIS_URL="redis://$DB:6379/0"
export GQL_MEDIA_DATA_DIR="$WORK/data"
export GQL_MEDIA_STORAGE_DIR="$WORK/media"  # one directory: the hosts share it, as a bucket
in_host api1 "$GQL_MEDIA_BIN" migrate > "$WORK/migrate.log" 2>&1

for api in api1 api2; do
    spawn "$api" "$WORK/$api.log" "$GQL_MEDIA_BIN" api --host 127.0.0.1 --port 8000
    link "$api" 8000
done
for worker in worker1 worker2; do
    spawn "$worker" "$WORK/$worker.log" "$GQL_MEDIA_BIN" worker
done
for api in api1 api2; do
    wait_for "$api" client curl -sf "http://$NET.${ADDR[$api]}:8000/healthz"
done

log "a round trip between hosts: Redis PINGs from worker1 to the db host"
in_host worker1 "$PYTHON" - "$DB" <<'PING'
import statistics, sys, time
import redis
client = redis.Redis(host=sys.argv[1], port=6379)
client.ping()
times = []
for _ in range(200):
    start = time.perf_counter()
    client.ping()
    times.append((time.perf_counter() - start) * 1000)
print(f"round trip (Redis PING, worker host to db host): p50 {statistics.median(times):.2f} ms")
PING

log "bench from the client host against api1 (2 worker hosts)"
in_host client "$GQL_MEDIA_BIN" bench --url "http://$NET.${ADDR[api1]}:8000" --workers 2 \
    "${BENCH_ARGS[@]}"
