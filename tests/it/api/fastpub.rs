//! Issue 18 (1): plain publishes on a keep-alive connection are answered by the
//! server loop itself (`http::publisher`), every other request by hyper and the
//! router. These tests hold the two paths to the same answers, byte for byte but
//! for the `date` and the cursor, and check that a connection moves from the direct
//! path to hyper cleanly.

use bytes::BytesMut;
use jsonwebtoken::{encode, EncodingKey, Header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::common::server::*;

/// A publish request. `extra` headers come before `Content-Length`.
fn publish(path: &str, extra: &[(&str, &str)], body: &str) -> String {
    let length = body.len().to_string();
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend_from_slice(extra);
    headers.push(("Content-Length", &length));
    format!("{}{body}", request_head("POST", path, &headers))
}

/// The same publish, chunked: the direct path leaves it to hyper and the router.
fn chunked(path: &str, extra: &[(&str, &str)], body: &str) -> String {
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("Transfer-Encoding", "chunked"),
    ];
    headers.extend_from_slice(extra);
    let head = request_head("POST", path, &headers);
    format!("{head}{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
}

/// A client connection that reads whole answers (head and `Content-Length` body).
struct Client {
    socket: TcpStream,
    read: BytesMut,
}

impl Client {
    async fn connect(server: &Server) -> Client {
        let socket = TcpStream::connect(server.addr).await.expect("connect");
        Client {
            socket,
            read: BytesMut::new(),
        }
    }

    async fn send(&mut self, requests: &str) {
        self.socket
            .write_all(requests.as_bytes())
            .await
            .expect("send");
    }

    /// The next whole answer, as sent.
    async fn answer(&mut self) -> String {
        loop {
            if let Some(end) = whole_answer_len(&self.read) {
                let answer = self.read.split_to(end);
                return String::from_utf8(answer.to_vec()).expect("UTF-8 answer");
            }
            let read = timeout(WAIT, self.socket.read_buf(&mut self.read))
                .await
                .expect("an answer in time")
                .expect("read");
            assert!(read > 0, "closed before a whole answer: {:?}", self.read);
        }
    }

    /// Whether the server closed the connection (after what was read).
    async fn closed(&mut self) -> bool {
        let mut rest = [0u8; 64];
        matches!(
            timeout(WAIT, self.socket.read(&mut rest)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

/// The length of the whole answer at the start of `read`, once it is all there.
fn whole_answer_len(read: &[u8]) -> Option<usize> {
    let head_end = read.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&read[..head_end]).expect("UTF-8 head");
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .map_or(0, |n| n.parse::<usize>().expect("a length"));
    (read.len() >= head_end + length).then_some(head_end + length)
}

/// An answer with its `date` and any cursor (`"id":"..."`, and so the length)
/// blanked: what may differ between two answers to the same request.
fn comparable(answer: &str) -> String {
    let (head, body) = answer.split_once("\r\n\r\n").expect("whole answer");
    let mut json: serde_json::Value = serde_json::from_str(body).expect("JSON body");
    let cursor = json.get("id").is_some();
    if cursor {
        json["id"] = "*".into();
    }
    let head: Vec<&str> = head
        .split("\r\n")
        .map(|line| match line {
            _ if line.starts_with("date: ") => "date: *",
            _ if cursor && line.starts_with("content-length: ") => "content-length: *",
            _ => line,
        })
        .collect();
    format!("{}\r\n\r\n{json}", head.join("\r\n"))
}

/// Sends `direct` and `routed` (the same request, in a shape the direct path takes
/// and one it leaves to the router), each on a new connection, and insists on the
/// same answer.
async fn same_answer(server: &Server, case: &str, direct: &str, routed: &str) -> String {
    let mut answers = Vec::new();
    for request in [direct, routed] {
        let mut client = Client::connect(server).await;
        client.send(request).await;
        answers.push(client.answer().await);
    }
    assert!(
        answers[0].contains("\r\ndate: "),
        "{case}: a date, as hyper writes: {}",
        answers[0]
    );
    assert_eq!(
        comparable(&answers[0]),
        comparable(&answers[1]),
        "{case}: the direct answer, then the router's"
    );
    answers.swap_remove(0)
}

#[tokio::test]
async fn direct_publish_answers_are_the_routers_byte_for_byte() {
    for cors_enabled in [false, true] {
        let mut config = config();
        config.http.cors_enabled = cors_enabled;
        config.http.max_body_bytes = 64;
        let server = Server::start(config).await;
        let big = format!(r#"{{"data":"{}"}}"#, "x".repeat(100));
        // Both answers to a repeated id say `duplicate`.
        server
            .publish("/channel/news", r#"{"id":"k1","data":1}"#)
            .await;
        let cases: [(&str, &str, &str, u16); 6] = [
            ("an event", "/channel/news", r#"{"data":"x"}"#, 200),
            (
                "a repeated id",
                "/channel/news",
                r#"{"id":"k1","data":1}"#,
                200,
            ),
            ("bad JSON", "/channel/news", r#"{"data":"#, 400),
            ("no data", "/channel/news", r#"{"event":"x"}"#, 400),
            ("a bad channel name", "/channel/a%20b", r#"{"data":1}"#, 400),
            ("an oversized body", "/channel/news", &big, 413),
        ];
        for (case, path, body, status) in cases {
            let case = format!("{case} (CORS {cors_enabled})");
            let direct = publish(path, &[], body);
            let routed = chunked(path, &[], body);
            let answer = same_answer(&server, &case, &direct, &routed).await;
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status} ")),
                "{case}: {answer}"
            );
            assert_eq!(
                answer.contains("access-control-allow-origin: *"),
                cors_enabled,
                "{case}: {answer}"
            );
        }
        // `Connection: close` is answered with it, and the connection closed.
        let close = [("Connection", "close")];
        let body = r#"{"data":"last"}"#;
        let direct = publish("/channel/news", &close, body);
        let routed = chunked("/channel/news", &close, body);
        let answer = same_answer(&server, "Connection: close", &direct, &routed).await;
        assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
        let mut client = Client::connect(&server).await;
        client.send(&direct).await;
        client.answer().await;
        assert!(client.closed().await, "closed after a Connection: close");
        server.stop().await;
    }
}

#[tokio::test]
async fn publishes_then_a_status_on_one_keep_alive_connection() {
    let server = Server::start(config()).await;
    let mut subscriber = open_stream(server.addr, "/channel/ka", &[]).await;
    let mut client = Client::connect(&server).await;
    for n in 0..3 {
        client
            .send(&publish("/channel/ka", &[], &format!(r#"{{"data":{n}}}"#)))
            .await;
        let answer = client.answer().await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.ends_with(r#""delivered":1,"duplicate":false}"#),
            "{answer}"
        );
    }
    // Not a publish: hyper takes the connection from here, with the request's bytes.
    client.send(&request_head("GET", "/status", &[])).await;
    let status = client.answer().await;
    assert!(status.starts_with("HTTP/1.1 200 OK\r\n"), "{status}");
    assert!(status.contains(r#""channels":"#), "{status}");
    // And it keeps serving publishes there.
    client
        .send(&publish("/channel/ka", &[], r#"{"data":3}"#))
        .await;
    let answer = client.answer().await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    for n in 0..4 {
        let event = subscriber.next_event().await.expect("event");
        assert_eq!(event.data.as_deref(), Some(n.to_string().as_str()));
    }
    assert_eq!(server.metric("sse_events_published_total").await, 4);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let server = Server::start(config()).await;
    let mut subscriber = open_stream(server.addr, "/channel/pipe", &[]).await;
    let mut client = Client::connect(&server).await;
    // Two publishes, a bad one and a status, in one write.
    let requests = [
        publish("/channel/pipe", &[], r#"{"data":"first"}"#),
        publish("/channel/pipe", &[], r#"{"data":"second"}"#),
        publish("/channel/pipe", &[], r#"{"data":"#),
        request_head("GET", "/healthz", &[]),
        publish("/channel/pipe", &[], r#"{"data":"third"}"#),
    ];
    client.send(&requests.concat()).await;
    let mut statuses = Vec::new();
    for _ in 0..requests.len() {
        let answer = client.answer().await;
        statuses.push(answer[9..12].to_owned());
    }
    assert_eq!(statuses, ["200", "200", "400", "200", "200"]);
    for data in ["first", "second", "third"] {
        let event = subscriber.next_event().await.expect("event");
        assert_eq!(event.data.unwrap(), format!("{data:?}"));
    }
}

/// The refusals made before a body is read (authorization here) are the router's
/// own; the ones after it (a channel the token does not grant) the direct path
/// writes. Both as the router answers them.
#[tokio::test]
async fn auth_refusals_are_the_routers_on_either_path() {
    const SECRET: &str = "fast-path-test-secret";
    let mut config = config();
    config.auth.jwt_secret = Some(SECRET.into());
    config.auth.publish = true;
    let server = Server::start(config).await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims = serde_json::json!({"sse": {"publish": ["allowed"]}, "exp": exp});
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let token = encode(&Header::default(), &claims, &key).expect("token");
    let bearer = format!("Bearer {token}");
    let body = r#"{"data":1}"#;
    for (case, path, auth, status) in [
        ("no token", "/channel/allowed", None, 401),
        ("not a JWT", "/channel/allowed", Some("Bearer nope"), 401),
        ("not granted", "/channel/other", Some(bearer.as_str()), 403),
        ("granted", "/channel/allowed", Some(bearer.as_str()), 200),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let direct = publish(path, &headers, body);
        let routed = chunked(path, &headers, body);
        let answer = same_answer(&server, case, &direct, &routed).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{case}: {answer}"
        );
    }
    assert_eq!(
        server
            .metric("sse_request_errors_total{kind=\"unauthorized\"}")
            .await,
        4,
        "each refusal counted once"
    );
}
