//! The page at `GET /` in headless Chromium: it lists the cluster, publishes from its
//! form, shows the event its own `EventSource` receives with channel and id, and
//! marks the `reset` of a resume from an id the node never issued. With
//! `SSE_UI_SCREENSHOT=<path>` it also saves a screenshot (the README's).

use fantoccini::{Client, Locator};
use serde_json::{json, Value};

use super::*;

async fn fill(browser: &Client, id: &str, text: &str) {
    let field = browser
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("#{id}: {e}"));
    field.clear().await.expect("clear field");
    field.send_keys(text).await.expect("type into field");
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .expect("click");
}

/// The rows of the page's event log, newest first: [time, channel, event, id, data].
async fn logged(browser: &Client) -> Vec<Vec<String>> {
    let rows = browser
        .execute(
            "return [...document.querySelectorAll('#events tr')].map(r => [...r.cells].map(c => c.textContent))",
            vec![],
        )
        .await
        .expect("read the log");
    serde_json::from_value(rows).expect("rows of cells")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_lists_the_node_publishes_and_watches_and_marks_a_reset() {
    let Some((browser, node, _driver, _dir)) = start().await else {
        return;
    };
    browser
        .set_window_size(1280, 860)
        .await
        .expect("window size");
    let http = reqwest::Client::new();
    browser
        .goto(&format!("http://{}/", node.addr()))
        .await
        .expect("open the page");

    // The cluster of one, from /status.
    wait_js(
        &browser,
        "return [...document.querySelectorAll('#members tr.alive')].map(r => r.cells[1].textContent)",
        "the page to list this node as live",
        |v| v == &json!([node.addr().to_string()]),
    )
    .await;

    // Watch a channel: the node holds the page's stream, and the page lists it.
    fill(&browser, "watch-channels", "ui-news").await;
    click(&browser, "#watch-start").await;
    wait_for("the node to hold the page's stream", || async {
        let status: Value = http
            .get(format!("http://{}/status", node.addr()))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (status["channels"]["ui-news"].as_array()?.len() == 1).then_some(())
    })
    .await;
    wait_js(
        &browser,
        "return document.querySelector('#channels tr[data-channel=\"ui-news\"]')?.cells[1].textContent",
        "the page to list the channel with one subscriber",
        |v| v == &json!("1"),
    )
    .await;

    // Publish from the form: the answer's id, and the event in the log with it.
    fill(&browser, "pub-channel", "ui-news").await;
    fill(
        &browser,
        "pub-data",
        r#"{"time":"12:00","text":"<b>not markup</b>"}"#,
    )
    .await;
    click(&browser, "#publish button[type=submit]").await;
    wait_js(
        &browser,
        "return document.getElementById('pub-answer').dataset.id || ''",
        "the publish answer",
        |v| v.as_str().is_some_and(|s| !s.is_empty()),
    )
    .await;
    let cursor = browser
        .execute(
            "return document.getElementById('pub-answer').dataset.id",
            vec![],
        )
        .await
        .expect("read the answer")
        .as_str()
        .expect("a cursor")
        .to_owned();
    wait_js(
        &browser,
        "return document.querySelectorAll('#events tr').length",
        "the event in the log",
        |v| v.as_u64() >= Some(1),
    )
    .await;
    let rows = logged(&browser).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0][1..],
        [
            "ui-news".to_owned(),
            "message".to_owned(),
            cursor.clone(),
            r#"{"time":"12:00","text":"<b>not markup</b>"}"#.to_owned(),
        ],
        "channel, event, id and data as published"
    );
    let bold = browser
        .execute(
            "return document.querySelectorAll('#events b').length",
            vec![],
        )
        .await
        .expect("count markup");
    assert_eq!(
        bold,
        json!(0),
        "event data is shown as text, never as markup"
    );

    // A named event reaches the log through the listener for its name.
    fill(&browser, "pub-event", "ping").await;
    fill(&browser, "pub-data", r#"{"n":2}"#).await;
    click(&browser, "#publish button[type=submit]").await;
    wait_js(
        &browser,
        "return document.querySelectorAll('#events tr').length",
        "the named event in the log",
        |v| v.as_u64() >= Some(2),
    )
    .await;
    assert_eq!(logged(&browser).await[0][2], "ping");

    // Resume from an id this node never issued: the stream opens with a reset,
    // marked as a signal.
    fill(&browser, "watch-from", "1700000000000~feedface.99").await;
    click(&browser, "#watch-start").await;
    wait_js(
        &browser,
        "return [...document.querySelectorAll('#events tr.signal')].map(r => r.cells[2].textContent)",
        "the reset to be shown as a signal",
        |v| v == &json!(["reset"]),
    )
    .await;

    if let Ok(path) = std::env::var("SSE_UI_SCREENSHOT") {
        // One more live event above the reset, so the picture shows both.
        fill(&browser, "watch-from", "").await;
        fill(&browser, "pub-event", "").await;
        fill(&browser, "pub-data", r#"{"time":"12:01"}"#).await;
        click(&browser, "#publish button[type=submit]").await;
        wait_js(
            &browser,
            "return document.querySelector('#events tr').cells[2].textContent",
            "the last event on top",
            |v| v == &json!("message"),
        )
        .await;
        let png = browser.screenshot().await.expect("screenshot");
        std::fs::write(&path, png).expect("write the screenshot");
    }
    browser.close().await.expect("end the WebDriver session");
}
