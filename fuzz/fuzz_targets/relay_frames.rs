//! A relay response body, read by a puller: plain, sealed frames of fuzzed plaintext,
//! or fuzzed bytes through the frame opener. The first byte picks the mode and the
//! chunk size; the puller must never panic, whatever the peer sends.
#![no_main]

use std::sync::atomic::Ordering::Relaxed;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sse_cluster::broker::{Broker, Resume};
use sse_cluster::cluster::crypto::{ClusterKey, FrameOpener, FrameSealer, ReplayGuard};
use sse_cluster::fuzzing::{relay_body, small_broker};

const ORIGIN: u64 = 0xfeed;

fn key() -> &'static ClusterKey {
    static KEY: OnceLock<ClusterKey> = OnceLock::new();
    KEY.get_or_init(|| ClusterKey::derive("fuzz"))
}

/// Both ends of a fresh relay session under the fuzz key.
fn session() -> (FrameSealer, FrameOpener) {
    let key = key();
    let now = 1_700_000_000_000;
    let context = "GET /relay/v1 origin=feed from=0 since=0 node=fuzz";
    let request = key.relay_request([7; 16], now, context);
    let mut guard = ReplayGuard::default();
    let accept = key
        .verify_relay_request(&request, context, now, &mut guard)
        .expect("own request verifies");
    let response = accept.response_header([9; 16]);
    let opener = key
        .verify_relay_response(&request, &response)
        .expect("own response verifies");
    (accept.sealer([9; 16]), opener)
}

fn broker() -> Broker {
    small_broker(1_700_000_000_000)
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, body)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(control >> 2) + 1;
    let broker = broker();
    // Subscribers give `apply_remote` channels to deliver into.
    let _subscribers: Vec<_> = ["a", "b"]
        .iter()
        .filter_map(|c| broker.subscribe(c, None, Resume::Live).ok())
        .collect();
    let mut next = 0;
    match control & 3 {
        // Plain frames, as a cluster without a key reads them.
        0 | 1 => {
            let chunks: Vec<&[u8]> = body.chunks(chunk).collect();
            let _ = relay_body(&broker, ORIGIN, &chunks, None, &mut next);
        }
        // Fuzzed payloads, each sealed: the opener must hand back exactly them.
        2 => {
            let (mut sealer, mut opener) = session();
            let mut wire = Vec::new();
            for payload in body.split(|&b| b == 0xff) {
                let sealed = sealer.seal(payload);
                wire.extend_from_slice(&(sealed.len() as u32).to_be_bytes());
                wire.extend_from_slice(&sealed);
            }
            let chunks: Vec<&[u8]> = wire.chunks(chunk).collect();
            let _ = relay_body(&broker, ORIGIN, &chunks, Some(&mut opener), &mut next);
        }
        // Fuzzed bytes where sealed frames are expected: refused, never applied.
        _ => {
            let (_, mut opener) = session();
            let chunks: Vec<&[u8]> = body.chunks(chunk).collect();
            let before = broker.metrics().relay_events_received.load(Relaxed);
            let _ = relay_body(&broker, ORIGIN, &chunks, Some(&mut opener), &mut next);
            let after = broker.metrics().relay_events_received.load(Relaxed);
            assert_eq!(before, after, "an unsealed frame was applied");
        }
    }
});
