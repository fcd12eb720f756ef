//! An incremental `text/event-stream` parser (the WHATWG rules: lines end in CRLF,
//! LF or CR; `data` lines join with LF; a blank line dispatches) and the benchmark's
//! payload, which carries its send time.

/// One dispatched event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SseEvent<'a> {
    /// The `event:` name; empty for a plain message.
    pub(crate) name: &'a [u8],
    pub(crate) data: &'a [u8],
}

#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// A line not yet ended by the input so far.
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    name: Vec<u8>,
    /// The previous input ended in CR, so a leading LF belongs to that line end.
    after_cr: bool,
}

impl SseParser {
    /// Feeds stream bytes (cut anywhere) and calls `on_event` for each complete event.
    pub(crate) fn feed(&mut self, mut input: &[u8], mut on_event: impl FnMut(SseEvent<'_>)) {
        if self.after_cr && input.first() == Some(&b'\n') {
            input = &input[1..];
        }
        self.after_cr = false;
        while let Some(end) = input.iter().position(|&b| b == b'\n' || b == b'\r') {
            let mut next = end + 1;
            if input[end] == b'\r' {
                match input.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if self.line.is_empty() {
                self.line_done(&input[..end], &mut on_event);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&input[..end]);
                self.line_done(&line, &mut on_event);
                line.clear();
                self.line = line;
            }
            input = &input[next..];
        }
        self.line.extend_from_slice(input);
    }

    fn line_done(&mut self, line: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) {
        if line.is_empty() {
            if self.has_data {
                on_event(SseEvent {
                    name: &self.name,
                    data: &self.data,
                });
            }
            self.data.clear();
            self.name.clear();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.name.clear();
                self.name.extend_from_slice(value);
            }
            _ => {}
        }
    }
}

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

    fn events(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, |e| {
                out.push((
                    String::from_utf8_lossy(e.name).into_owned(),
                    String::from_utf8_lossy(e.data).into_owned(),
                ))
            });
        }
        out
    }

    #[test]
    fn parses_the_sse_cluster_stream_cut_at_every_byte() {
        let wire: &[u8] = b"retry: 3000\n\nid: 17\n\n: keep-alive\n\nid: 18\nevent: ping\ndata: {\"a\":1}\n\nid: 19\ndata: first\ndata: second\n\n";
        let expected = vec![
            ("ping".to_owned(), "{\"a\":1}".to_owned()),
            (String::new(), "first\nsecond".to_owned()),
        ];
        for cut in 0..=wire.len() {
            assert_eq!(
                events(&[&wire[..cut], &wire[cut..]]),
                expected,
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(events(&bytes), expected);
    }

    #[test]
    fn accepts_crlf_and_cr_line_ends_even_when_split() {
        let wire: &[u8] = b"data:a\r\n\r\ndata: b\r\rdata: c\n\n";
        let expected = vec![
            (String::new(), "a".to_owned()),
            (String::new(), "b".to_owned()),
            (String::new(), "c".to_owned()),
        ];
        for cut in 0..=wire.len() {
            assert_eq!(
                events(&[&wire[..cut], &wire[cut..]]),
                expected,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn an_event_without_data_is_not_dispatched() {
        assert!(events(&[b"event: x\nid: 3\n\n"]).is_empty());
        assert_eq!(
            events(&[b"event: x\ndata\n\n"]),
            vec![("x".to_owned(), String::new())]
        );
    }

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
