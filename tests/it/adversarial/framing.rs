//! Line breaks, NUL and Unicode line separators in every field of a publish: refused
//! with a JSON 400 where they could break framing, carried safely where JSON escapes
//! them, and a subscriber's stream stays byte-exact throughout.

use serde_json::{json, Value};

use super::raw::*;

const BAD: [&str; 5] = ["\r", "\n", "\0", "\u{2028}", "\u{2029}"];

fn assert_json_400(status: u16, answer: &str, what: &str) {
    assert_eq!(status, 400, "{what}: {answer}");
    let error: Value = serde_json::from_str(answer).unwrap_or_else(|_| panic!("{what}: {answer}"));
    assert!(
        error["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_breaks_in_any_field_are_refused_or_escaped_and_the_stream_stays_exact() {
    let mut node = start_node(&[]).await;
    let mut subscriber = Subscriber::open(&node, "/channel/framing").await;
    let mut expected = String::from("retry: 3000\n\nid: C\n\n");

    for bad in BAD {
        let label = format!("a{bad}b");
        // Escaped by JSON, still refused: the event name and id go on SSE lines as is.
        for field in ["event", "id"] {
            let body = json!({ "data": 1, field: label }).to_string();
            let (status, answer) = node.post("/channel/framing", body.clone()).await;
            assert_json_400(status, &answer, &body);
        }
        // Raw inside a JSON string: invalid JSON for controls, a refused label for the
        // separators.
        for field in ["event", "id"] {
            let body = format!(r#"{{"data":1,"{field}":"a{bad}b"}}"#);
            let (status, answer) = node.post("/channel/framing", body.clone()).await;
            assert_json_400(status, &answer, &body);
        }
        if bad.len() == 1 {
            for body in [
                format!(r#"{{"data":"a{bad}b"}}"#),
                format!(r#"{{"data":{{"k{bad}":1}}}}"#),
            ] {
                let (status, answer) = node.post("/channel/framing", body.clone()).await;
                assert_json_400(status, &answer, &body);
            }
        }
        // In a channel or client name.
        let escaped: String = bad.bytes().map(|b| format!("%{b:02X}")).collect();
        for path in [
            format!("/channel/a{escaped}b"),
            format!("/channel/framing/client/a{escaped}b"),
        ] {
            let (status, answer) = node.post(&path, r#"{"data":1}"#).await;
            assert_json_400(status, &answer, &path);
        }

        // Escaped in data (values and keys, nested): accepted, one `data:` line.
        let data = json!({ "v": label, "nested": [{ label.clone(): [label] }] });
        let (status, answer) = node
            .post(
                "/channel/framing",
                json!({ "data": data, "event": "ok" }).to_string(),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        expected.push_str(&format!("id: C\nevent: ok\ndata: {data}\n\n"));
    }
    // Unicode separators are plain characters to SSE and JSON: raw in data is fine.
    let raw = "{\"data\":\"x\u{2028}y\u{2029}z\"}";
    let (status, answer) = node.post("/channel/framing", raw).await;
    assert_eq!(status, 200, "{answer}");
    expected.push_str("id: C\ndata: \"x\u{2028}y\u{2029}z\"\n\n");

    let (status, _) = node.post("/channel/framing", r#"{"data":"end"}"#).await;
    assert_eq!(status, 200);
    expected.push_str("id: C\ndata: \"end\"\n\n");
    subscriber.read_until(b"data: \"end\"\n\n").await;
    assert_eq!(redact_cursors(&subscriber.received), expected);
    node.assert_healthy().await;
}
