//! A gossip datagram, as the gossip socket decodes it: without a key straight into
//! `ChitchatMessage::deserialize`; with a key through `open_datagram` first (fuzzed
//! bytes, and fuzzed messages sealed under the cluster key so the decoder behind the
//! cipher is reached too). The first byte picks the mode. Nothing may panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sse_cluster::clock::Clock;
use sse_cluster::cluster::crypto::ClusterKey;
use sse_cluster::cluster::ClusterSecret;
use sse_cluster::fuzzing::gossip_datagram;

const SECRET: &str = "fuzz";

fn secret() -> &'static ClusterSecret {
    static SECRET_: OnceLock<ClusterSecret> = OnceLock::new();
    SECRET_.get_or_init(|| ClusterSecret::new(SECRET, Clock::system(), 1))
}

fn key() -> &'static ClusterKey {
    static KEY: OnceLock<ClusterKey> = OnceLock::new();
    KEY.get_or_init(|| ClusterKey::derive(SECRET))
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, packet)) = input.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let _ = gossip_datagram(None, packet);
        }
        1 => {
            let result = gossip_datagram(Some(secret()), packet);
            assert!(result.is_err(), "an unsealed datagram was accepted");
        }
        _ => {
            let now = Clock::system().now_ms();
            let mut nonce = [0u8; 24];
            nonce[..8].copy_from_slice(&now.to_be_bytes());
            let sealed = key().seal_datagram(nonce, now, packet);
            let sealed_result = gossip_datagram(Some(secret()), &sealed);
            let plain_result = gossip_datagram(None, packet);
            assert_eq!(
                sealed_result.is_ok(),
                plain_result.is_ok(),
                "the cipher changed what the decoder sees"
            );
        }
    }
});
