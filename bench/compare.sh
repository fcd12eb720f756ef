#!/usr/bin/env bash
# Compares sse-cluster with nginx+nchan and with a C ceiling server (bench/ceiling.c)
# under the same load from `sse-cluster bench`, with the server under test and the
# load generator pinned to different cores. Installs what is missing, builds, runs,
# prints the raw figures and the ratios sse-cluster/nchan and sse-cluster/ceiling.
#
# The load runs go in ROUNDS interleaved rounds (each server once a round, in a
# rotating order) and each figure is the median over the rounds: a VM's speed drifts
# by tens of percent within minutes, and drift then moves every server alike.
#
# Knobs (environment): SUBS CHANNELS RATE DURATION (per round) ROUNDS SIZE PUBLISHERS
# IDLE_SUBS HOLD_SUBS HOLD_RATE SERVER_CPUS CLIENT_CPUS PORT_BASE CLUSTER (auto|0)
# CLUSTER_SIZES (node counts of the cluster runs, default "3 5"; every node of a
# cluster shares the server cores).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SUBS=${SUBS:-2000}
CHANNELS=${CHANNELS:-10}
RATE=${RATE:-100000}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
SIZE=${SIZE:-100}
PUBLISHERS=${PUBLISHERS:-4}
IDLE_SUBS=${IDLE_SUBS:-15000}
HOLD_SUBS=${HOLD_SUBS:-19000}
HOLD_RATE=${HOLD_RATE:-50000}
SERVER_CPUS=${SERVER_CPUS:-0}
CLIENT_CPUS=${CLIENT_CPUS:-1}
PORT_BASE=${PORT_BASE:-18400}
CLUSTER=${CLUSTER:-auto}
CLUSTER_SIZES=${CLUSTER_SIZES:-3 5}

say() { echo "== $*" >&2; }
started=$SECONDS

# --- what the run needs -------------------------------------------------------------
NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so
if ! command -v nginx >/dev/null || [ ! -f "$NCHAN_MODULE" ] || ! command -v gcc >/dev/null ||
    ! command -v taskset >/dev/null; then
    say "installing nginx, nchan, gcc"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq nginx libnginx-mod-nchan gcc util-linux >/dev/null
fi

WORK=$(mktemp -d /tmp/sse-bench.XXXXXX)
SERVER_PIDS=()
stop_servers() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${SERVER_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    SERVER_PIDS=()
}
cleanup() {
    stop_servers
    rm -rf "$WORK"
}
trap cleanup EXIT

say "building sse-cluster (release) and the ceiling server"
cargo build --release --bin sse-cluster >&2
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release/sse-cluster
gcc -O2 -o "$WORK/ceiling" bench/ceiling.c

# 15,000 subscribers need as many descriptors in the server and in the client.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((IDLE_SUBS + 200)) ]; then
    IDLE_SUBS=$(($(ulimit -n) - 200))
    say "open-file limit is $(ulimit -n): idle run reduced to $IDLE_SUBS subscribers"
fi
if [ "$(ulimit -n)" -lt $((HOLD_SUBS + 200)) ]; then
    HOLD_SUBS=$(($(ulimit -n) - 200))
    say "open-file limit is $(ulimit -n): hold run reduced to $HOLD_SUBS subscribers"
fi

next_port=$PORT_BASE
port() {
    next_port=$((next_port + 1))
    PORT=$next_port
}

wait_for_port() {
    local deadline=$((SECONDS + 20))
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            say "server on port $1 did not start"
            return 1
        fi
        sleep 0.1
    done
}

# Each start_* sets SUB_URL, PUB_URL, FORMAT and PIDS (comma-separated, for /proc).
start_sse_cluster() {
    port
    taskset -c "$SERVER_CPUS" "$BIN" start --http.server.address 127.0.0.1 \
        --http.server.port "$PORT" --gossip.port "$((PORT + 1000))" \
        --http.server.maxConnections 30000 --http.server.maxConnectionsPerAddress 30000 --log.level warn 2>>"$WORK/sse-cluster.log" &
    SERVER_PIDS+=($!)
    PIDS=$!
    SUB_URL="http://127.0.0.1:$PORT/channel/{channel}"
    PUB_URL=$SUB_URL
    FORMAT=sse-cluster
    wait_for_port "$PORT"
}

start_nchan() {
    port
    local prefix=$WORK/nginx-$PORT
    mkdir -p "$prefix/tmp"
    sed -e "s#@MODULE@#$NCHAN_MODULE#" -e "s#@PORT@#$PORT#" bench/nchan.conf >"$prefix/nchan.conf"
    taskset -c "$SERVER_CPUS" nginx -p "$prefix/" -c nchan.conf 2>>"$WORK/nginx.log" &
    SERVER_PIDS+=($!)
    local master=$!
    wait_for_port "$PORT"
    PIDS="$master,$(pgrep -P "$master" | paste -sd,)"
    SUB_URL="http://127.0.0.1:$PORT/sub/{channel}"
    PUB_URL="http://127.0.0.1:$PORT/pub/{channel}"
    FORMAT=raw
}

start_ceiling() {
    port
    taskset -c "$SERVER_CPUS" "$WORK/ceiling" "$PORT" 2>>"$WORK/ceiling.log" &
    SERVER_PIDS+=($!)
    PIDS=$!
    SUB_URL="http://127.0.0.1:$PORT/channel/{channel}"
    PUB_URL=$SUB_URL
    FORMAT=raw
}

# bench LABEL ARGS...: one run against the server just started; prints its JSON line.
bench() {
    local label=$1
    shift
    local url args=()
    for url in $SUB_URL; do args+=(--sub-url "$url"); done
    for url in $PUB_URL; do args+=(--pub-url "$url"); done
    say "$label: $*"
    taskset -c "$CLIENT_CPUS" "$BIN" bench --label "$label" "${args[@]}" \
        --pub-format "$FORMAT" --server-pid "$PIDS" --json "$@" || true
}

idle_run() {
    bench "$1" -n "$IDLE_SUBS" -c "$CHANNELS" -d 0s --settle 2s
}

load_run() {
    bench "$1" -n "$SUBS" -c "$CHANNELS" -p "$PUBLISHERS" -r "$RATE" -d "$DURATION" -s "$SIZE"
}

declare -A IDLE LOAD
for server in sse-cluster nchan ceiling; do
    "start_${server//-/_}"
    IDLE[$server]=$(idle_run "$server")
    stop_servers
done

# --- one node holding as many subscribers as the descriptor limit allows -------------
start_sse_cluster
HOLD=$(bench sse-cluster-hold -n "$HOLD_SUBS" -c "$CHANNELS" -p "$PUBLISHERS" -r "$HOLD_RATE" \
    -d 10s -s "$SIZE")
stop_servers

# --- clusters ---------------------------------------------------------------------
# start_cluster N: N nodes joined with --gossip.hosts through the first, all on the
# server cores; subscribers spread over all of them, publishes through all of them.
start_cluster() {
    local size=$1 first_gossip="" ports=() urls="" pids="" i
    for ((i = 1; i <= size; i++)); do
        port
        ports+=("$PORT")
        local gossip=$((PORT + 1000))
        local join=()
        if [ -n "$first_gossip" ]; then join=(--gossip.hosts "127.0.0.1:$first_gossip"); fi
        taskset -c "$SERVER_CPUS" "$BIN" start --http.server.address 127.0.0.1 \
            --http.server.port "$PORT" --gossip.port "$gossip" "${join[@]}" \
            --http.server.maxConnections 30000 --http.server.maxConnectionsPerAddress 30000 --log.level warn 2>>"$WORK/cluster.log" &
        SERVER_PIDS+=($!)
        pids="$pids${pids:+,}$!"
        urls="$urls${urls:+ }http://127.0.0.1:$PORT/channel/{channel}"
        first_gossip=${first_gossip:-$gossip}
    done
    for i in "${ports[@]}"; do wait_for_port "$i"; done
    SUB_URL=$urls
    PUB_URL=$urls
    PIDS=$pids
    FORMAT=sse-cluster
    # Formed when every node counts all members and takes all of them for alive:
    # a node pulls events only from peers it takes for alive, and a load started
    # before that would time the catch-up of the first events.
    local deadline=$((SECONDS + 10 + 2 * size)) formed status
    while [ $SECONDS -lt $deadline ]; do
        formed=1
        for i in "${ports[@]}"; do
            status=$(curl -s "http://127.0.0.1:$i/status" || true)
            if ! grep -q "\"member_count\":$size" <<<"$status" || grep -q '"alive":false' <<<"$status"; then
                formed=0
            fi
        done
        [ $formed = 1 ] && return 0
        sleep 0.25
    done
    return 1
}

CLUSTER_NOTE=""
LOADED=(sse-cluster nchan ceiling)
CLUSTERS=()
if [ "$CLUSTER" != 0 ]; then
    for size in $CLUSTER_SIZES; do
        if start_cluster "$size"; then
            IDLE[cluster-$size]=$(idle_run "sse-cluster-$size")
            LOADED+=("cluster-$size")
            CLUSTERS+=("$size")
        else
            CLUSTER_NOTE="$CLUSTER_NOTE${CLUSTER_NOTE:+; }$size-node run skipped: the nodes did not form a $size-member cluster in time"
            say "$size-node run skipped: no $size-member cluster"
        fi
        stop_servers
    done
fi

# --- the load, in interleaved rounds ------------------------------------------------
# LOAD[server] collects one JSON line per round.
start_server() {
    case $1 in
    cluster-*) start_cluster "${1#cluster-}" || say "$1: the nodes did not re-form in time" ;;
    *) "start_${1//-/_}" ;;
    esac
}
for ((round = 0; round < ROUNDS; round++)); do
    count=${#LOADED[@]}
    for ((i = 0; i < count; i++)); do
        server=${LOADED[$(((i + round) % count))]}
        label=$server
        [[ $server = cluster-* ]] && label=sse-$server
        start_server "$server"
        line=$(load_run "$label round $((round + 1))/$ROUNDS")
        stop_servers
        [ -n "$line" ] && LOAD[$server]+="$line"$'\n'
    done
done

# --- report -------------------------------------------------------------------------
field() { # field JSON-LINES NAME -> the value, or the median over the lines, or "null"
    grep -o "\"$2\":[^,}]*" <<<"$1" | cut -d: -f2- | grep -v null | sort -g |
        awk '{ v[NR] = $1 } END {
            if (NR == 0) print "null"
            else if (NR % 2) print v[(NR + 1) / 2]
            else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}
per_round() { # per_round NAME SERVER OTHER -> SERVER/OTHER of each round, in order
    local a b out="" r
    mapfile -t a < <(grep -o "\"$1\":[^,}]*" <<<"${LOAD[$2]:-}" | cut -d: -f2-)
    mapfile -t b < <(grep -o "\"$1\":[^,}]*" <<<"${LOAD[$3]:-}" | cut -d: -f2-)
    for r in "${!a[@]}"; do
        out="$out $(ratio "${a[$r]}" "${b[$r]:-null}")"
    done
    echo "${out# }"
}
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "null" || b == "null" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'
}
num() {
    awk -v a="$1" 'BEGIN { if (a == "null") print "-"; else if (a + 0 >= 100) printf "%.0f", a; else printf "%.3g", a }'
}

echo
echo "# raw JSON, one line per run"
for server in sse-cluster nchan ceiling "${CLUSTERS[@]/#/cluster-}"; do
    [ -n "${IDLE[$server]:-}" ] && echo "${IDLE[$server]}"
    [ -n "${LOAD[$server]:-}" ] && printf '%s' "${LOAD[$server]}"
done
echo "$HOLD"

table() { # table TITLE ARRAY-NAME FIELDS...
    local title=$1 name=$2
    shift 2
    local -n runs=$name
    echo
    echo "# $title"
    local header size
    header=$(printf '%-28s %14s %14s %14s %14s %14s' metric sse-cluster nchan ceiling "sse/nchan" "sse/ceiling")
    for size in "${CLUSTERS[@]}"; do header="$header $(printf '%14s' "$size-node")"; done
    echo "$header"
    local f s n c line
    for f in "$@"; do
        s=$(field "${runs[sse-cluster]:-}" "$f")
        n=$(field "${runs[nchan]:-}" "$f")
        c=$(field "${runs[ceiling]:-}" "$f")
        line=$(printf '%-28s %14s %14s %14s %14s %14s' "$f" "$(num "$s")" "$(num "$n")" "$(num "$c")" \
            "$(ratio "$s" "$n")" "$(ratio "$s" "$c")")
        for size in "${CLUSTERS[@]}"; do
            line="$line $(printf '%14s' "$(num "$(field "${runs[cluster-$size]:-}" "$f")")")"
        done
        echo "$line"
    done
}

table "idle: $IDLE_SUBS subscribers on $CHANNELS channels" IDLE \
    connected connect_failures connect_rate_per_s idle_pss_before_kib idle_pss_after_kib \
    idle_bytes_per_subscriber
table "load: $SUBS subscribers, $CHANNELS channels, $RATE deliveries/s target, $SIZE-byte payloads, median of $ROUNDS interleaved rounds of $DURATION" LOAD \
    connected connect_rate_per_s published publish_errors publish_rate_per_s expected_deliveries \
    delivered delivered_ratio deliveries_per_s stream_errors server_cpu_s \
    server_cpu_us_per_delivery deliveries_per_core_s client_cpu_s latency_p50_us latency_p99_us \
    latency_p999_us latency_max_us
echo
echo "# each round's ratio (the load table shows their medians)"
for f in deliveries_per_core_s server_cpu_us_per_delivery latency_p99_us; do
    printf '%-28s %-9s %s\n' "$f" "sse/nchan" "$(per_round "$f" sse-cluster nchan)"
    printf '%-28s %-9s %s\n' "" "sse/ceil" "$(per_round "$f" sse-cluster ceiling)"
    for size in "${CLUSTERS[@]}"; do
        [ -n "${LOAD[cluster-$size]:-}" ] &&
            printf '%-28s %-9s %s\n' "" "$size-node/1" "$(per_round "$f" "cluster-$size" sse-cluster)"
    done
done
echo
echo "# hold: one sse-cluster node, $HOLD_SUBS subscribers on $CHANNELS channels, $HOLD_RATE deliveries/s target, 10s"
for f in connected connect_failures delivered_ratio deliveries_per_s stream_errors \
    server_cpu_us_per_delivery latency_p50_us latency_p99_us; do
    printf '%-28s %14s\n' "$f" "$(num "$(field "$HOLD" "$f")")"
done
echo
echo "server cores: $SERVER_CPUS, load generator cores: $CLIENT_CPUS, $(nproc) cores online," \
    "load average $(cut -d' ' -f1-3 /proc/loadavg)"
[ -n "$CLUSTER_NOTE" ] && echo "$CLUSTER_NOTE"
echo "finished in $((SECONDS - started))s"
