//! Logging what clients and peers send, safely: untrusted text is escaped and cut
//! short before it reaches a log line, and warnings a client can trigger at will
//! are rate-limited. (What they count is kept whole in metrics.) Also the log's part
//! of the node's configuration, and the setup of the binary's log from it.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Where log lines go and which: the log part of the node's [`crate::Config`].
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// `--log.format`.
    pub format: LogFormat,
    /// A level or filter (`--log.level`); `RUST_LOG`, when set, takes precedence.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Sends the process's log to stderr as `settings` say (once, at start).
pub fn init(settings: &LogSettings) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match settings.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Longest piece of untrusted text a log line shows, in characters.
const MAX_SHOWN: usize = 128;

/// Untrusted text (a query parameter, a header value, a name a peer announced, an
/// error message that quotes input) as a log field: `%Untrusted(text)`. Shown in
/// quotes with Rust's escapes for quotes, backslashes, control characters and
/// invisible or bidirectional formatting characters (`"a\nb"`, `"\u{1b}[2J"`), so it
/// can neither start a fake log line nor reach a terminal as an escape sequence;
/// past [`MAX_SHOWN`] characters it is cut, and the line says how long it was.
#[derive(Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(MAX_SHOWN) {
            fmt::Display::fmt(&c.escape_debug(), f)?;
        }
        f.write_str("\"")?;
        if chars.next().is_some() {
            write!(f, "... ({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Lets one warning through per interval and counts the ones it holds back, for a
/// warning anyone can trigger (a refused request): the first is logged at once,
/// then at most one per interval, saying how many were not logged in between.
pub struct RateLimited {
    every: Duration,
    state: Mutex<Quiet>,
}

#[derive(Default)]
struct Quiet {
    until: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    pub const fn new(every: Duration) -> Self {
        RateLimited {
            every,
            state: Mutex::new(Quiet {
                until: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` if this occurrence is to be logged, `n` being how many were held
    /// back since the last one logged; `None` to stay quiet (it is counted).
    pub fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut quiet = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if quiet.until.is_some_and(|until| now < until) {
            quiet.suppressed += 1;
            return None;
        }
        quiet.until = Some(now + self.every);
        Some(std::mem::take(&mut quiet.suppressed))
    }
}

impl Default for RateLimited {
    /// One warning per ten seconds.
    fn default() -> Self {
        RateLimited::new(Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_cannot_break_a_log_line_or_reach_the_terminal() {
        let shown =
            Untrusted("x\n2026-01-01T00:00:00Z  WARN fake\r\u{1b}[2J\u{202e}\"\\").to_string();
        assert_eq!(
            shown,
            r#""x\n2026-01-01T00:00:00Z  WARN fake\r\u{1b}[2J\u{202e}\"\\""#
        );
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert_eq!(Untrusted("node-1").to_string(), "\"node-1\"");
        let long = "é".repeat(1000);
        let shown = Untrusted(&long).to_string();
        assert!(shown.ends_with("\"... (2000 bytes)"), "{shown}");
        assert_eq!(shown.chars().filter(|c| *c == 'é').count(), MAX_SHOWN);
    }

    #[tokio::test(start_paused = true)]
    async fn one_warning_per_interval_and_a_count_of_the_rest() {
        let limit = RateLimited::new(Duration::from_secs(10));
        assert_eq!(limit.allow(), Some(0));
        for _ in 0..1999 {
            assert_eq!(limit.allow(), None);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(limit.allow(), Some(1999));
        assert_eq!(limit.allow(), None);
    }
}
