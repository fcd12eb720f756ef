//! Planned stops (SIGTERM) drain: a rolling restart of three real processes under a
//! steady publisher loses nothing and sends nobody a gap or a reset; during the drain
//! the node is not ready and refuses publishes with 503 and `Retry-After`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::process::Signal;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::common::net::free_ports;
use crate::common::node::*;
use crate::common::sse::*;

/// `--gossip.hosts` naming every node but `me`.
fn seeds_but(gossip: &[u16], me: usize) -> String {
    let hosts: Vec<String> = gossip
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != me)
        .map(|(_, port)| format!("127.0.0.1:{port}"))
        .collect();
    format!("--gossip.hosts={}", hosts.join(","))
}

/// Which process accepted each publish: (node index, its start count).
type Acceptors = Arc<Mutex<BTreeMap<u64, (usize, u64)>>>;

/// Publishes events 1, 2, ... every `every`, round-robin over `ports`, event `n` to
/// channel `roll` when `n` is even and to `side` otherwise (only `roll`'s are
/// recorded in `accepted`: the followers read `roll`; `side`'s events put holes in
/// every origin's sequence as a channel sees it, as any busy cluster does); a
/// refused publish (503 or no connection) goes to the next node with the same
/// `id`. Stops after `stop` flips; returns how many publishes were refused.
async fn steady_publisher(
    ports: Vec<u16>,
    generations: Arc<Vec<std::sync::atomic::AtomicU64>>,
    accepted: Acceptors,
    every: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) -> usize {
    use std::sync::atomic::Ordering::SeqCst;
    let client = client();
    let mut refused = 0;
    let mut node = 0;
    let mut tick = tokio::time::interval(every);
    for n in 1.. {
        tick.tick().await;
        if *stop.borrow() {
            break;
        }
        let body = json!({"id": format!("e{n}"), "data": {"n": n}});
        let channel = if n % 2 == 0 { "roll" } else { "side" };
        loop {
            let generation = generations[node].load(SeqCst);
            let url = format!("http://127.0.0.1:{}/channel/{channel}", ports[node]);
            let answer = client.post(&url).json(&body).send().await;
            match answer {
                Ok(response) if response.status().is_success() => {
                    let answer: Value = response.json().await.unwrap();
                    assert_eq!(answer["duplicate"], false, "event {n}: {answer}");
                    if channel == "roll" {
                        accepted.lock().unwrap().insert(n, (node, generation));
                    }
                    node = (node + 1) % ports.len();
                    break;
                }
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response.headers().get("retry-after").cloned();
                    let text = response.text().await.unwrap_or_default();
                    assert_eq!(status, 503, "event {n} on port {}: {text}", ports[node]);
                    assert!(retry_after.is_some(), "503 without Retry-After: {text}");
                    refused += 1;
                }
                Err(_) => refused += 1,
            }
            node = (node + 1) % ports.len();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    refused
}

/// Events a subscriber received, in order, and the named events (signals).
#[derive(Default)]
struct Received {
    events: Vec<Event>,
    signals: Vec<Event>,
    connections: usize,
}

/// An EventSource: follows `ports` from `first`, and when a stream ends or a
/// connection fails moves to the next node with the last event id.
async fn follower(ports: Vec<u16>, first: usize, received: Arc<Mutex<Received>>) {
    let mut node = first;
    let mut last_id: Option<String> = None;
    loop {
        let url = format!("http://127.0.0.1:{}/channel/roll", ports[node]);
        if let Ok(mut rx) = try_subscribe(url, last_id.clone()).await {
            received.lock().unwrap().connections += 1;
            while let Some(Some(event)) = rx.recv().await {
                let mut received = received.lock().unwrap();
                if event.event != "message" {
                    received.signals.push(event);
                } else {
                    last_id = Some(event.id.clone());
                    received.events.push(event);
                }
            }
        }
        node = (node + 1) % ports.len();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_steady_publishing_loses_nothing() {
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    let ports: Vec<(u16, u16)> = (0..3).map(|_| free_ports()).collect();
    let gossip: Vec<u16> = ports.iter().map(|p| p.1).collect();
    let http: Vec<u16> = ports.iter().map(|p| p.0).collect();
    let mut nodes: Vec<NodeProcess> = (0..3)
        .map(|i| NodeProcess::start_on(http[i], gossip[i], None, &[&seeds_but(&gossip, i)]))
        .collect();
    for node in &nodes {
        wait_for_members(node, 3).await;
    }
    let followers: Vec<Arc<Mutex<Received>>> = (0..6).map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for (k, received) in followers.iter().enumerate() {
        tasks.push(tokio::spawn(follower(
            http.clone(),
            k % 3,
            received.clone(),
        )));
    }
    // Every follower is connected before the first publish.
    let deadline = Instant::now() + Duration::from_secs(10);
    while followers.iter().any(|f| f.lock().unwrap().connections == 0) {
        assert!(Instant::now() < deadline, "followers did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let generations: Arc<Vec<AtomicU64>> = Arc::new((0..3).map(|_| AtomicU64::new(0)).collect());
    let accepted: Acceptors = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let publisher = tokio::spawn(steady_publisher(
        http.clone(),
        generations.clone(),
        accepted.clone(),
        Duration::from_millis(10),
        stop_rx,
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut drains = Vec::new();
    for i in 0..3 {
        let started = Instant::now();
        nodes[i].signal(Signal::TERM);
        let status = nodes[i].wait_exit(Duration::from_secs(20)).await;
        assert!(status.success(), "node {i} after SIGTERM: {status}");
        drains.push(started.elapsed());
        // Publishes read the generation before they are sent: one sent from here on
        // can only reach the new process.
        generations[i].fetch_add(1, SeqCst);
        nodes[i].start_again();
        for node in &nodes {
            wait_for_members(node, 3).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = stop_tx.send(true);
    let refused = publisher.await.unwrap();
    let accepted = accepted.lock().unwrap().clone();
    eprintln!(
        "rolling restart: {} events accepted, {refused} publishes refused and retried elsewhere, SIGTERM to exit: {drains:?}",
        accepted.len()
    );
    assert!(accepted.len() > 200, "too few events: {}", accepted.len());
    assert!(
        refused > 0,
        "no publish was refused: the restarts were not exercised"
    );

    // Each accepting process numbers its events 1, 2, ... in the order it took them:
    // per process, a subscriber must see them in that order.
    let mut rank: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut per_origin: HashMap<u64, u64> = HashMap::new();
    for (n, (node, generation)) in &accepted {
        let origin = *node as u64 * 1000 + generation;
        let count = per_origin.entry(origin).or_default();
        *count += 1;
        rank.insert(*n, (origin, *count));
    }
    let total = accepted.len();
    let deadline = Instant::now() + Duration::from_secs(20);
    while followers
        .iter()
        .any(|f| f.lock().unwrap().events.len() < total)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for task in &tasks {
        task.abort();
    }
    for (k, follower) in followers.iter().enumerate() {
        let received = follower.lock().unwrap();
        assert!(
            received.signals.is_empty(),
            "follower {k} got signals: {:?}",
            received.signals
        );
        assert!(received.connections >= 2, "follower {k} never moved");
        let events: Vec<Event> = received
            .events
            .iter()
            .map(|event| {
                let value: Value = serde_json::from_str(&event.data).unwrap();
                let n = value["n"].as_u64().unwrap();
                let (origin, rank) = rank
                    .get(&n)
                    .copied()
                    .unwrap_or_else(|| panic!("follower {k}: event {n} was never accepted"));
                Event {
                    data: json!({"origin": origin, "n": rank}).to_string(),
                    ..event.clone()
                }
            })
            .collect();
        check_exactly_once(&events, &per_origin);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_draining_a_node_is_not_ready_refuses_publishes_and_logs_what_was_left() {
    let (a_http, a_gossip) = free_ports();
    let (b_http, b_gossip) = free_ports();
    let log = std::env::temp_dir().join(format!("sse-drain-{}-{a_http}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let mut a = NodeProcess::start_logged(
        a_http,
        a_gossip,
        &[
            &format!("--gossip.hosts=127.0.0.1:{b_gossip}"),
            "--shutdown.drainTimeout=1500ms",
        ],
        log.clone(),
    );
    let b = NodeProcess::start_on(b_http, b_gossip, Some(a_gossip), &[]);
    for node in [&a, &b] {
        wait_for_members(node, 2).await;
    }
    let mut on_b = subscribe(b.url("/channel/held"), None).await;
    publish(&a, "held", json!(1)).await;
    let (events, _, _) = collect(&mut on_b, 1, Duration::from_secs(5)).await;
    assert_eq!(events.len(), 1, "b pulls from a");

    // b stops reading: what a accepts next stays unpulled.
    b.signal(Signal::STOP);
    publish(&a, "held", json!(2)).await;
    let started = Instant::now();
    a.signal(Signal::TERM);
    let client = client();
    let deadline = started + Duration::from_secs(1);
    let mut saw_not_ready = false;
    while Instant::now() < deadline && !saw_not_ready {
        let ready = client.get(a.url("/readyz")).send().await.unwrap();
        saw_not_ready = ready.status() == 503;
    }
    assert!(saw_not_ready, "/readyz stayed 200 after SIGTERM");
    let refused = client
        .post(a.url("/channel/held"))
        .json(&json!({"id": "x", "data": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(
        refused.headers().get("retry-after").is_some(),
        "no Retry-After"
    );
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("stopping")),
        "{body}"
    );
    // Bulk publishes, to one channel and to every channel, are refused alike.
    for path in ["/channel/held", "/channel"] {
        let refused = client
            .post(a.url(path))
            .header("content-type", "application/x-ndjson")
            .body("{\"id\":\"y\",\"data\":4}\n{\"data\":5}\n")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 503, "bulk publish to {path}");
        assert!(refused.headers().get("retry-after").is_some());
    }
    assert_eq!(
        a.metric("sse_request_errors_total{kind=\"draining\"}")
            .await,
        3
    );

    let status = a.wait_exit(Duration::from_secs(10)).await;
    let took = started.elapsed();
    b.signal(Signal::CONT);
    assert!(status.success(), "{status}");
    assert!(
        took >= Duration::from_millis(1500),
        "a did not wait for b: exited after {took:?}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let line = text
        .lines()
        .find(|l| l.contains("drain timed out"))
        .unwrap_or_else(|| panic!("no drain timeout logged:\n{text}"));
    assert!(
        line.contains("accepted=2")
            && line.contains("sent_upto=2")
            && line.contains(&format!(":{b_http}")),
        "{line}"
    );
}

/// A drained node leaves once its peers read its departure (each closes its relay
/// stream on reading it): at its exit they already count it as gone, without waiting
/// for their failure detectors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_exits_once_its_peers_read_its_departure() {
    let (a_http, a_gossip) = free_ports();
    let log = std::env::temp_dir().join(format!("sse-leave-{}-{a_http}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let mut a = NodeProcess::start_logged(a_http, a_gossip, &[], log.clone());
    let b = NodeProcess::start(Some(a_gossip), &[]);
    let c = NodeProcess::start(Some(a_gossip), &[]);
    for node in [&a, &b, &c] {
        wait_for_members(node, 3).await;
    }
    publish(&a, "leave", json!(1)).await;
    a.signal(Signal::TERM);
    let status = a.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    for peer in [&b, &c] {
        let status = crate::common::net::get_json(&client(), &peer.url("/status")).await;
        assert_eq!(
            status["gossip"]["member_count"],
            2,
            "right after a's exit, {} still counts it: {status}",
            peer.url("")
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("every live peer read the departure"),
        "a did not see its peers confirm: {text}"
    );
}
