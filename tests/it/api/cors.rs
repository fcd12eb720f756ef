//! CORS: preflight on every route and the allow-origin header on every answer, only
//! when enabled.

use reqwest::Method;

use crate::common::server::*;

const ROUTES: [&str; 9] = [
    "/channel",
    "/channel/news",
    "/channel/news/client/alice",
    "/status",
    "/healthz",
    "/readyz",
    "/metrics",
    "/no/such/route",
    "/",
];

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_owned())
}

/// A browser's preflight of a cross-origin POST to `path`, with `extra` headers.
async fn preflight(server: &Server, path: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut request = server
        .http
        .request(Method::OPTIONS, server.url(path))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.send().await.expect("preflight")
}

#[tokio::test]
async fn cors_enabled_answers_preflight_on_every_route() {
    let mut config = config();
    config.http.cors_enabled = true;
    let server = Server::start(config).await;
    for path in ROUTES {
        let response = preflight(
            &server,
            path,
            &[("access-control-request-headers", "content-type")],
        )
        .await;
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        assert_eq!(
            header(&response, "access-control-allow-origin").as_deref(),
            Some("*"),
            "{path}"
        );
        let methods = header(&response, "access-control-allow-methods").unwrap_or_default();
        for method in ["GET", "POST", "OPTIONS"] {
            assert!(methods.contains(method), "{path}: methods {methods:?}");
        }
        let headers = header(&response, "access-control-allow-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        for name in ["content-type", "authorization", "last-event-id"] {
            assert!(headers.contains(name), "{path}: headers {headers:?}");
        }
    }
}

#[tokio::test]
async fn cors_enabled_marks_every_answer() {
    let mut config = config();
    config.http.cors_enabled = true;
    let server = Server::start(config).await;
    let stream = RawStream::get(
        server.addr,
        "/channel/news",
        &[("Origin", "https://app.example")],
    )
    .await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("access-control-allow-origin"), Some("*"));
    let answers = [
        server.http.get(server.url("/status")).send().await,
        server.http.get(server.url("/metrics")).send().await,
        server.http.get(server.url("/nope")).send().await,
        server.http.delete(server.url("/status")).send().await,
        server
            .http
            .post(server.url("/channel/news"))
            .header("content-type", "application/json")
            .body(r#"{"data":1}"#)
            .send()
            .await,
        server
            .http
            .post(server.url("/channel/news"))
            .header("content-type", "text/plain")
            .body("x")
            .send()
            .await,
    ];
    let mut statuses = Vec::new();
    for answer in answers {
        let response = answer.expect("request");
        statuses.push(response.status().as_u16());
        assert_eq!(
            header(&response, "access-control-allow-origin").as_deref(),
            Some("*"),
            "{} {}",
            response.url(),
            response.status()
        );
    }
    assert_eq!(statuses, [200, 200, 404, 405, 200, 415]);
}

#[tokio::test]
async fn cors_disabled_sends_no_cors_headers() {
    let server = Server::start(config()).await;
    let stream = RawStream::get(
        server.addr,
        "/channel/news",
        &[("Origin", "https://app.example")],
    )
    .await;
    assert_eq!(stream.status, 200);
    assert!(stream
        .headers
        .iter()
        .all(|(name, _)| !name.starts_with("access-control-")));
    for path in ROUTES {
        let preflight = preflight(&server, path, &[]).await;
        assert!(
            !preflight.status().is_success(),
            "{path}: preflight answered"
        );
        let get = server.http.get(server.url(path)).send().await.expect("GET");
        for response in [&preflight, &get] {
            assert!(
                response
                    .headers()
                    .keys()
                    .all(|name| !name.as_str().starts_with("access-control-")),
                "{path}: {:?}",
                response.headers()
            );
        }
    }
}
