//! The benchmark's payload, which carries its send time. Streams are read with
//! `sse_cluster_client::Parser`.

/// The payload text: the send time in nanoseconds, a space, then `x` up to `size`
/// bytes. Only digits, space and `x`, so it needs no escaping in JSON or SSE.
pub(crate) fn encode_payload(sent_ns: u64, size: usize) -> String {
    let mut text = sent_ns.to_string();
    if text.len() < size {
        text.push(' ');
        while text.len() < size {
            text.push('x');
        }
    }
    text
}

/// The send time from a delivered `data`, which may arrive as a JSON string (with
/// its quotes, as sse-cluster delivers a string) or raw.
pub(crate) fn payload_sent_ns(data: &[u8]) -> Option<u64> {
    let data = data.strip_prefix(b"\"").unwrap_or(data);
    let digits = data.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let end = data.get(digits).copied();
    if !matches!(end, None | Some(b' ') | Some(b'"')) {
        return None;
    }
    std::str::from_utf8(&data[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_raw_and_as_a_json_string() {
        let payload = encode_payload(123_456_789, 100);
        assert_eq!(payload.len(), 100);
        assert!(payload.starts_with("123456789 xx"));
        assert_eq!(payload_sent_ns(payload.as_bytes()), Some(123_456_789));
        let quoted = format!("\"{payload}\"");
        assert_eq!(payload_sent_ns(quoted.as_bytes()), Some(123_456_789));
        // Smaller than the timestamp: the timestamp alone.
        assert_eq!(encode_payload(42, 1), "42");
        assert_eq!(payload_sent_ns(b"\"42\""), Some(42));
        assert_eq!(payload_sent_ns(b"{\"a\":1}"), None);
        assert_eq!(payload_sent_ns(b"12ab"), None);
        assert_eq!(payload_sent_ns(b""), None);
    }
}
