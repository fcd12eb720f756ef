//! A Rust client for [sse-cluster](https://github.com/sse-cluster/sse-cluster), a
//! clustered Server-Sent Events broker.
//!
//! - [`Subscriber`]: reads a channel's stream like a browser's `EventSource`, from a
//!   list of nodes. When a stream ends or breaks it reconnects to the next node with
//!   its `Last-Event-ID`, so the broker replays exactly the events it missed. Events
//!   come as typed [`Signal`]s: published messages, and the broker's `reset`, `gap`,
//!   `overflow` and `expired`.
//! - [`Publisher`]: publishes with retries on the next node that keep the event's
//!   idempotency key (made for you when you give none), so a retried event is
//!   delivered once.
//! - [`parse`]: the incremental `text/event-stream` parser under both, which follows
//!   the WHATWG EventSource algorithm (CR, LF and CRLF line ends, BOM, comments,
//!   `id`, `retry`) and hands events out borrowed, without allocating per event.
//!
//! HTTP/1.1 over plain TCP (`http://host:port`); put TLS in front of the nodes with
//! a proxy on the same host if you need it.
//!
//! ```no_run
//! use sse_cluster_client::{Publish, Publisher, Signal, Subscriber};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), sse_cluster_client::Error> {
//!     let nodes = ["http://10.0.0.1:8080", "http://10.0.0.2:8080"];
//!
//!     // Reads from the first node; when its stream breaks, resumes on the next one
//!     // with its Last-Event-ID, so nothing is missed and nothing comes twice.
//!     let mut subscriber = Subscriber::builder(nodes, "orders").build()?;
//!     subscriber.connect().await?;
//!
//!     // Retries on the next node keep the event's id (made for you if you give
//!     // none), so a retried publish is delivered once.
//!     let publisher = Publisher::builder(nodes).build()?;
//!     let data = serde_json::json!({"order": 42});
//!     publisher
//!         .publish("orders", &Publish::new(data).event("created"))
//!         .await?;
//!
//!     loop {
//!         match subscriber.next().await? {
//!             Signal::Message { event, data, id } => println!("{event} {data} (cursor {id})"),
//!             Signal::Reset { .. } => println!("events may be missing: reload your state"),
//!             Signal::Gap { origin, upto, .. } => println!("lost {origin} up to {upto}"),
//!             other => println!("{other:?}"),
//!         }
//!     }
//! }
//! ```

mod duration;
mod http;
pub mod parse;
mod publisher;
mod signal;
mod subscriber;

pub use duration::parse_duration;
pub use http::Error;
pub use parse::{Event, EventRef, Parser};
pub use publisher::{Publish, Published, Publisher, PublisherBuilder};
pub use signal::Signal;
pub use subscriber::{Subscriber, SubscriberBuilder};

#[cfg(test)]
mod readme {
    /// The README's example is this crate's doc example, which is compiled.
    #[test]
    fn the_readme_example_is_the_compiled_one() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```rust\n").expect("a Rust example") + 8;
        let example = &readme[start..];
        let example = &example[..example.find("```").expect("its end")];
        let doc: String = include_str!("lib.rs")
            .lines()
            .skip_while(|line| !line.starts_with("//! ```no_run"))
            .skip(1)
            .take_while(|line| *line != "//! ```")
            .map(|line| format!("{}\n", line.strip_prefix("//! ").unwrap_or("")))
            .collect();
        assert_eq!(example, doc);
    }
}
