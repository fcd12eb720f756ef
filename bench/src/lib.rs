//! `sse-cluster bench`: a load generator for SSE brokers, in the spirit of
//! `nats bench`. It opens subscribers over several channels, publishes timestamped
//! payloads at a target delivery rate, and reports connect rate, idle memory per
//! subscriber, delivery rate and completeness, server CPU per delivery and latency.
//!
//! It speaks plain HTTP/1.1 with URL templates, so the same run works against this
//! broker, nchan, or the ceiling server (`bench/ceiling.c`). A crate of its own: the
//! `sse-cluster` binary offers it as its `bench` command, and the server library
//! does not contain it.

mod http;
mod load;
mod procfs;
mod report;
mod sse;

use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use sse_cluster_client::parse_duration;
use tokio::sync::{mpsc, watch, Semaphore};

use http::UrlTemplate;
use load::{open_subscriber, run_publisher, run_subscriber, PublisherPlan, Shared};
use report::{Latency, Report};

/// How a publish request carries the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PubFormat {
    /// `{"data": "<payload>"}` as `application/json` (sse-cluster).
    SseCluster,
    /// The payload itself as the body (nchan, the ceiling server).
    Raw,
}

/// Options of `sse-cluster bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Subscribe URL; `{channel}` is replaced by each channel's name. Repeat it to
    /// spread subscribers round-robin over several nodes.
    #[arg(long, default_value = "http://127.0.0.1:8080/channel/{channel}")]
    sub_url: Vec<String>,
    /// Publish URL; `{channel}` is replaced by each channel's name. Repeat it to
    /// spread publishers round-robin over several nodes.
    #[arg(long, default_value = "http://127.0.0.1:8080/channel/{channel}")]
    pub_url: Vec<String>,
    /// Publish body format.
    #[arg(long, value_enum, default_value_t = PubFormat::SseCluster)]
    pub_format: PubFormat,
    /// Subscribers, spread evenly over the channels.
    #[arg(short = 'n', long, default_value_t = 2000)]
    subscribers: usize,
    /// Channels.
    #[arg(short = 'c', long, default_value_t = 10)]
    channels: usize,
    /// Publisher connections (each sends one request at a time).
    #[arg(short = 'p', long, default_value_t = 4)]
    publishers: usize,
    /// Events per publish request: more than 1 sends bulk publishes
    /// (`application/x-ndjson`, one event a line; sse-cluster format only).
    #[arg(short = 'b', long, default_value_t = 1)]
    batch: usize,
    /// Target deliveries per second over all subscribers (0: publish back-to-back).
    #[arg(short = 'r', long, default_value_t = 100_000)]
    rate: u64,
    /// How long to publish; 0s only opens the subscribers and measures memory.
    #[arg(short = 'd', long, default_value = "15s", value_parser = parse_duration)]
    duration: Duration,
    /// Payload bytes per event (the send timestamp, then padding).
    #[arg(short = 's', long, default_value_t = 100)]
    size: usize,
    /// Server process ids for memory and CPU figures (several for a cluster).
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Channel names are this prefix, a dash and a number.
    #[arg(long, default_value = "bench")]
    channel_prefix: String,
    /// Subscribe requests in flight at once while connecting.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Pause after the last subscriber connected, before measuring idle memory.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    settle: Duration,
    /// How long to wait for outstanding deliveries after the last publish.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Name of the server under test in the report.
    #[arg(long, default_value = "sse-cluster")]
    label: String,
    /// Print one JSON line instead of the table.
    #[arg(long)]
    json: bool,
}

/// Runs the benchmark. Exit code 1 when deliveries were lost or duplicated or
/// subscribers failed to connect, 2 on bad options.
pub fn run(args: BenchArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(&args)) {
        Ok(report) => {
            if args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_table());
            }
            let complete = report.delivered_ratio.is_none_or(|r| r == 1.0);
            if complete && report.connect_failures == 0 && report.connected > 0 {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "bench: incomplete run (lost or duplicated deliveries, or failed connections)"
                );
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

async fn bench(args: &BenchArgs) -> Result<Report, String> {
    if args.subscribers == 0 || args.channels == 0 || args.publishers == 0 || args.batch == 0 {
        return Err(
            "--subscribers, --channels, --publishers and --batch must be at least 1".into(),
        );
    }
    if args.batch > 1 && args.pub_format != PubFormat::SseCluster {
        return Err("--batch above 1 needs --pub-format sse-cluster (bulk publishes)".into());
    }
    let sub_urls = parse_urls(&args.sub_url)?;
    let pub_urls = parse_urls(&args.pub_url)?;
    let names: Vec<String> = (0..args.channels)
        .map(|i| format!("{}-{i}", args.channel_prefix))
        .collect();
    let pids = &args.server_pid;
    let pss_before = measure(pids, procfs::pss_kib)?;

    // Connect every subscriber, a bounded number at a time.
    let shared = Arc::new(Shared::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Result<usize, String>>();
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let connect_started = Instant::now();
    let mut subscribers = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        let channel = i % args.channels;
        let sub_url = &sub_urls[i % sub_urls.len()];
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
            sub_url.path(&names[channel]),
            sub_url.host
        );
        let addr = sub_url.connect.clone();
        let (shared, stop, ready, gate) = (
            shared.clone(),
            stop_rx.clone(),
            ready_tx.clone(),
            gate.clone(),
        );
        subscribers.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            match open_subscriber(&addr, request.as_bytes()).await {
                Ok((stream, head, first)) => {
                    drop(permit);
                    let _ = ready.send(Ok(channel));
                    run_subscriber(shared, stream, head, first, stop).await
                }
                Err(error) => {
                    let _ = ready.send(Err(error));
                    Vec::new()
                }
            }
        }));
    }
    drop(ready_tx);
    let mut fanout = vec![0u64; args.channels];
    let mut failures = 0;
    let mut first_error = None;
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    progress.tick().await;
    let mut answered = 0;
    while answered < args.subscribers {
        tokio::select! {
            result = ready_rx.recv() => match result {
                Some(Ok(channel)) => { fanout[channel] += 1; answered += 1; }
                Some(Err(error)) => {
                    failures += 1;
                    answered += 1;
                    first_error.get_or_insert(error);
                }
                None => break,
            },
            _ = progress.tick() => eprintln!(
                "bench: connecting {answered}/{} ({failures} failed)",
                args.subscribers
            ),
        }
    }
    let connect_time = connect_started.elapsed();
    let connected: usize = fanout.iter().sum::<u64>() as usize;
    if let Some(error) = &first_error {
        eprintln!("bench: {failures} subscribers failed; first error: {error}");
    }
    eprintln!(
        "bench: {connected} subscribers connected in {:.2}s",
        connect_time.as_secs_f64()
    );
    tokio::time::sleep(args.settle).await;
    let pss_after = measure(pids, procfs::pss_kib)?;

    let mut report = Report {
        label: args.label.clone(),
        sub_url: args.sub_url.join(" "),
        pub_url: args.pub_url.join(" "),
        subscribers: args.subscribers,
        connected,
        connect_failures: failures,
        channels: args.channels,
        publishers: args.publishers,
        batch: args.batch,
        payload_bytes: args.size,
        target_rate_per_s: args.rate,
        duration_s: args.duration.as_secs_f64(),
        connect_rate_per_s: connected as f64 / connect_time.as_secs_f64().max(1e-9),
        idle_pss_before_kib: pss_before,
        idle_pss_after_kib: pss_after,
        idle_bytes_per_subscriber: match (pss_before, pss_after) {
            (Some(before), Some(after)) if connected > 0 => {
                Some((after as f64 - before as f64) * 1024.0 / connected as f64)
            }
            _ => None,
        },
        published: 0,
        publish_errors: 0,
        publish_rate_per_s: 0.0,
        expected_deliveries: 0,
        delivered: 0,
        delivered_ratio: None,
        deliveries_per_s: 0.0,
        stream_errors: 0,
        foreign_events: 0,
        server_cpu_s: None,
        server_cpu_us_per_delivery: None,
        deliveries_per_core_s: None,
        events_per_core_s: None,
        client_cpu_s: None,
        latency_p50_us: None,
        latency_p99_us: None,
        latency_p999_us: None,
        latency_max_us: None,
    };

    if !args.duration.is_zero() && connected > 0 {
        publish_phase(args, &shared, &pub_urls, &names, fanout, &mut report).await?;
    }

    let _ = stop_tx.send(true);
    let mut samples = Vec::new();
    for subscriber in subscribers {
        if let Ok(mut latencies) = subscriber.await {
            samples.append(&mut latencies);
        }
    }
    report.stream_errors = shared.stream_errors.load(Relaxed);
    report.foreign_events = shared.foreign_events.load(Relaxed);
    if let Some(latency) = Latency::from_nanos(samples) {
        report.latency_p50_us = Some(latency.p50);
        report.latency_p99_us = Some(latency.p99);
        report.latency_p999_us = Some(latency.p999);
        report.latency_max_us = Some(latency.max);
    }
    Ok(report)
}

/// Publishes for `--duration`, waits for the deliveries to drain, and fills in the
/// delivery and CPU figures.
async fn publish_phase(
    args: &BenchArgs,
    shared: &Arc<Shared>,
    pub_urls: &[UrlTemplate],
    names: &[String],
    fanout: Vec<u64>,
    report: &mut Report,
) -> Result<(), String> {
    let pids = &args.server_pid;
    let connected: u64 = fanout.iter().sum();
    // Deliveries per publish, averaged over the channels the publishes rotate through.
    let per_publish = connected as f64 / args.channels as f64;
    let interval = if args.rate == 0 {
        Duration::ZERO
    } else {
        let publishes_per_s = args.rate as f64 / per_publish.max(1e-9);
        Duration::from_secs_f64(args.publishers as f64 * args.batch as f64 / publishes_per_s)
    };
    let fanout = Arc::new(fanout);
    let cpu_before = measure(pids, procfs::cpu_seconds)?;
    let me = [std::process::id()];
    let client_cpu_before = procfs::cpu_seconds(&me).ok();
    let started = tokio::time::Instant::now();
    let started_ns = shared.now_ns();
    let until = started + args.duration;
    // Publishers get their own thread and runtime: on the subscribers' runtime a
    // publisher's wake-up would queue behind every delivery it caused, and the
    // publish rate would measure the client instead of the server.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let mut plans = Vec::with_capacity(args.publishers);
    for j in 0..args.publishers {
        let pub_url = &pub_urls[j % pub_urls.len()];
        let paths: Arc<Vec<String>> = Arc::new(names.iter().map(|n| pub_url.path(n)).collect());
        let plan = PublisherPlan {
            addr: pub_url.connect.clone(),
            host: pub_url.host.clone(),
            paths,
            fanout: fanout.clone(),
            format: args.pub_format,
            batch: args.batch,
            payload_bytes: args.size,
            interval,
            // Stagger the publishers evenly inside one interval.
            start: started + interval.mul_f64(j as f64 / args.publishers as f64),
            until,
        };
        plans.push(plan);
    }
    let publisher_shared = shared.clone();
    let publisher_thread = std::thread::Builder::new()
        .name("bench-publishers".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(async move {
                    let tasks: Vec<_> = plans
                        .into_iter()
                        .map(|plan| tokio::spawn(run_publisher(publisher_shared.clone(), plan)))
                        .collect();
                    for task in tasks {
                        let _ = task.await;
                    }
                }),
                Err(error) => eprintln!("bench: cannot start the publisher runtime: {error}"),
            }
            let _ = done_tx.send(());
        })
        .map_err(|e| format!("cannot start the publisher thread: {e}"))?;
    let mut done_rx = done_rx;
    let mut publishing = true;
    let mut last_progress = Instant::now();
    let mut last_delivered = 0;
    let mut drain_started: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut ticks = 0u64;
    loop {
        tick.tick().await;
        ticks += 1;
        let delivered = shared.delivered.load(Relaxed);
        let expected = shared.expected.load(Relaxed);
        if ticks.is_multiple_of(20) {
            eprintln!(
                "bench: {:.0}s published {} delivered {delivered}/{expected}",
                started.elapsed().as_secs_f64(),
                shared.published.load(Relaxed),
            );
        }
        if delivered != last_delivered {
            last_delivered = delivered;
            last_progress = Instant::now();
        }
        if publishing {
            if !matches!(
                done_rx.try_recv(),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty)
            ) {
                publishing = false;
                drain_started = Some(Instant::now());
            }
            continue;
        }
        let drained = delivered >= expected;
        let stalled = last_progress.elapsed() > Duration::from_secs(2);
        let timed_out = drain_started.is_some_and(|t| t.elapsed() > args.drain_timeout);
        if drained || stalled || timed_out {
            break;
        }
    }
    let _ = publisher_thread.join();
    let cpu_after = measure(pids, procfs::cpu_seconds)?;
    if let (Some(before), Ok(after)) = (client_cpu_before, procfs::cpu_seconds(&me)) {
        report.client_cpu_s = Some((after - before).max(0.0));
    }
    let delivered = shared.delivered.load(Relaxed);
    let expected = shared.expected.load(Relaxed);
    let published = shared.published.load(Relaxed);
    let span_ns = shared
        .last_delivery_ns
        .load(Relaxed)
        .saturating_sub(started_ns)
        .max(1);
    report.published = published;
    report.publish_errors = shared.publish_errors.load(Relaxed);
    report.publish_rate_per_s = published as f64 / args.duration.as_secs_f64();
    report.expected_deliveries = expected;
    report.delivered = delivered;
    report.delivered_ratio = (expected > 0).then(|| delivered as f64 / expected as f64);
    report.deliveries_per_s = delivered as f64 * 1e9 / span_ns as f64;
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let cpu = (after - before).max(0.0);
        report.server_cpu_s = Some(cpu);
        if delivered > 0 && cpu > 0.0 {
            report.server_cpu_us_per_delivery = Some(cpu * 1e6 / delivered as f64);
            report.deliveries_per_core_s = Some(delivered as f64 / cpu);
        }
        if published > 0 && cpu > 0.0 {
            report.events_per_core_s = Some(published as f64 / cpu);
        }
    }
    Ok(())
}

fn parse_urls(urls: &[String]) -> Result<Vec<UrlTemplate>, String> {
    let parsed = urls
        .iter()
        .map(|url| UrlTemplate::parse(url))
        .collect::<Result<Vec<_>, _>>()?;
    if parsed.is_empty() {
        return Err("at least one URL is needed".into());
    }
    Ok(parsed)
}

/// A figure of the server processes, or `None` without `--server-pid`.
fn measure<T>(
    pids: &[u32],
    read: impl Fn(&[u32]) -> std::io::Result<T>,
) -> Result<Option<T>, String> {
    if pids.is_empty() {
        return Ok(None);
    }
    read(pids)
        .map(Some)
        .map_err(|e| format!("reading /proc for --server-pid {pids:?}: {e}"))
}
