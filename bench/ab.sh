#!/usr/bin/env bash
# A/B of two sse-cluster binaries on the same loads, for a before/after of a change:
#
#   bench/ab.sh BEFORE_BINARY AFTER_BINARY
#
# (build the before one from a worktree of the old commit: `git worktree add --detach
# ../before <rev> && (cd ../before && cargo build --release --bin sse-cluster)`).
# Each round runs both binaries in turn on two loads, a node on SERVER_CPUS and the
# load generator (`sse-cluster bench` of LOAD_BIN, default the after binary, so both
# get the same load) on CLIENT_CPUS:
#
# - fanout: FANOUT_SUBS subscribers over 10 channels, 4 publishers offering
#   FANOUT_RATE deliveries a second;
# - publish: one subscriber on each of 10 channels, 5,000 publishes a second (the
#   publish-bound load of issue 18).
#
# It prints each run's server CPU per delivery and latency, and at the end the
# median per binary and load and the ratio after/before. Rounds alternate the two
# binaries, so the VM's drift moves both alike; compare ratios, not absolute
# figures. Knobs: ROUNDS (3), DURATION (5s), FANOUT_SUBS (2000), FANOUT_RATE
# (100000), SERVER_CPUS (0), CLIENT_CPUS (1), PORT_BASE (18700).
set -euo pipefail
if [ $# -ne 2 ]; then
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
BEFORE=$1
AFTER=$2
LOAD_BIN=${LOAD_BIN:-$AFTER}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
FANOUT_SUBS=${FANOUT_SUBS:-2000}
FANOUT_RATE=${FANOUT_RATE:-100000}
SERVER_CPUS=${SERVER_CPUS:-0}
CLIENT_CPUS=${CLIENT_CPUS:-1}
port=${PORT_BASE:-18700}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT

# run WHICH LOAD BINARY BENCH-ARGS...: one node, one load; prints its figures and
# appends "WHICH LOAD us_per_delivery" to the results.
run() {
    local which=$1 load=$2 bin=$3
    shift 3
    port=$((port + 2))
    taskset -c "$SERVER_CPUS" "$bin" start --http.server.address 127.0.0.1 \
        --http.server.port "$port" --gossip.port "$((port + 1))" \
        --http.server.maxConnections 30000 --http.server.maxConnectionsPerAddress 30000 \
        --log.level warn 2>/dev/null &
    local pid=$!
    local tries=0
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        tries=$((tries + 1))
        if [ $tries -gt 100 ]; then
            echo "$which: the node on port $port did not start" >&2
            kill "$pid" 2>/dev/null || true
            return 1
        fi
        sleep 0.1
    done
    local out
    out=$(taskset -c "$CLIENT_CPUS" "$LOAD_BIN" bench --server-pid "$pid" \
        --sub-url "http://127.0.0.1:$port/channel/{channel}" \
        --pub-url "http://127.0.0.1:$port/channel/{channel}" "$@" 2>&1 || true)
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "$out" | grep -E 'server CPU|latency' | sed "s/^/$which $load /"
    local us
    us=$(echo "$out" | sed -n 's/.*server CPU.*, \([0-9.]*\) us\/delivery.*/\1/p')
    [ -n "$us" ] && echo "$which $load $us" >>"$RESULTS"
    return 0
}

for round in $(seq "$ROUNDS"); do
    echo "== round $round"
    for which in before after; do
        bin=$BEFORE
        [ "$which" = after ] && bin=$AFTER
        run "$which" fanout "$bin" -n "$FANOUT_SUBS" -c 10 -p 4 -r "$FANOUT_RATE" \
            -d "$DURATION" -s 100
        run "$which" publish "$bin" -n 10 -c 10 -p 4 -r 5000 -d "$DURATION" -s 100
    done
done

echo "== medians of server CPU per delivery (us), and after/before"
for load in fanout publish; do
    median() {
        grep "^$1 $load " "$RESULTS" | awk '{print $3}' | sort -g |
            awk '{v[NR]=$1} END {if (NR) print (NR % 2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'
    }
    b=$(median before)
    a=$(median after)
    if [ -n "$b" ] && [ -n "$a" ]; then
        echo "$load: before $b, after $a, ratio $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", a/b}')"
    else
        echo "$load: no figures (see the runs above)"
    fi
done
