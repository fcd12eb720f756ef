//! Opening a subscription: client ids, resuming from a cursor (replay, or `reset`
//! when the history cannot prove it is complete or the cursor is not one this cluster
//! could have issued), and the node-wide visits of every subscriber (keep-alives, the
//! end of every stream at shutdown).

use std::hash::BuildHasher;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use crate::event::{encode_event, encode_id_only, Cursor, Frontier};
use crate::faults::Bug;

use super::channel::{Channel, Entry, Log, Subscriber};
use super::fanout::Fanout;
use super::lifecycle::live_channels;
use super::{Broker, Resume, State, SubscribeError, Subscription};

impl Broker {
    /// Opens a subscription. With `resume`, the events after that cursor still in the
    /// history come first; if the history cannot prove it holds all of them, the
    /// subscription starts with a reset.
    pub fn subscribe(
        &self,
        channel: &str,
        client: Option<&str>,
        resume: Resume<'_>,
    ) -> Result<Subscription, SubscribeError> {
        let mut preamble = BytesMut::new();
        let opened = self.open(channel, client, resume, &mut |opening| match opening {
            Opening::Reset => {
                preamble.extend_from_slice(&encode_event(None, Some("reset"), None, RESET_DATA))
            }
            Opening::Replay(entry, None) => preamble.extend_from_slice(&entry.frame),
            Opening::Replay(entry, Some(seen)) => {
                preamble.extend_from_slice(&entry.frame_covering(seen))
            }
        })?;
        preamble.extend_from_slice(&encode_id_only(&opened.cursor.encode()));
        let mut subscription = opened.subscription;
        subscription.preamble = Some(preamble.freeze());
        Ok(subscription)
    }

    /// Opens a subscription to one channel, for [`Broker::subscribe`] and for each
    /// channel of a stream of several: tells `opening` first whether the stream
    /// starts with a reset, then each event to replay, in order, and returns the
    /// subscription (without a preamble) and the cursor it starts from.
    pub(super) fn open(
        &self,
        channel: &str,
        client: Option<&str>,
        resume: Resume<'_>,
        opening: &mut dyn FnMut(Opening<'_>),
    ) -> Result<Opened, SubscribeError> {
        let now = self.shared.clock.now_ms();
        let id = self.shared.next_subscriber.fetch_add(1, Relaxed);
        let mut guard = self.state();
        let state = &mut *guard;
        let channel = self
            .channel(state, channel, now)
            .map_err(SubscribeError::ChannelsFull)?;
        let mut log = channel.log();
        let client: Arc<str> = match client {
            Some(name) if log.has_client(name) => {
                if log.is_idle() {
                    self.remove_channel(state, &channel, &mut log, now);
                }
                return Err(SubscribeError::ClientTaken);
            }
            Some(name) => Arc::from(name),
            None => self.assigned_client_id(&log, id),
        };
        log.expire(self.replay_cutoff(now), &mut state.ledger);
        if log.subscribers.is_empty() && state.broadcast_skipped.0 > log.dormant_since {
            // A publish to every channel passed this one by while it had no subscriber.
            log.known_from_ms = log.known_from_ms.max(state.broadcast_skipped.1);
        }
        let resume = match resume {
            Resume::From(cursor) if !self.could_have_issued(state, cursor, now) => {
                self.shared.metrics.forged_cursors.fetch_add(1, Relaxed);
                Resume::Unknown
            }
            resume => resume,
        };
        let reset = match resume {
            Resume::Live => false,
            Resume::Unknown => true,
            Resume::From(cursor) => {
                !log.can_resume(cursor) || self.cannot_vouch(state, &cursor.frontier, &log.frontier)
            }
        };
        if reset {
            self.shared.metrics.resets_sent.fetch_add(1, Relaxed);
            opening(Opening::Reset);
        }
        if let Resume::From(cursor) = resume {
            self.shared.metrics.replays_served.fetch_add(1, Relaxed);
            // A client that saw more through another node than this node holds keeps
            // that in the id of every replayed event too, not only in the last one: a
            // stream cut off mid-replay must not be sent those events again elsewhere.
            let seen = (!log.frontier.covers(&cursor.frontier)).then_some(&cursor.frontier);
            let mut replayed = 0;
            let mut skip_first = self.planted(Bug::ReplaySkipsFirst);
            for entry in log.entries.iter() {
                if entry.seq > cursor.frontier.get(entry.origin) && entry.is_for(&client) {
                    if std::mem::take(&mut skip_first) {
                        continue;
                    }
                    opening(Opening::Replay(entry, seen));
                    replayed += 1;
                }
            }
            self.shared
                .metrics
                .replayed_events
                .fetch_add(replayed, Relaxed);
        }
        // The opening id's time: how far this node is caught up (see `watermark`),
        // or the cursor's own if that is later and this node vouched for it (the
        // client had every event before it, and was just sent every one held here
        // after it).
        let time_ms = match resume {
            Resume::From(cursor) if !reset => self.id_time(now).max(cursor.time_ms.min(now)),
            _ => self.id_time(now),
        };
        // Leave the client holding the frontier it now has, even if nothing was sent:
        // a reconnect then resumes from here rather than from nothing. A client that
        // saw more through another node keeps that too (see `Subscriber::seen`).
        let mut frontier = Cursor {
            time_ms,
            frontier: log.frontier.clone(),
        };
        let mut seen = None;
        if let Resume::From(cursor) = resume {
            if !log.frontier.covers(&cursor.frontier) {
                for (origin, seq) in cursor.frontier.iter() {
                    frontier.frontier.advance(origin, seq);
                }
                seen = Some(Box::new(cursor.frontier.clone()));
            }
        }
        let next = log.head();
        let mut subscriber = Subscriber::new(client.clone(), next, now);
        subscriber.seen = seen;
        log.add_subscriber(id, subscriber, &mut state.ledger);
        drop(log);
        drop(guard);
        self.shared.metrics.subscribers.fetch_add(1, Relaxed);
        Ok(Opened {
            subscription: Subscription {
                broker: self.clone(),
                channel,
                id,
                client,
                preamble: None,
            },
            cursor: frontier,
        })
    }

    /// A client id for subscription `id`: the origin and a keyed hash of the id, so
    /// nobody can take it ahead with a chosen id. Should a chosen id on this channel
    /// equal it all the same, the next candidate is taken: an assigned id is never
    /// one another connection holds.
    fn assigned_client_id(&self, log: &Log, id: u64) -> Arc<str> {
        (0u64..)
            .map(|attempt| self.client_id_candidate(id, attempt))
            .find(|candidate| !log.has_client(candidate))
            .map(Arc::from)
            .unwrap_or_else(|| unreachable!("the candidates are endless"))
    }

    pub(super) fn client_id_candidate(&self, id: u64, attempt: u64) -> String {
        let hash = self.shared.client_id_key.hash_one((id, attempt));
        format!("{:x}-{hash:016x}", self.shared.origin)
    }

    /// Whether this cluster could have issued `cursor`: not from further ahead of this
    /// node's clock than clocks drift, no sequence of this node's origin it has not
    /// assigned, none of another origin further past what this node saw of it than a
    /// peer's relay queue holds. A cursor that fails is answered with `reset` rather
    /// than taken as seen (which would drop every later event of that origin).
    pub(super) fn could_have_issued(&self, state: &State, cursor: &Cursor, now: u64) -> bool {
        let slack = self.shared.settings.relay_queue_events as u64;
        cursor.time_ms <= now.saturating_add(MAX_CLOCK_AHEAD_MS)
            && cursor.frontier.iter().all(|(origin, seq)| {
                if origin == self.shared.origin {
                    seq <= state.last_seq
                } else {
                    let seen = state.remote.get(&origin).map_or(0, |r| r.seen);
                    seq <= seen.saturating_add(slack)
                }
            })
    }

    pub(super) fn unsubscribe(&self, channel: &Arc<Channel>, id: u64) {
        let now = self.shared.clock.now_ms();
        let mut guard = self.state();
        let state = &mut *guard;
        let mut log = channel.log();
        log.remove_subscriber(id, &mut state.ledger);
        if log.is_idle() {
            self.remove_channel(state, channel, &mut log, now);
        }
        self.shared.metrics.subscribers.fetch_sub(1, Relaxed);
    }

    /// Sends a keep-alive comment to every subscriber that has been sent nothing for
    /// `interval`. Run every fraction of the interval (one timer for the node rather
    /// than one per stream); returns how many comments are due.
    pub fn keep_alive(&self, interval: Duration) -> usize {
        let silent_since = self
            .shared
            .clock
            .now_ms()
            .saturating_sub(interval.as_millis() as u64);
        let shared = &self.shared;
        shared
            .keep_alive_silent_since_ms
            .store(silent_since, Relaxed);
        let mut due = 0;
        self.for_each_log(|log, fanout| due += log.keep_alive(silent_since, fanout));
        self.for_each_pattern_reader(|reader| due += usize::from(reader.keep_alive(silent_since)));
        due
    }

    /// Ends every subscription, now and from now on (the node is shutting down).
    pub fn close_streams(&self) {
        self.shared.closing.store(true, Relaxed);
        self.for_each_log(Log::wake_all);
        self.for_each_pattern_reader(|reader| reader.wake());
    }

    /// Runs `f` on the log of every channel with subscribers in turn (not under the
    /// node-wide lock), then does the wakes and writes it left.
    fn for_each_log(&self, mut f: impl FnMut(&mut Log, &mut Fanout)) {
        let channels = live_channels(&self.state());
        let mut fanout = Fanout::default();
        for channel in &channels {
            f(&mut channel.log(), &mut fanout);
        }
        self.finish(fanout);
    }
}

/// What a resumed stream hears first, in this order (see [`Broker::open`]).
pub(super) enum Opening<'a> {
    /// The history cannot prove it holds every event after the cursor.
    Reset,
    /// An event after the cursor, from the history, and the resume cursor's frontier
    /// when it is ahead of this node's (the replayed id must cover it as well).
    Replay(&'a Arc<Entry>, Option<&'a Frontier>),
}

/// A subscription just opened, and the cursor the client holds once its replay is
/// done: the channel's frontier now, raised by the resume cursor where that is ahead.
pub(super) struct Opened {
    pub(super) subscription: Subscription,
    pub(super) cursor: Cursor,
}

/// The data of the `reset` signal.
pub(super) const RESET_DATA: &str =
    r#"{"reason":"events after your Last-Event-ID may be missing; reload state"}"#;

/// How far ahead of this node's clock a cursor's time may be (another node's clock
/// may run ahead by this much).
const MAX_CLOCK_AHEAD_MS: u64 = 60 * 60 * 1000;
