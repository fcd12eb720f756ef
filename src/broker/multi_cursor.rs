//! The cursor of a stream of several channels: one [`Cursor`] per channel, in one
//! `id:`.
//!
//! Events of different channels interleave on such a stream, and events of one
//! origin can wait in two of its channels at once (sequences are per origin, not per
//! channel), so no single frontier says what the client has had. Each channel keeps
//! its own cursor, exactly the one a stream of that channel alone would hold at the
//! same point; the stream's id lists all of them, and a resume opens every channel
//! from its own cursor, with that channel's checks (`reset` or replay), on any node.
//!
//! Text form, only `0-9 a-f m . _`:
//!
//! ```text
//! m<set hex8>_<time_ms>_<origin hex>(.<origin hex>)*(_<back>(.<seq>)*)+
//! e.g. m3c8d57a2_1732358400123_7.9f2c4e1a77d0b3e5_.3.42_250..40
//! ```
//!
//! - `set`: FNV-1a (32 bits) of the channel names sorted and joined with `,`: an id
//!   is only taken by a stream of the same set of channels (in any order);
//! - `time_ms`: the latest of the channels' cursor times;
//! - the origins named by any channel's frontier, ascending, once;
//! - one group per channel, in the sorted order of their names: how many ms its
//!   cursor's time is before `time_ms`, then its sequence for each origin in the
//!   order listed. An empty number is 0 (and an origin at 0 is not in the frontier).

use crate::event::{Cursor, Frontier, Origin, MAX_CURSOR_ORIGINS};

/// Longest stream cursor accepted: far above what 32 channels and 64 origins make,
/// and below any request head a node accepts by default.
pub const MAX_STREAM_CURSOR_LEN: usize = 64 * 1024;

/// FNV-1a (32 bits) of `names`, sorted, joined with `,`: names a set of channels.
pub(crate) fn set_digest(sorted: &[impl AsRef<str>]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for (i, name) in sorted.iter().enumerate() {
        let sep: &[u8] = if i == 0 { b"" } else { b"," };
        for byte in sep.iter().chain(name.as_ref().as_bytes()) {
            hash ^= u32::from(*byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    hash
}

/// The id of a stream whose channels (sorted by name, with digest `set`) hold
/// `cursors`.
pub(crate) fn encode(set: u32, cursors: &[Cursor]) -> String {
    use std::fmt::Write;
    let mut origins: Vec<Origin> = cursors
        .iter()
        .flat_map(|c| c.frontier.iter().map(|(origin, _)| origin))
        .collect();
    origins.sort_unstable();
    origins.dedup();
    let time = cursors.iter().map(|c| c.time_ms).max().unwrap_or(0);
    let mut out = String::with_capacity(32 + origins.len() * 17 + cursors.len() * 8);
    let _ = write!(out, "m{set:08x}_{time}_");
    for (i, origin) in origins.iter().enumerate() {
        let dot = if i == 0 { "" } else { "." };
        let _ = write!(out, "{dot}{origin:x}");
    }
    for cursor in cursors {
        out.push('_');
        let back = time - cursor.time_ms;
        if back > 0 {
            let _ = write!(out, "{back}");
        }
        for origin in &origins {
            out.push('.');
            let seq = cursor.frontier.get(*origin);
            if seq > 0 {
                let _ = write!(out, "{seq}");
            }
        }
    }
    out
}

/// The channels' cursors in a stream id, if it is one made by [`encode`] for a set
/// with digest `set` of `count` channels. Anything else is `None`.
pub(crate) fn parse(text: &str, set: u32, count: usize) -> Option<Vec<Cursor>> {
    if text.len() > MAX_STREAM_CURSOR_LEN {
        return None;
    }
    let mut parts = text.strip_prefix('m')?.split('_');
    let digest = parts.next()?;
    if digest.len() != 8 || u32::from_str_radix(digest, 16).ok()? != set {
        return None;
    }
    let time = decimal(parts.next()?)?;
    let origins = parts.next()?;
    let mut listed: Vec<Origin> = Vec::new();
    if !origins.is_empty() {
        for origin in origins.split('.') {
            if origin.is_empty()
                || origin.len() > 16
                || !origin.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return None;
            }
            let origin = u64::from_str_radix(origin, 16).ok()?;
            // Ascending, so each origin once.
            if listed.last().is_some_and(|last| *last >= origin)
                || listed.len() >= MAX_CURSOR_ORIGINS
            {
                return None;
            }
            listed.push(origin);
        }
    }
    let mut cursors = Vec::with_capacity(count);
    for group in parts {
        if cursors.len() == count {
            return None;
        }
        let mut numbers = group.split('.');
        let back = decimal_or_zero(numbers.next()?)?;
        let mut frontier = Frontier::default();
        for origin in &listed {
            let seq = decimal_or_zero(numbers.next()?)?;
            if seq > 0 {
                frontier.advance(*origin, seq);
            }
        }
        if numbers.next().is_some() {
            return None;
        }
        cursors.push(Cursor {
            time_ms: time.checked_sub(back)?,
            frontier,
        });
    }
    (cursors.len() == count).then_some(cursors)
}

fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn decimal_or_zero(text: &str) -> Option<u64> {
    if text.is_empty() {
        Some(0)
    } else {
        decimal(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(time_ms: u64, seqs: &[(Origin, u64)]) -> Cursor {
        let mut frontier = Frontier::default();
        for (origin, seq) in seqs {
            frontier.advance(*origin, *seq);
        }
        Cursor { time_ms, frontier }
    }

    #[test]
    fn stream_cursors_round_trip_compactly() {
        let set = set_digest(&["news", "sport", "weather"]);
        let cursors = vec![
            cursor(1_000, &[(7, 3), (0x9f2c_4e1a_77d0_b3e5, 42)]),
            cursor(750, &[(0x9f2c_4e1a_77d0_b3e5, 40)]),
            cursor(1_000, &[]),
        ];
        let text = encode(set, &cursors);
        assert_eq!(
            text,
            format!("m{set:08x}_1000_7.9f2c4e1a77d0b3e5_.3.42_250..40_..")
        );
        assert_eq!(parse(&text, set, 3), Some(cursors));
        // No events anywhere yet.
        let empty = vec![cursor(5, &[]), cursor(5, &[])];
        let text = encode(set, &empty);
        assert_eq!(text, format!("m{set:08x}_5___"));
        assert_eq!(parse(&text, set, 2), Some(empty));
    }

    #[test]
    fn the_set_digest_ignores_order_and_tells_sets_apart() {
        let mut names = ["sport", "news"];
        names.sort_unstable();
        assert_eq!(set_digest(&names), set_digest(&["news", "sport"]));
        assert_ne!(
            set_digest(&["news", "sport"]),
            set_digest(&["news", "sports"])
        );
    }

    #[test]
    fn other_texts_are_refused() {
        let set = set_digest(&["a", "b"]);
        let good = encode(set, &[cursor(9, &[(1, 1)]), cursor(9, &[(1, 2)])]);
        assert!(parse(&good, set, 2).is_some());
        let refused = [
            String::new(),
            "m".into(),
            "12~1.3".into(),
            good.replacen('m', "M", 1),
            // Another set, another size.
            encode(set ^ 1, &[cursor(9, &[]), cursor(9, &[])]),
            format!("{good}_"),
            good.rsplit_once('_').unwrap().0.to_owned(),
            format!("m{set:08x}_9_1_.1.2_.3"),
            format!("m{set:08x}_9_2.1_.1.1_.1.1"),
            format!("m{set:08x}_9_1.1_.1.1_.1.1"),
            format!("m{set:08x}_9_1_10.1_.1"),
            format!("m{set:08x}_9_g_.1_.1"),
            format!("m{set:08x}_9_1_.-1_.1"),
            format!("m{set:08x}_9_1_.{}_.1", "9".repeat(21)),
            format!("m{set:08x}_9_{}_.1_.1", "1".repeat(17)),
            format!("m{set:08x}_{}_1_.1_.1", u128::from(u64::MAX) + 1),
            "m".to_owned() + &"_".repeat(MAX_STREAM_CURSOR_LEN),
        ];
        for text in refused {
            assert_eq!(parse(&text, set, 2), None, "{text:?}");
        }
        let many: Vec<String> = (1..=MAX_CURSOR_ORIGINS as u64 + 1)
            .map(|o| format!("{o:x}"))
            .collect();
        let group = ".".repeat(many.len());
        let text = format!("m{set:08x}_9_{}_{group}_{group}", many.join("."));
        assert_eq!(parse(&text, set, 2), None, "too many origins");
    }
}
