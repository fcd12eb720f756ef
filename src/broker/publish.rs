//! Accepting events: publishes to one channel, to one client, or to every channel
//! with subscribers, and events relayed from other nodes (with their gaps). Each is
//! appended to the channels' logs under the node's lock, then fanned out after it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::event::{Frontier, Origin, Publish};
use crate::faults::Bug;

use super::channel::{Arrival, Channel};
use super::fanout::Fanout;
use super::lifecycle::{live_channels, pass_by_dormant};
use super::{Accepted, Broker, ChannelsFull, Published, Route, State};

impl Broker {
    /// Publishes to one channel, or to one client of it when `target` is set. Refused
    /// (and not accepted) when the channel has no state here and none can be made.
    pub fn publish(
        &self,
        channel: &str,
        publish: &Publish,
        target: Option<&str>,
    ) -> Result<Published, ChannelsFull> {
        let mut answer = None;
        self.publish_each(channel, std::slice::from_ref(publish), target, |a| {
            answer = Some(a)
        })?;
        Ok(answer.unwrap_or_else(|| unreachable!("one answer per event")))
    }

    /// Publishes several events to one channel (or one client of it), in order, as
    /// that many [`Broker::publish`] calls in a row would, but under one acquisition
    /// of the locks and with one round of wakes and writes: the events get
    /// consecutive sequences, each publisher id is checked against the channel's
    /// history and the events before it in the batch, and a subscriber that was
    /// waiting gets the batch in one go. Returns one answer per event; refused as a
    /// whole (nothing accepted) when the channel cannot be made.
    pub fn publish_batch(
        &self,
        channel: &str,
        publishes: &[Publish],
        target: Option<&str>,
    ) -> Result<Vec<Published>, ChannelsFull> {
        let mut answers = Vec::with_capacity(publishes.len());
        self.publish_each(channel, publishes, target, |a| answers.push(a))?;
        Ok(answers)
    }

    /// What [`Broker::publish`] and [`Broker::publish_batch`] do: each event in turn
    /// under the locks, its answer handed to `answer`; then the wakes and writes.
    fn publish_each(
        &self,
        channel: &str,
        publishes: &[Publish],
        target: Option<&str>,
        mut answer: impl FnMut(Published),
    ) -> Result<(), ChannelsFull> {
        let now = self.shared.clock.now_ms();
        let mut guard = self.state();
        let state = &mut *guard;
        let chan = self.channel(state, channel, now)?;
        let mut log = chan.log();
        log.expire(self.replay_cutoff(now), &mut state.ledger);
        let target: Option<Arc<str>> = target.map(Arc::from);
        let mut fanout = Fanout::default();
        let mut accepted = false;
        for publish in publishes {
            if let Some(cursor) = publish.id.as_ref().and_then(|id| log.publisher_ids.get(id)) {
                self.shared.metrics.events_duplicate.fetch_add(1, Relaxed);
                answer(Published {
                    id: Some(cursor.clone()),
                    delivered: 0,
                    duplicate: true,
                    channels: 1,
                });
                continue;
            }
            let route = match target.as_deref() {
                None => Route::Channel(channel),
                Some(client) => Route::Client { channel, client },
            };
            let seq = self.accept(state, route, publish);
            let arrival = Arrival {
                origin: self.shared.origin,
                seq,
                now_ms: now,
                id_ms: self.id_time(now),
                publish,
                target: target.clone(),
            };
            // The fan-out is shared by the batch: count this event's pattern readers.
            let readers_before = fanout.pattern_readers;
            let entry = self.append(state, &mut log, &arrival, &mut fanout);
            let delivered =
                log.deliver(&chan, &entry, &mut fanout) + (fanout.pattern_readers - readers_before);
            accepted = true;
            answer(Published {
                id: Some(entry.cursor.clone()),
                delivered,
                duplicate: false,
                channels: 1,
            });
        }
        drop(log);
        drop(guard);
        if accepted {
            // Peers first: their relay streams can be on their way (on another worker
            // thread) while this one writes to the local subscribers.
            self.flush_outlet();
        }
        self.finish(fanout);
        Ok(())
    }

    /// Assigns the next sequence and hands the event to the outlet, for peers.
    fn accept(&self, state: &mut State, route: Route<'_>, publish: &Publish) -> u64 {
        state.last_seq += 1;
        let seq = state.last_seq;
        if let Some(outlet) = &self.shared.outlet {
            let accepted = Accepted {
                seq,
                route,
                publish,
            };
            outlet.accepted(self.shared.clock.now_ms(), accepted);
        }
        self.shared.metrics.events_published.fetch_add(1, Relaxed);
        seq
    }

    /// Lets the outlet wake its readers, after the lock.
    fn flush_outlet(&self) {
        if let Some(outlet) = &self.shared.outlet {
            outlet.flush();
        }
    }

    /// The last sequence this node's origin assigned (0: none yet).
    pub fn accepted_seq(&self) -> u64 {
        self.state().last_seq
    }

    /// Publishes one event to every channel that has subscribers, here and (through
    /// the relay) on every other node. It has one sequence number, so a cursor covers
    /// it on every channel. Channels kept only for their history do not get it: the
    /// cost of this call follows the channels in use, not every channel ever
    /// published to, and such a channel's history stops vouching for resumes from
    /// before it (they get `reset`).
    pub fn publish_all(&self, publish: &Publish) -> Published {
        let mut answer = None;
        self.publish_all_each(std::slice::from_ref(publish), |a| answer = Some(a));
        answer.unwrap_or_else(|| unreachable!("one answer per event"))
    }

    /// Publishes several events to every channel that has subscribers, in order, as
    /// that many [`Broker::publish_all`] calls in a row would, under one acquisition
    /// of the locks (see [`Broker::publish_batch`]). Returns one answer per event.
    pub fn publish_all_batch(&self, publishes: &[Publish]) -> Vec<Published> {
        let mut answers = Vec::with_capacity(publishes.len());
        self.publish_all_each(publishes, |a| answers.push(a));
        answers
    }

    /// What [`Broker::publish_all`] and [`Broker::publish_all_batch`] do.
    fn publish_all_each(&self, publishes: &[Publish], mut answer: impl FnMut(Published)) {
        let now = self.shared.clock.now_ms();
        let mut guard = self.state();
        let state = &mut *guard;
        let cutoff = self.replay_cutoff(now);
        state.broadcast_ids.expire(cutoff);
        let channels = live_channels(state);
        let mut fanout = Fanout::default();
        let mut accepted = false;
        for publish in publishes {
            // A retry of an earlier publish to every channel, or an id one of these
            // channels already holds, is a duplicate.
            let duplicate = publish.id.as_ref().is_some_and(|id| {
                state.broadcast_ids.contains(id)
                    || channels.iter().any(|c| {
                        let mut log = c.log();
                        log.expire(cutoff, &mut state.ledger);
                        log.publisher_ids.contains_key(id)
                    })
            });
            if duplicate {
                self.shared.metrics.events_duplicate.fetch_add(1, Relaxed);
                answer(Published {
                    id: None,
                    delivered: 0,
                    duplicate: true,
                    channels: 0,
                });
                continue;
            }
            if let Some(id) = &publish.id {
                state.broadcast_ids.insert(id.clone(), now);
            }
            let seq = self.accept(state, Route::All, publish);
            pass_by_dormant(state, now);
            let arrival = Arrival {
                origin: self.shared.origin,
                seq,
                now_ms: now,
                id_ms: self.id_time(now),
                publish,
                target: None,
            };
            let readers_before = fanout.pattern_readers;
            let delivered = self.append_everywhere(state, &channels, &arrival, &mut fanout)
                + (fanout.pattern_readers - readers_before);
            accepted = true;
            answer(Published {
                id: None,
                delivered,
                duplicate: false,
                channels: channels.len(),
            });
        }
        drop(guard);
        if accepted {
            self.flush_outlet();
        }
        self.finish(fanout);
    }

    /// Appends one event to each of `channels` that does not have it yet (by the
    /// channel's frontier for `origin`); returns the local subscribers it is for, and
    /// leaves the wakes and writes that deliver it in `fanout`.
    fn append_everywhere(
        &self,
        state: &mut State,
        channels: &[Arc<Channel>],
        arrival: &Arrival<'_>,
        fanout: &mut Fanout,
    ) -> usize {
        let (origin, seq, now) = (arrival.origin, arrival.seq, arrival.now_ms);
        let mut delivered = 0;
        for channel in channels {
            let mut log = channel.log();
            if log.removed {
                // Not expected (channels come from the map under the state lock), but
                // a log out of the map must not re-enter the ledger.
                continue;
            }
            log.expire(self.replay_cutoff(now), &mut state.ledger);
            if log.frontier.get(origin) >= seq && !self.dedup_disabled() {
                continue;
            }
            let entry = self.append(state, &mut log, arrival, fanout);
            delivered += log.deliver(channel, &entry, fanout);
        }
        delivered
    }

    /// Delivers an event another node (`origin`) accepted. Events must arrive in the
    /// origin's sequence order; one this node already has is dropped. Returns local
    /// deliveries.
    pub fn apply_remote(&self, origin: Origin, event: Accepted<'_>) -> usize {
        let Accepted {
            seq,
            route,
            publish,
        } = event;
        let now = self.shared.clock.now_ms();
        let mut guard = self.state();
        let state = &mut *guard;
        note_applied(state, origin, seq);
        let (name, target) = match route {
            Route::All => (None, None),
            Route::Channel(name) => (Some(name), None),
            Route::Client { channel, client } => (Some(channel), Some(Arc::<str>::from(client))),
        };
        let channels = match name {
            None => {
                pass_by_dormant(state, now);
                live_channels(state)
            }
            Some(name) => match self.channel(state, name, now) {
                Ok(channel) => vec![channel],
                Err(ChannelsFull { .. }) => {
                    // No subscriber of the channel can miss it (it has no state
                    // here), but resumes here must not trust the time before now.
                    state.dropped_ms = state.dropped_ms.max(now + 1);
                    // A pattern's subscribers can: they get it all the same.
                    let mut fanout = Fanout::default();
                    let arrival = Arrival {
                        origin,
                        seq,
                        now_ms: now,
                        id_ms: self.id_time(now),
                        publish,
                        target,
                    };
                    self.feed_without_channel(state, name, &arrival, &mut fanout);
                    drop(guard);
                    let delivered = fanout.pattern_readers;
                    self.finish(fanout);
                    return delivered;
                }
            },
        };
        let mut fanout = Fanout::default();
        let forgotten;
        let publish = if publish.id.is_some() && self.planted(Bug::ForgetRelayedIds) {
            forgotten = Publish {
                id: None,
                ..publish.clone()
            };
            &forgotten
        } else {
            publish
        };
        let arrival = Arrival {
            origin,
            seq,
            now_ms: now,
            id_ms: self.id_time(now),
            publish,
            target,
        };
        let delivered = self.append_everywhere(state, &channels, &arrival, &mut fanout)
            + fanout.pattern_readers;
        drop(guard);
        self.finish(fanout);
        delivered
    }

    /// Records that this node will never get `origin`'s events up to `upto`: every
    /// channel gets an `event: gap`, and its cursor moves past the hole so resumes
    /// do not wait for events that are gone.
    pub fn remote_gap(&self, origin: Origin, upto: u64) {
        let now = self.shared.clock.now_ms();
        let mut guard = self.state();
        let state = &mut *guard;
        note_remote(state, origin, upto);
        let channels: Vec<Arc<Channel>> = state.channels.values().cloned().collect();
        let mut fanout = Fanout::default();
        let gap = Publish {
            id: None,
            event: Some("gap".into()),
            data: format!(
                r#"{{"reason":"events from another node were lost before reaching this one","origin":"{origin:x}","upto":{upto}}}"#
            ),
            retry: None,
        };
        let arrival = Arrival {
            origin,
            seq: upto,
            now_ms: now,
            id_ms: self.id_time(now),
            publish: &gap,
            target: None,
        };
        for channel in &channels {
            let mut log = channel.log();
            if log.removed || log.frontier.get(origin) >= upto {
                continue;
            }
            log.floor.advance(origin, upto);
            let entry = self.append(state, &mut log, &arrival, &mut fanout);
            log.deliver(channel, &entry, &mut fanout);
        }
        self.feed_gap_to_patterns(state, &arrival, &mut fanout);
        drop(guard);
        self.shared.metrics.relay_gaps.fetch_add(1, Relaxed);
        self.finish(fanout);
    }
}

impl Broker {
    /// Notes that `origin` announced (in gossip) having accepted events up to `seq`:
    /// a cursor up to there is one this cluster could have issued, even while none
    /// of those events reached this node (it restarted, or the link is down).
    pub fn note_announced(&self, origin: Origin, seq: u64) {
        if origin != self.shared.origin {
            note_remote(&mut self.state(), origin, seq);
        }
    }

    /// Notes that `origin`'s process has ended for good after announcing events up
    /// to `upto` (its node came back as a new origin without a drain, or a peer's
    /// relay from it was retired): what of it this node has not applied by now will
    /// never reach it. A resume whose cursor has that origin short of `upto`, on a
    /// node that did not apply it that far, starts with a `reset`: the client may
    /// lack events no replay or relay can bring any more, so the node cannot vouch
    /// for the stream (see [`Broker::cannot_vouch`]).
    pub fn note_gone(&self, origin: Origin, upto: u64) {
        // What it never relayed here is lost with it: ids stop waiting for it.
        self.shared.watermark.forget(origin);
        if origin == self.shared.origin || upto == 0 {
            return;
        }
        let mut state = self.state();
        let state = &mut *state;
        if state.remote.len() >= MAX_REMOTES && !state.remote.contains_key(&origin) {
            forget_one_gone(state);
        }
        let remote = state.remote.entry(origin).or_default();
        remote.seen = remote.seen.max(upto);
        remote.gone = Some(remote.gone.unwrap_or(0).max(upto));
    }
}

/// Origins remembered at most. Each node start in the cluster adds one; past the
/// bound an ended one is forgotten, which only means a resume past it is judged as
/// though it were still running.
const MAX_REMOTES: usize = 4096;

fn forget_one_gone(state: &mut State) {
    let ended = state
        .remote
        .iter()
        .find(|(_, remote)| remote.gone.is_some())
        .map(|(origin, _)| *origin);
    if let Some(origin) = ended {
        state.remote.remove(&origin);
    }
}

impl Broker {
    /// Whether a client at `cursor` may lack events of an origin that ended (see
    /// [`Broker::note_gone`]) that this node never applied: no replay or relay can
    /// bring them any more, so a resume must start with a `reset`.
    ///
    /// An origin the cursor does not name counts as at 0 when the channel (or a
    /// channel of the pattern), as this node holds it, has events of it: the client
    /// got none of those. (One that published nothing on it is not asked about.)
    ///
    /// A live origin's events from before this node's first pull of it are not
    /// judged here: the node cannot tell those the client lacks from those it
    /// published on other channels, and resetting every such resume would reset
    /// most streams that move to a restarted node in a rolling restart.
    pub(super) fn cannot_vouch(&self, state: &State, cursor: &Frontier, held: &Frontier) -> bool {
        let unnamed = held
            .iter()
            .filter(|(origin, _)| cursor.get(*origin) == 0)
            .map(|(origin, _)| (origin, 0));
        cursor.iter().chain(unnamed).any(|(origin, seq)| {
            state.remote.get(&origin).is_some_and(|remote| {
                remote
                    .gone
                    .is_some_and(|upto| seq < upto && remote.applied < upto)
            })
        })
    }
}

fn note_remote(state: &mut State, origin: Origin, seq: u64) {
    let remote = state.remote.entry(origin).or_default();
    remote.seen = remote.seen.max(seq);
}

/// Notes an event of `origin` applied from its relay stream (which comes in order).
fn note_applied(state: &mut State, origin: Origin, seq: u64) {
    let remote = state.remote.entry(origin).or_default();
    remote.seen = remote.seen.max(seq);
    remote.applied = remote.applied.max(seq);
}
