//! `GET /`: the page, with a policy that allows only its own script and style; off
//! with `--ui.enabled=false`. (`browser::ui` drives it in Chromium.)

use crate::common::server::*;

#[tokio::test]
async fn the_page_is_served_with_its_own_policy_and_can_be_turned_off() {
    let server = Server::start(config()).await;
    let response = server
        .http
        .get(format!("http://{}/", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(
        policy.starts_with("default-src 'none'; script-src 'sha256-"),
        "{policy}"
    );
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(headers["x-frame-options"], "DENY");
    let page = response.text().await.unwrap();
    assert!(page.contains("<title>sse-cluster</title>"));
    // It talks to the API by relative URLs, so it works under a proxy's prefix.
    assert!(page.contains(r#"fetch("status""#) && !page.contains(r#"fetch("/"#));

    let mut config = config();
    config.http.ui_enabled = false;
    let off = Server::start(config).await;
    let response = off
        .http
        .get(format!("http://{}/", off.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}
