//! The node harness: `sse-cluster start` as a child process on loopback, and waits
//! on what it reports. Every test that runs the binary as a node starts it here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use sse_cluster_client::{Publish, Published, Publisher};
use tokio::time::{timeout, Instant};

use super::{metrics, net};

/// How long a node may take to answer, and any wait on its metrics.
const WAIT: Duration = Duration::from_secs(15);

/// Node logs stay quiet (warnings, discarded) unless `NODE_LOG` sets a filter, in
/// which case they go to the test's stderr.
pub(crate) fn quiet_unless_node_log(command: &mut Command) -> &mut Command {
    let filter = std::env::var("NODE_LOG").ok();
    command
        .env("RUST_LOG", filter.as_deref().unwrap_or("warn"))
        .stdout(Stdio::null())
        .stderr(if filter.is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
}

/// Where a node's log goes.
enum Log {
    /// Warnings, discarded unless `NODE_LOG` is set ([`quiet_unless_node_log`]).
    Quiet,
    /// Info level as text, appended to a file the test names and reads.
    File(PathBuf),
    /// Warnings, to a file of the harness's that the test reads with
    /// [`NodeProcess::log`]; removed when the node is dropped.
    Kept(PathBuf),
}

/// How to start a node: [`NodeProcess::builder`], then [`NodeBuilder::spawn`].
pub(crate) struct NodeBuilder {
    http: u16,
    gossip: u16,
    /// The harness passes `--http.server.port`; false when the test sets the port.
    port_flag: bool,
    /// A program (and its arguments) that runs the binary, as `taskset -c 0`.
    launcher: Vec<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    clean_env: bool,
    log: Log,
}

impl NodeBuilder {
    /// Chosen ports instead of free ones (a node started again where another was).
    pub(crate) fn ports(mut self, http: u16, gossip: u16) -> Self {
        self.http = http;
        self.gossip = gossip;
        self
    }

    /// The test sets the HTTP port itself, `http`, with a flag or an environment
    /// variable of its own: the harness passes no `--http.server.port`.
    pub(crate) fn http_port_set_by_test(mut self, http: u16) -> Self {
        self.http = http;
        self.port_flag = false;
        self
    }

    /// Runs the binary through `launcher` (a program and its arguments, which then
    /// run the binary with its own), as `taskset -c 0`.
    pub(crate) fn through(mut self, launcher: &[&str]) -> Self {
        self.launcher = launcher.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Joins the cluster through the node whose gossip port is `seed`.
    pub(crate) fn seed(mut self, seed: Option<u16>) -> Self {
        if let Some(seed) = seed {
            self.args.push(format!("--gossip.hosts=127.0.0.1:{seed}"));
        }
        self
    }

    pub(crate) fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Starts the node with no environment but `RUST_LOG` and what [`Self::env`]
    /// sets, so the test's own environment cannot configure it.
    pub(crate) fn clean_env(mut self) -> Self {
        self.clean_env = true;
        self
    }

    pub(crate) fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The node's log at info level, as text, appended to `path`.
    pub(crate) fn log_to(mut self, path: PathBuf) -> Self {
        self.log = Log::File(path);
        self
    }

    /// The node's warnings kept for [`NodeProcess::log`] (a panic shows there).
    pub(crate) fn keep_log(mut self) -> Self {
        self.log = Log::Kept(std::env::temp_dir().join(format!(
            "sse-node-{}-{}.log",
            std::process::id(),
            self.http
        )));
        self
    }

    /// Starts the process; it may not listen yet (see the `wait_` methods).
    pub(crate) fn spawn(self) -> NodeProcess {
        if let Log::Kept(path) = &self.log {
            std::fs::File::create(path).expect("the node's log file");
        }
        let mut args = self.launcher;
        args.push(env!("CARGO_BIN_EXE_sse-cluster").to_owned());
        args.push("start".to_owned());
        if self.port_flag {
            args.push(format!("--http.server.port={}", self.http));
        }
        args.push("--http.server.address=127.0.0.1".to_owned());
        args.push(format!("--gossip.port={}", self.gossip));
        args.extend(self.args);
        let mut node = NodeProcess {
            http: self.http,
            gossip: self.gossip,
            client: reqwest::Client::new(),
            child: None,
            args,
            env: self.env,
            clean_env: self.clean_env,
            log: self.log,
        };
        node.spawn();
        node
    }
}

/// One node process; killed when dropped (its log's tail printed if the test failed).
pub(crate) struct NodeProcess {
    pub(crate) http: u16,
    pub(crate) gossip: u16,
    /// A client for the node's HTTP API.
    pub(crate) client: reqwest::Client,
    child: Option<Child>,
    /// The program (the binary, or its launcher) and its arguments.
    args: Vec<String>,
    env: Vec<(String, String)>,
    clean_env: bool,
    log: Log,
}

impl NodeProcess {
    /// A node on free loopback ports with no flags of the test's yet.
    pub(crate) fn builder() -> NodeBuilder {
        let (http, gossip) = net::free_ports();
        NodeBuilder {
            http,
            gossip,
            port_flag: true,
            launcher: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            clean_env: false,
            log: Log::Quiet,
        }
    }

    /// A cluster member: `seed` is another node's gossip port; relays and forwards
    /// give up after 3 s.
    pub(crate) fn start(seed: Option<u16>, extra: &[&str]) -> NodeProcess {
        let (http, gossip) = net::free_ports();
        Self::start_on(http, gossip, seed, extra)
    }

    /// Like [`NodeProcess::start`], on chosen ports.
    pub(crate) fn start_on(
        http: u16,
        gossip: u16,
        seed: Option<u16>,
        extra: &[&str],
    ) -> NodeProcess {
        Self::cluster_member(http, gossip, seed, extra).spawn()
    }

    /// Like [`NodeProcess::start_on`] (no seed), with the node's log (info level)
    /// appended to `log`.
    pub(crate) fn start_logged(
        http: u16,
        gossip: u16,
        extra: &[&str],
        log: PathBuf,
    ) -> NodeProcess {
        Self::cluster_member(http, gossip, None, extra)
            .log_to(log)
            .spawn()
    }

    fn cluster_member(http: u16, gossip: u16, seed: Option<u16>, extra: &[&str]) -> NodeBuilder {
        Self::builder()
            .ports(http, gossip)
            .args(&["--http.client.timeout=3s"])
            .seed(seed)
            .args(extra)
    }

    fn spawn(&mut self) {
        let mut command = Command::new(&self.args[0]);
        command.args(&self.args[1..]);
        if self.clean_env {
            command.env_clear();
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        match &self.log {
            Log::Quiet => {
                quiet_unless_node_log(&mut command);
            }
            Log::File(path) | Log::Kept(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("open the node's log file");
                let level = if matches!(self.log, Log::File(_)) {
                    "info"
                } else {
                    "warn"
                };
                command
                    .env("RUST_LOG", level)
                    .env("LOG_FORMAT", "text")
                    .stdout(Stdio::null())
                    .stderr(file);
            }
        }
        command.stdin(Stdio::null());
        self.child = Some(command.spawn().expect("start sse-cluster"));
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http))
    }

    /// The process id, while it runs.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// What the node wrote to its log file so far (empty for a quiet node).
    pub(crate) fn log(&self) -> String {
        match &self.log {
            Log::Quiet => String::new(),
            Log::File(path) | Log::Kept(path) => std::fs::read_to_string(path).unwrap_or_default(),
        }
    }

    /// Waits (blocking the thread, for tests without a runtime) until the node
    /// accepts connections.
    pub(crate) fn wait_listening(&self) {
        let deadline = std::time::Instant::now() + WAIT;
        while std::net::TcpStream::connect(self.addr()).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "node on port {} did not listen in time",
                self.http
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `/healthz` answers 200: the node serves HTTP.
    pub(crate) async fn wait_healthy(&self) {
        self.wait_ok("/healthz").await
    }

    /// Waits until `/readyz` answers 200: the node is ready for traffic.
    pub(crate) async fn wait_ready(&self) {
        self.wait_ok("/readyz").await
    }

    async fn wait_ok(&self, path: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(response) = self.client.get(self.url(path)).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node on port {} did not answer {path}: {}",
                self.http,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The node is still running, never panicked, and answers a fresh client.
    pub(crate) async fn assert_healthy(&mut self) {
        let child = self.child.as_mut().expect("running");
        assert!(
            child.try_wait().expect("child status").is_none(),
            "node exited: {}",
            self.log()
        );
        let log = self.log();
        assert!(!log.contains("panicked"), "node panicked: {log}");
        let response = timeout(WAIT, reqwest::get(self.url("/healthz")))
            .await
            .expect("healthz in time")
            .expect("healthz");
        assert_eq!(response.status(), 200);
    }

    /// POSTs `body` as JSON to `path`; the status and the answer's text.
    pub(crate) async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("publish request");
        let status = response.status().as_u16();
        (status, response.text().await.expect("answer body"))
    }

    pub(crate) async fn json(&self, path: &str) -> Value {
        net::get_json(&self.client, &self.url(path)).await
    }

    /// The node process's peak resident memory (`VmHWM`), in KiB.
    #[cfg(target_os = "linux")]
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the node's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status")
    }

    pub(crate) async fn metric(&self, name: &str) -> u64 {
        metrics::scrape(&self.client, &self.url("/metrics"), name).await
    }

    /// Waits until `check` holds for metric `name`; returns its value.
    pub(crate) async fn wait_metric(&self, name: &str, check: impl Fn(u64) -> bool) -> u64 {
        metrics::wait_metric(&self.client, &self.url("/metrics"), name, WAIT, check).await
    }

    /// Sends `signal` to the running process (through rustix, not an external `kill`).
    pub(crate) fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("a positive pid");
        rustix::process::kill_process(pid, signal)
            .unwrap_or_else(|e| panic!("signal {signal:?} to {pid:?}: {e}"));
    }

    /// Stops with SIGTERM and insists on a clean exit.
    pub(crate) async fn stop(mut self) {
        self.signal(rustix::process::Signal::TERM);
        let status = self.wait_exit(WAIT).await;
        assert!(status.success(), "{status}");
    }

    /// Waits (polling, without blocking the runtime) until the process exits.
    pub(crate) async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node on port {} did not exit within {within:?}",
                self.http
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts the same node again after it exited (same ports and flags).
    pub(crate) fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }

    /// `kill -9`: no goodbye, no flush.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same node again (same ports and flags, a new generation).
    pub(crate) fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let log = self.log();
            let start = (log.len().saturating_sub(4000)..log.len())
                .find(|&i| log.is_char_boundary(i))
                .unwrap_or(0);
            if start < log.len() {
                eprintln!("--- node on port {} log ---\n{}", self.http, &log[start..]);
            }
        }
        if let Log::Kept(path) = &self.log {
            let _ = std::fs::remove_file(path);
        }
    }
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Waits until `node` sees `members` live members and is ready.
pub(crate) async fn wait_for_members(node: &NodeProcess, members: usize) {
    wait_for_members_at(&node.url(""), members).await;
}

/// Waits until the node at `base` (`http://host:port`) sees `members` live members
/// and answers `/readyz`.
pub(crate) async fn wait_for_members_at(base: &str, members: usize) {
    wait_for_members_within(base, members, Duration::from_secs(30)).await
}

/// Waits until the node at `base` is ready and sees `members` live members.
pub(crate) async fn wait_for_members_within(base: &str, members: usize, within: Duration) {
    let client = client();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(response) = client.get(format!("{base}/status")).send().await {
            if let Ok(status) = response.json::<Value>().await {
                let live = status["gossip"]["members"]
                    .as_array()
                    .map(|m| m.iter().filter(|m| m["alive"] == true).count())
                    .unwrap_or(0);
                let ready = client
                    .get(format!("{base}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if live == members && ready {
                    return;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {base} did not see {members} live members"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes `data` to `channel` on `node`, once (no retry on another node), with
/// the client crate's publisher; anything but a 200 fails the test.
pub(crate) async fn publish(node: &NodeProcess, channel: &str, data: Value) -> Published {
    publish_to(&node.url(""), channel, data).await
}

/// Like [`publish`], to the node at `base` (`http://host:port`).
pub(crate) async fn publish_to(base: &str, channel: &str, data: Value) -> Published {
    Publisher::builder([base])
        .attempts(1)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a node address")
        .publish(channel, &Publish::new(data))
        .await
        .unwrap_or_else(|e| panic!("publish to {channel} on {base}: {e}"))
}

/// Runs the binary with `args` and only the environment `env`, to completion (a
/// refused start, `--help`).
pub(crate) async fn run_binary(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sse-cluster"));
    command
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .kill_on_drop(true);
    timeout(Duration::from_secs(20), command.output())
        .await
        .expect("the binary answers in time")
        .expect("run the binary")
}

/// Runs `sse-cluster start` with `args` and only the environment `env`: it must exit
/// 2 with one line on stderr that names `option`, and nothing on stdout.
pub(crate) async fn assert_start_refused(args: &[&str], env: &[(&str, &str)], option: &str) {
    let output = run_binary(&[&["start"], args].concat(), env).await;
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{args:?} {env:?}: one line, got {stderr:?}"
    );
    assert!(stderr.contains(option), "{args:?} {env:?}: {stderr:?}");
    assert!(output.stdout.is_empty(), "{args:?} {env:?}");
}
