//! The gossip transport's decompression bound: an Ack whose delta is a stream of
//! blocks built from the input, some zstd-compressed (from run lengths, so a few input
//! bytes can ask for megabytes), some raw, some garbage where zstd data should be.
//! Nothing may panic, and no datagram whose blocks inflate past the bound may reach
//! chitchat: the decoder must refuse it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_cluster::fuzzing::{gossip_datagram, GOSSIP_MAX_INFLATED};

fuzz_target!(|input: &[u8]| {
    let mut message = 45_139u16.to_le_bytes().to_vec();
    message.extend([0, 2]); // protocol version 0, Ack
    let mut inflated = 0usize;
    let mut valid = true;
    for spec in input.chunks(4) {
        let [kind, a, b, fill] = *spec else { break };
        let len = u16::from_le_bytes([a, b]) as usize;
        let block = match kind % 3 {
            0 => {
                let plain = vec![fill; len];
                inflated += len;
                (1, zstd::bulk::compress(&plain, 1).expect("compressing"))
            }
            1 => {
                inflated += len;
                (2, vec![fill; len])
            }
            _ => {
                valid = false;
                (1, vec![fill; len % 64])
            }
        };
        message.push(block.0);
        message.extend((block.1.len() as u16).to_le_bytes());
        message.extend(&block.1);
        if message.len() > 65_000 {
            break;
        }
    }
    message.push(0);
    let result = gossip_datagram(None, &message);
    if valid && inflated > GOSSIP_MAX_INFLATED {
        assert!(result.is_err(), "{inflated} bytes inflated past the bound");
    }
});
