//! A real browser's `EventSource` against a real node. Headless Chromium, driven over
//! WebDriver, opens the README's "In the browser" page; a TCP proxy of the test's own
//! sits between the browser and the node, as a load balancer would, so the test can cut
//! the stream and watch the browser come back by itself with `Last-Event-ID`.
//!
//! Needs `chromedriver` and `chromium` on `PATH` (Debian: `chromium-driver`,
//! `chromium`; `CHROMEDRIVER` and `CHROMIUM` override the paths). Without them the
//! test says why and passes, unless `SSE_REQUIRE_BROWSER=1`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fantoccini::{Client, ClientBuilder, Locator};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

use crate::common::net::{free_ports, get_json};
use crate::common::node::NodeProcess;

mod ui;

const CHANNEL: &str = "browser-news";
/// Every wait ends after this long, so a hang fails the test instead of blocking CI.
const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventsource_in_chromium_gets_every_event_once_across_a_cut_stream() {
    let Some((browser, node, _driver, _dir)) = start().await else {
        return;
    };
    let proxy = Proxy::start(node.addr()).await;
    let page = PageServer::start(&format!("http://{}", proxy.addr)).await;
    let http = reqwest::Client::new();

    // The page opens its EventSource through the proxy, on another origin than the page.
    browser.goto(&page.url).await.expect("open the page");
    wait_js(&browser, "return window.opens", "the stream to open", |v| {
        v.as_u64() >= Some(1)
    })
    .await;

    let mut expected = Vec::new();
    for (event, data) in [
        (None, r#""hello""#),
        (Some("ping"), r#"{"time":"12:00"}"#),
        (None, r#"{"n":3,"text":"naïve ✓ \"quoted\""}"#),
    ] {
        expected.push(publish(&http, node.addr(), event, data).await);
    }
    assert_eq!(
        wait_received(&browser, expected.len()).await,
        expected,
        "live events, unnamed ones through onmessage and pings through their listener"
    );

    // Cut the stream as a load balancer would, and hold the browser's next connection
    // at the proxy until the missed events have been published.
    proxy.hold(true);
    proxy.cut();
    wait_js(
        &browser,
        "return window.errors",
        "the browser to see the cut",
        |v| v.as_u64() >= Some(1),
    )
    .await;
    let before_cut = expected.len();
    for (event, data) in [
        (Some("ping"), r#"{"time":"12:01"}"#),
        (None, r#"[1,2,3]"#),
        (None, r#""missed while away""#),
    ] {
        expected.push(publish(&http, node.addr(), event, data).await);
    }
    let heads = wait_for("the browser to reconnect by itself", || async {
        let heads = proxy.request_heads();
        (heads.len() >= 2).then_some(heads)
    })
    .await;
    assert_eq!(
        header(&heads[0], "last-event-id"),
        None,
        "a fresh page starts live:\n{}",
        heads[0]
    );
    assert_eq!(
        header(&heads[1], "last-event-id").as_deref(),
        Some(expected[before_cut - 1].last_event_id.as_str()),
        "the reconnect carries the cursor of the last event received:\n{}",
        heads[1]
    );
    assert_eq!(
        received(&browser).await.len(),
        before_cut,
        "nothing arrives while the stream is cut"
    );
    proxy.hold(false);
    assert_eq!(
        wait_received(&browser, expected.len()).await,
        expected,
        "the missed events, each once and in order"
    );

    for (event, data) in [
        (None, r#""live again""#),
        (Some("ping"), r#"{"time":"12:02"}"#),
    ] {
        expected.push(publish(&http, node.addr(), event, data).await);
    }
    assert_eq!(
        wait_received(&browser, expected.len()).await,
        expected,
        "live events after the resume"
    );
    let counts = browser
        .execute("return [window.opens, window.errors]", vec![])
        .await
        .expect("read counters");
    assert_eq!(counts, json!([2, 1]), "exactly one cut and one reconnect");
    assert_eq!(proxy.request_heads().len(), 2, "one request per connection");

    // The page's own rendering, as the README example writes it.
    let mut shown = Vec::new();
    for li in browser
        .find_all(Locator::Css("#list li"))
        .await
        .expect("find list items")
    {
        shown.push(li.text().await.expect("list item text"));
    }
    let wanted: Vec<String> = expected.iter().map(Received::as_rendered).collect();
    assert_eq!(shown, wanted, "the page's list");

    // The node let go of the cut connection, and lets go of the channel when the page
    // closes its stream.
    wait_for("the node to hold one subscriber", || async {
        let clients = channel_clients(&http, node.addr()).await;
        (clients == Some(1)).then_some(())
    })
    .await;
    // `es.close()` rather than navigating away: Chromium may keep a page, and its open
    // stream, in the back-forward cache.
    let state = browser
        .execute("es.close(); return es.readyState", vec![])
        .await
        .expect("close the EventSource");
    assert_eq!(state, json!(2), "EventSource.CLOSED");
    wait_for(
        "the channel to go away with its last subscriber",
        || async {
            channel_clients(&http, node.addr())
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;

    browser.close().await.expect("end the WebDriver session");
}

/// One event as the page recorded it.
#[derive(Debug, PartialEq, Deserialize)]
struct Received {
    /// Which handler of the README example saw it: `onmessage` or the `ping` listener.
    via: String,
    #[serde(rename = "type")]
    kind: String,
    data: String,
    #[serde(rename = "lastEventId")]
    last_event_id: String,
}

impl Received {
    /// The list item the README example appends for this event.
    fn as_rendered(&self) -> String {
        if self.kind == "ping" {
            let time = serde_json::from_str::<Value>(&self.data).expect("ping data is JSON")
                ["time"]
                .as_str()
                .expect("ping has a time")
                .to_owned();
            format!("ping at {time}")
        } else {
            format!("message: {}", self.data)
        }
    }
}

/// Publishes `data` (compact JSON text) to the test channel on `node` and returns the
/// event the browser should record for it: the data as sent, the cursor as answered.
async fn publish(
    http: &reqwest::Client,
    node: SocketAddr,
    event: Option<&str>,
    data: &str,
) -> Received {
    let body = match event {
        Some(name) => format!(r#"{{"event":"{name}","data":{data}}}"#),
        None => format!(r#"{{"data":{data}}}"#),
    };
    let response = http
        .post(format!("http://{node}/channel/{CHANNEL}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 200, "publish {data}");
    let answer: Value = response.json().await.expect("publish answer");
    let cursor = answer["id"].as_str().expect("a cursor in the answer");
    Received {
        via: if event.is_some() {
            "ping listener"
        } else {
            "onmessage"
        }
        .to_owned(),
        kind: event.unwrap_or("message").to_owned(),
        data: data.to_owned(),
        last_event_id: cursor.to_owned(),
    }
}

/// How many clients `/status` lists for the test channel; `None` when it has none.
async fn channel_clients(http: &reqwest::Client, node: SocketAddr) -> Option<usize> {
    let status = get_json(http, &format!("http://{node}/status")).await;
    status["channels"][CHANNEL].as_array().map(Vec::len)
}

async fn received(browser: &Client) -> Vec<Received> {
    let value = browser
        .execute("return window.received", vec![])
        .await
        .expect("read window.received");
    serde_json::from_value(value).expect("recorded events")
}

/// Waits until the page recorded at least `count` events, and returns them all.
async fn wait_received(browser: &Client, count: usize) -> Vec<Received> {
    let deadline = Instant::now() + WAIT;
    loop {
        let events = received(browser).await;
        if events.len() >= count {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {count} events; the page has {events:#?}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `script` in the page until `done` accepts its value.
async fn wait_js(browser: &Client, script: &str, what: &str, done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = browser.execute(script, vec![]).await.expect("run script");
        if done(&value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; `{script}` gives {value}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(50)).await;
    }
}

/// The value of header `name` in an HTTP request head.
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

/// Reads from `stream` up to the end of an HTTP request head; `None` if it closes first.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(head)
}

/// Where chromedriver and Chromium are, or why the test skips.
struct BrowserTools {
    chromedriver: PathBuf,
    chromium: PathBuf,
}

impl BrowserTools {
    fn find() -> Option<Self> {
        let chromedriver = locate("CHROMEDRIVER", &["chromedriver"]);
        let chromium = locate(
            "CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        );
        match (chromedriver, chromium) {
            (Some(chromedriver), Some(chromium)) => Some(Self {
                chromedriver,
                chromium,
            }),
            (driver, _) => {
                let missing = if driver.is_none() {
                    "chromedriver"
                } else {
                    "chromium"
                };
                let why = format!(
                    "{missing} is not on PATH (Debian: apt-get install chromium chromium-driver)"
                );
                if std::env::var("SSE_REQUIRE_BROWSER").as_deref() == Ok("1") {
                    panic!("SSE_REQUIRE_BROWSER=1 but {why}");
                }
                // Straight to stderr, past the test harness's capture, so the skip shows.
                let _ = writeln!(std::io::stderr(), "skipping the browser test: {why}");
                None
            }
        }
    }
}

/// `$var` if set, else the first of `names` found on `PATH`.
fn locate(var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A directory for profiles and logs, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "sse-cluster-browser-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Prints the tail of a child's log when the test fails, so CI shows what it said.
fn print_log_on_panic(name: &str, log: &Path) {
    if std::thread::panicking() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        eprintln!("--- {name} log ({}) ---\n{}", log.display(), &text[start..]);
    }
}

/// What every browser test starts from: a WebDriver session of headless Chromium, the
/// node, chromedriver, and the directory of their logs and the browser's profile (to
/// be dropped in this order); `None` (the test skips) without the tools.
async fn start() -> Option<(Client, NodeProcess, ChromeDriver, TempDir)> {
    let tools = BrowserTools::find()?;
    let dir = TempDir::new();
    let node = start_node(&dir).await;
    let driver = ChromeDriver::start(&tools, &dir).await;
    let browser = driver.session(&tools, &dir).await;
    Some((browser, node, driver, dir))
}

/// The real binary, ready, its log in `dir` (printed if the test fails).
async fn start_node(dir: &TempDir) -> NodeProcess {
    let node = NodeProcess::builder()
        .args(&["--http.server.cors.enabled", "true"])
        .args(&["--http.server.retry", "300ms"])
        // Short, so the node soon notices the connection the proxy cut.
        .args(&["--http.server.keepAlive", "500ms"])
        .log_to(dir.path().join("node.log"))
        .spawn();
    node.wait_ready().await;
    node
}

/// A TCP proxy between the browser and the node that the test can cut, and that can
/// hold new connections (a load balancer with no backend ready) before forwarding them.
struct Proxy {
    addr: SocketAddr,
    /// Bumped to close every open connection.
    cut: watch::Sender<u64>,
    /// While `true`, new connections wait before being forwarded.
    hold: watch::Sender<bool>,
    /// The head of every request the browser sent, in order.
    heads: Arc<Mutex<Vec<String>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (cut, _) = watch::channel(0);
        let (hold, _) = watch::channel(false);
        let heads = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let (cut, hold, heads) = (cut.clone(), hold.clone(), heads.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(relay(
                        client,
                        upstream,
                        cut.subscribe(),
                        hold.subscribe(),
                        heads.clone(),
                    ));
                }
            }
        });
        Self {
            addr,
            cut,
            hold,
            heads,
            accept,
        }
    }

    fn cut(&self) {
        self.cut.send_modify(|generation| *generation += 1);
    }

    fn hold(&self, hold: bool) {
        self.hold.send_replace(hold);
    }

    fn request_heads(&self) -> Vec<String> {
        self.heads.lock().expect("heads lock").clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut cut: watch::Receiver<u64>,
    mut hold: watch::Receiver<bool>,
    heads: Arc<Mutex<Vec<String>>>,
) {
    // The head is read first, so the test sees what the browser asks for while held.
    let head = tokio::select! {
        head = read_head(&mut client) => head,
        _ = cut.changed() => None,
    };
    let Some(head) = head else { return };
    heads
        .lock()
        .expect("heads lock")
        .push(String::from_utf8_lossy(&head).into_owned());
    tokio::select! {
        released = hold.wait_for(|held| !*held) => if released.is_err() { return },
        _ = cut.changed() => return,
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    if server.write_all(&head).await.is_err() {
        return;
    }
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.changed() => {}
    }
    // Both sockets close here, on both sides at once.
}

/// Serves the example page on its own origin.
struct PageServer {
    url: String,
    task: JoinHandle<()>,
}

impl PageServer {
    async fn start(stream_base: &str) -> Self {
        let html = include_str!("page.html")
            .replace("__BASE__", stream_base)
            .replace("__CHANNEL__", CHANNEL);
        let html = Arc::new(html);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind page");
        let url = format!("http://{}/", listener.local_addr().expect("page address"));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_page(stream, html.clone()));
            }
        });
        Self { url, task }
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_page(mut stream: TcpStream, html: Arc<String>) {
    let Some(head) = read_head(&mut stream).await else {
        return;
    };
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = if path == "/" {
        ("200 OK", html.as_str())
    } else {
        ("404 Not Found", "")
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// chromedriver in a process group of its own, so the browsers it starts go with it.
struct ChromeDriver {
    url: String,
    log: PathBuf,
    child: Child,
}

impl ChromeDriver {
    async fn start(tools: &BrowserTools, dir: &TempDir) -> Self {
        let (port, _) = free_ports();
        let log = dir.path().join("chromedriver.log");
        let out = std::fs::File::create(&log).expect("create chromedriver log");
        let err = out.try_clone().expect("clone chromedriver log");
        let child = Command::new(&tools.chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let driver = Self {
            url: format!("http://127.0.0.1:{port}"),
            log,
            child,
        };
        let http = reqwest::Client::new();
        wait_for("chromedriver to be ready", || async {
            let status: Value = http
                .get(format!("{}/status", driver.url))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (status["value"]["ready"] == json!(true)).then_some(())
        })
        .await;
        driver
    }

    async fn session(&self, tools: &BrowserTools, dir: &TempDir) -> Client {
        let profile = dir.path().join("chromium-profile");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": tools.chromium,
                // Without the background-networking flags Chromium stalls in a
                // closed network.
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--disable-quic",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        ClientBuilder::rustls()
            .expect("TLS roots for the WebDriver client")
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("start a Chromium session")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        print_log_on_panic("chromedriver", &self.log);
        if let Some(pid) = self.child.id() {
            // SIGKILL the whole group: chromedriver and every Chromium process.
            if let Some(group) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
        }
    }
}
