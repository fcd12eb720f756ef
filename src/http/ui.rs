//! `GET /`: one self-contained page to watch and try a node (`--ui.enabled`, on by
//! default). It uses only the public API (`/status`, `POST /channel`, an
//! `EventSource` on `/channel/...`), by relative URLs, so it works behind the same
//! proxy and with the same tokens as any other client.
//!
//! Its inline style and script are allowed by their hashes in the page's own
//! `Content-Security-Policy` (no `'unsafe-inline'`), and it writes what it receives
//! as text, never as markup: an event's data cannot run in the page.

use std::sync::LazyLock;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

const PAGE: &str = include_str!("ui.html");

/// The page's Content-Security-Policy: its one script and one style by hash, fetches
/// and streams to this origin only.
static POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
    let script = hash_of_element(PAGE, "script");
    let style = hash_of_element(PAGE, "style");
    let policy = format!(
        "default-src 'none'; script-src '{script}'; style-src '{style}'; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

/// `sha256-<base64>` of the text inside the page's first `<tag>` element, as CSP
/// hashes it (exactly the bytes between the tags).
fn hash_of_element(page: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let text = page
        .split_once(&open)
        .and_then(|(_, rest)| rest.split_once(&close))
        .map_or("", |(inside, _)| inside);
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

pub(super) async fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, POLICY.clone()),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        PAGE,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_hash_of_the_pages_script_and_style() {
        let policy = POLICY.to_str().unwrap();
        for tag in ["script", "style"] {
            let hash = hash_of_element(PAGE, tag);
            assert!(hash.len() > "sha256-".len() + 40, "{hash}");
            assert!(policy.contains(&format!("'{hash}'")), "{policy}");
        }
        // One of each: a second element would not be covered by the policy.
        assert_eq!(PAGE.matches("<script>").count(), 1);
        assert_eq!(PAGE.matches("<style>").count(), 1);
        assert!(!policy.contains("unsafe-inline"));
    }

    #[test]
    fn the_hash_is_of_the_text_between_the_tags() {
        let hash = hash_of_element("<p><script>abc</script>", "script");
        // sha256("abc"), base64.
        assert_eq!(hash, "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
    }
}
