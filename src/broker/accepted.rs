//! What crosses between the broker and the relay, typed: each event an origin
//! accepted ([`Accepted`], with its [`Route`]). The broker hands this node's events
//! to an [`Outlet`] (the cluster's outbox) and takes other nodes' events in
//! [`Broker::apply_remote`](super::Broker::apply_remote). How they look on the wire
//! is the cluster's business (`cluster::wire`), not the broker's.

use std::fmt;

use crate::event::Publish;

/// Where an accepted event goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// One channel.
    Channel(&'a str),
    /// One client of one channel.
    Client { channel: &'a str, client: &'a str },
    /// Every channel with subscribers on the receiving node.
    All,
}

/// One event an origin accepted: its sequence in that origin's order, where it goes
/// and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted<'a> {
    pub seq: u64,
    pub route: Route<'a>,
    pub publish: &'a Publish,
}

/// Where the broker hands the events this node accepts (the relay's outbox).
pub trait Outlet: Send + Sync + fmt::Debug {
    /// Takes one event, accepted at `accepted_ms` (wall time). Called under the
    /// broker's lock, once per event and in sequence order, so it must be quick and
    /// must not call back into the broker.
    fn accepted(&self, accepted_ms: u64, event: Accepted<'_>);

    /// Called once the broker's lock is released after one or more
    /// [`Outlet::accepted`] calls: the time to wake whoever waits for them.
    fn flush(&self);
}
