//! The real binary: command line, environment variables and signals.

use std::collections::BTreeMap;
use std::time::Duration;

use rustix::process::Signal;
use tokio::time::Instant;

use crate::common::net::free_ports;
use crate::common::node::{assert_start_refused, run_binary, NodeProcess};
use crate::common::server::*;

/// A node started from the binary with `args` and only the environment `env`, on
/// HTTP port `port` (which `args` or `env` sets); returns once it answers.
async fn start(args: &[&str], env: &[(&str, &str)], port: u16) -> NodeProcess {
    start_through(&[], args, env, port).await
}

/// Like [`start`], through `launcher` (e.g. `taskset -c 0`).
async fn start_through(
    launcher: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
    port: u16,
) -> NodeProcess {
    let mut builder = NodeProcess::builder()
        .http_port_set_by_test(port)
        .through(launcher)
        .args(&["--log.level", "warn"])
        .args(args)
        .clean_env();
    for (name, value) in env {
        builder = builder.env(name, value);
    }
    let node = builder.spawn();
    node.wait_healthy().await;
    node
}

/// The configuration table of the README: flag → (env names, default).
fn readme_options() -> BTreeMap<String, (Vec<String>, String)> {
    let table = readme_from("## Configuration");
    let mut options = BTreeMap::new();
    for row in table.lines().filter(|l| l.starts_with("| `--")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let ticked = |cell: &str| -> Vec<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        };
        let envs = ticked(cells[2]);
        let default = ticked(cells[3]).into_iter().next().unwrap_or_default();
        for flag in ticked(cells[1]) {
            options.insert(flag, (envs.clone(), default.clone()));
        }
    }
    assert!(options.len() >= 15, "parsed {options:?}");
    options
}

/// `start --help` as option → its description (whitespace normalised).
fn help_options(help: &str) -> BTreeMap<String, String> {
    let mut options: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Vec<String> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('-') && line.len() - trimmed.len() <= 6 {
            // "-h, --help" or "--name <VALUE>"; the description follows.
            current = trimmed
                .split([' ', ','])
                .filter(|w| w.starts_with("--"))
                .map(str::to_owned)
                .collect();
            for flag in &current {
                options.insert(flag.clone(), String::new());
            }
        } else if !trimmed.is_empty() {
            for flag in &current {
                let text = options.entry(flag.clone()).or_default();
                text.push(' ');
                text.push_str(trimmed);
            }
        }
    }
    // Aliases are listed in their option's description: `[alias: --old.name]`.
    let aliases: Vec<(String, String)> = options
        .values()
        .flat_map(|text| {
            let listed = text
                .split("[alias")
                .skip(1)
                .filter_map(|rest| rest.split_once(']'));
            listed
                .flat_map(|(names, _)| names.split([' ', ',', ':']))
                .filter(|w| w.starts_with("--"))
                .map(|alias| (alias.to_owned(), text.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    options.extend(aliases);
    options
}

#[tokio::test]
async fn help_lists_every_option_of_the_readme() {
    let top = run_binary(&["--help"], &[]).await;
    assert!(top.status.success());
    let top = String::from_utf8(top.stdout).expect("UTF-8");
    assert!(top.contains("start") && top.contains("--version"), "{top}");

    let output = run_binary(&["start", "--help"], &[]).await;
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).expect("UTF-8");
    let in_help = help_options(&help);
    let in_readme = readme_options();
    for (flag, (envs, default)) in &in_readme {
        let text = in_help
            .get(flag)
            .unwrap_or_else(|| panic!("{flag} is in the README but not in start --help:\n{help}"));
        for env in envs {
            assert!(
                text.contains(env.as_str()),
                "{flag}: help does not mention {env}: {text}"
            );
        }
        if !default.is_empty() {
            let normalised = text.replace(['[', ']'], " ");
            assert!(
                normalised.contains(&format!("default: {default}")),
                "{flag}: README says default {default}, help says {text}"
            );
        }
    }
    for flag in in_help.keys().filter(|f| *f != "--help") {
        assert!(
            in_readme.contains_key(flag),
            "{flag} is in start --help but not in the README"
        );
    }
}

#[tokio::test]
async fn version_prints_the_version() {
    let output = run_binary(&["--version"], &[]).await;
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).expect("UTF-8").trim(),
        format!("sse-cluster {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn a_bad_value_prints_one_line_naming_the_option_and_exits_2() {
    for (args, option) in [
        (&["--gossip.port", "x"][..], "--gossip.port"),
        (&["--replay.age", "5d"][..], "--replay.age"),
        (&["--subscriber.buffer", "99999"][..], "--subscriber.buffer"),
        (
            &["--http.server.keepAlive", "0s"][..],
            "--http.server.keepAlive",
        ),
        (
            &["--http.server.bodyTimeout", "0s"][..],
            "--http.server.bodyTimeout",
        ),
        (&["--log.format", "xml"][..], "--log.format"),
        (&["--no.such.flag", "1"][..], "--no.such.flag"),
    ] {
        assert_start_refused(args, &[], option).await;
    }
    // The same check applies to values from the environment.
    assert_start_refused(&[], &[("SUBSCRIBER_BUFFER", "99999")], "subscriber.buffer").await;
}

#[tokio::test]
async fn environment_variables_configure_the_node() {
    let (port, _) = free_ports();
    let port_text = port.to_string();
    let node = start(&[], &[("HTTP_SERVER_PORT", &port_text)], port).await;
    let response = reqwest::get(node.url("/status")).await.expect("status");
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    node.stop().await;

    let (port, _) = free_ports();
    let port_text = port.to_string();
    let node = start(&[], &[("HTTP_PORT", &port_text)], port).await;
    node.stop().await;

    let (port, _) = free_ports();
    let node = start(
        &["--http.server.port", &port.to_string()],
        &[
            ("HTTP_SERVER_ENABLE_CORS", "true"),
            ("HTTP_SERVER_RETRY", "1500ms"),
        ],
        port,
    )
    .await;
    let response = reqwest::get(node.url("/status")).await.expect("status");
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.as_bytes()),
        Some(&b"*"[..])
    );
    let addr = ([127, 0, 0, 1], port).into();
    let mut stream = RawStream::get(addr, "/channel/env", &[]).await;
    assert_eq!(
        stream.next_block().await.as_deref(),
        Some("retry: 1500\n\n")
    );
    drop(stream);
    node.stop().await;
}

#[tokio::test]
async fn a_node_confined_to_one_cpu_runs_on_one_thread_and_serves() {
    let Ok(taskset) = which("taskset") else {
        eprintln!("SKIPPED: taskset (util-linux) is not installed");
        return;
    };
    let (port, _) = free_ports();
    let taskset = taskset.to_str().expect("a UTF-8 path");
    let node = start_through(
        &[taskset, "-c", "0"],
        &["--http.server.port", &port.to_string()],
        &[],
        port,
    )
    .await;
    let pid = node.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .map(|n| n.trim().to_owned());
    assert_eq!(
        threads.as_deref(),
        Some("1"),
        "the current-thread scheduler"
    );
    let addr = ([127, 0, 0, 1], port).into();
    let mut stream = RawStream::get(addr, "/channel/one-cpu", &[]).await;
    stream.next_block().await.expect("retry block");
    stream.next_block().await.expect("cursor block");
    let answer = reqwest::Client::new()
        .post(node.url("/channel/one-cpu"))
        .json(&serde_json::json!({ "data": "on one thread" }))
        .send()
        .await
        .expect("publish");
    assert_eq!(answer.status(), 200);
    let block = stream.next_block().await.expect("the event");
    assert!(block.contains("data: \"on one thread\""), "{block}");
    node.stop().await;
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .ok_or(())
}

async fn open_streams_end_on(signal: Signal) {
    let _heavy = HEAVY.lock().await;
    const STREAMS: usize = 1000;
    let (port, _) = free_ports();
    // Every stream comes from 127.0.0.1: room for them all, and the scrape.
    let node = start(
        &[
            "--http.server.port",
            &port.to_string(),
            "--http.server.maxConnectionsPerAddress",
            "2000",
        ],
        &[],
        port,
    )
    .await;
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut streams = Vec::with_capacity(STREAMS);
    for batch in 0..STREAMS / 100 {
        let opening: Vec<_> = (0..100)
            .map(|i| {
                tokio::spawn(async move {
                    let path = format!("/channel/shutdown-{}", (batch * 100 + i) % 50);
                    open_stream(addr, &path, &[]).await
                })
            })
            .collect();
        for stream in opening {
            streams.push(stream.await.expect("open a stream"));
        }
    }
    assert_eq!(node.metric("sse_subscribers").await, STREAMS as u64);

    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| tokio::spawn(async move { stream.read_to_end(WAIT).await }))
        .collect();
    let started = Instant::now();
    let mut node = node;
    node.signal(signal);
    let exit = node.wait_exit(WAIT).await;
    let exited = started.elapsed();
    assert_eq!(exit.code(), Some(0), "{signal:?}: {exit}");
    for reader in readers {
        // Every stream ended (a timeout inside would fail the reader task).
        reader.await.expect("the stream ends");
    }
    let ended = started.elapsed();
    eprintln!("{signal:?} with {STREAMS} streams: exit 0 after {exited:?}, all streams ended after {ended:?}");
    assert!(exited < Duration::from_secs(5), "{exited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_every_stream_and_exits_0() {
    open_streams_end_on(Signal::TERM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_ends_every_stream_and_exits_0() {
    open_streams_end_on(Signal::INT).await;
}
