//! A typed view of what a broker stream carries: published events, and the broker's
//! own named signals (`reset`, `gap`, `overflow`, `expired`), which publishers cannot
//! send, so a client can trust them.

use serde::Deserialize;

use crate::parse::Event;

/// One event of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A published event. `event` is `message` for one published without a name;
    /// `data` is the compact JSON text of what was published; `id` is the broker's
    /// resume cursor after it.
    Message {
        event: String,
        id: String,
        data: String,
    },
    /// The broker cannot prove it still has every event after the `Last-Event-ID`
    /// this stream resumed from: reload state. Events the window still holds follow.
    Reset { reason: String },
    /// Events of another node (`origin`, its hexadecimal origin) up to sequence
    /// `upto` were lost before they reached the node serving this stream.
    Gap {
        origin: String,
        upto: u64,
        reason: String,
    },
    /// The subscriber fell `behind` events behind its buffer; the broker ends the
    /// stream after this. The subscriber reconnects with its last id.
    Overflow { behind: u64, reason: String },
    /// The stream's token expired; the broker ends the stream after this.
    Expired { reason: String },
}

#[derive(Deserialize)]
struct Reason {
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct GapData {
    #[serde(default)]
    reason: String,
    origin: String,
    upto: u64,
}

#[derive(Deserialize)]
struct OverflowData {
    #[serde(default)]
    reason: String,
    behind: u64,
}

impl Signal {
    /// Reads an event: a signal if its name is reserved and its data has the
    /// signal's shape, else a message (so nothing the stream carries is dropped).
    pub fn from_event(event: Event) -> Signal {
        let signal = match event.event.as_str() {
            "reset" => serde_json::from_str::<Reason>(&event.data)
                .ok()
                .map(|d| Signal::Reset { reason: d.reason }),
            "gap" => serde_json::from_str::<GapData>(&event.data)
                .ok()
                .map(|d| Signal::Gap {
                    origin: d.origin,
                    upto: d.upto,
                    reason: d.reason,
                }),
            "overflow" => serde_json::from_str::<OverflowData>(&event.data)
                .ok()
                .map(|d| Signal::Overflow {
                    behind: d.behind,
                    reason: d.reason,
                }),
            "expired" => serde_json::from_str::<Reason>(&event.data)
                .ok()
                .map(|d| Signal::Expired { reason: d.reason }),
            _ => None,
        };
        signal.unwrap_or(Signal::Message {
            event: event.event,
            id: event.id,
            data: event.data,
        })
    }

    /// Whether the broker ends the stream after this signal.
    pub fn ends_stream(&self) -> bool {
        matches!(self, Signal::Overflow { .. } | Signal::Expired { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(event: &str, data: &str) -> Signal {
        Signal::from_event(Event {
            event: event.into(),
            data: data.into(),
            id: "7~a.1".into(),
        })
    }

    #[test]
    fn reads_each_broker_signal() {
        assert_eq!(
            read("reset", r#"{"reason":"r"}"#),
            Signal::Reset { reason: "r".into() }
        );
        assert_eq!(
            read(
                "gap",
                r#"{"reason":"lost","origin":"9f2c","upto":18446744073709551615}"#
            ),
            Signal::Gap {
                origin: "9f2c".into(),
                upto: u64::MAX,
                reason: "lost".into()
            }
        );
        assert_eq!(
            read("overflow", r#"{"reason":"slow","behind":12}"#),
            Signal::Overflow {
                behind: 12,
                reason: "slow".into()
            }
        );
        assert_eq!(
            read("expired", r#"{"reason":"token"}"#),
            Signal::Expired {
                reason: "token".into()
            }
        );
        assert!(read("overflow", r#"{"behind":1}"#).ends_stream());
        assert!(!read("reset", "{}").ends_stream());
    }

    #[test]
    fn other_events_and_malformed_signals_are_messages() {
        for (event, data) in [
            ("message", r#""hello""#),
            ("ping", "{}"),
            ("gap", r#"{"origin":"a"}"#),
            ("reset", "not json"),
        ] {
            assert_eq!(
                read(event, data),
                Signal::Message {
                    event: event.into(),
                    id: "7~a.1".into(),
                    data: data.into()
                }
            );
        }
    }
}
