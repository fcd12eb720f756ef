#!/usr/bin/env python3
"""What replay history and channel states cost in resident memory, against what
`--replay.maxBytes` counts of them.

Starts a node (the binary given), publishes one event of 100 bytes to each of N new
channels over one keep-alive connection, then prints the node's resident memory
growth beside the counted bytes (`sse_history_bytes` + `sse_channel_state_bytes`).

    cargo build --release
    bench/history-memory.py target/release/sse-cluster 120000 33554432

The README's Security section quotes a run of this script.
"""
import http.client
import re
import subprocess
import sys
import time

binary, channels, max_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
port, gossip = 18992, 18993
node = subprocess.Popen(
    [binary, "start", f"--http.server.port={port}", f"--gossip.port={gossip}",
     "--http.server.address=127.0.0.1", f"--replay.maxBytes={max_bytes}",
     f"--channels.max={max(channels, 1)}"],
    stderr=subprocess.DEVNULL)


def resident():
    with open(f"/proc/{node.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    raise SystemExit("no VmRSS")


def metric(name):
    connection = http.client.HTTPConnection("127.0.0.1", port)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    found = re.search(rf"^{name} (\d+)", text, re.M)
    return int(found.group(1)) if found else 0


try:
    for _ in range(100):
        try:
            metric("sse_history_bytes")
            break
        except OSError:
            time.sleep(0.05)
    start = resident()
    connection = http.client.HTTPConnection("127.0.0.1", port)
    body = '{"data":"' + "x" * 100 + '"}'
    for i in range(channels):
        connection.request("POST", f"/channel/c{i:07d}", body=body,
                           headers={"content-type": "application/json"})
        connection.getresponse().read()
    time.sleep(0.5)
    grown = resident() - start
    counted = metric("sse_history_bytes") + metric("sse_channel_state_bytes")
    print(f"channels={channels} max_bytes={max_bytes} resident_growth={grown} "
          f"counted={counted} ratio={grown / max(counted, 1):.2f} "
          f"dormant_channels={metric('sse_dormant_channels')}")
finally:
    node.terminate()
    node.wait()
