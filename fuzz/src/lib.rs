//! Shared by the fuzz targets: an SSE reader that follows the WHATWG EventSource
//! parsing rules, independent of the broker's encoder.

/// One dispatched event, and every field line that went into it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event_type: String,
    pub data: String,
    pub last_event_id: String,
    pub fields: Vec<(String, String)>,
}

/// What a browser makes of a complete stream.
#[derive(Debug, Default)]
pub struct SseParse {
    pub events: Vec<SseEvent>,
    /// Field lines after the last dispatch (never dispatched).
    pub pending_fields: Vec<(String, String)>,
    pub comments: Vec<String>,
    /// Text after the last line terminator (a browser drops it).
    pub unterminated: String,
}

/// Parses `stream` as an EventSource does: lines end in CRLF, LF or CR; a field is
/// split at the first colon and one leading space is removed from its value; `data`
/// lines are joined with LF; a blank line dispatches.
pub fn parse_sse(stream: &[u8]) -> SseParse {
    let text = String::from_utf8_lossy(stream);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut out = SseParse::default();
    let mut last_event_id = String::new();
    let mut event_type = String::new();
    let mut data = String::new();
    let mut fields = Vec::new();
    let mut rest = text;
    loop {
        let Some(end) = rest.find(['\r', '\n']) else {
            out.unterminated = rest.to_owned();
            break;
        };
        let line = &rest[..end];
        let after = &rest[end..];
        rest = after.strip_prefix("\r\n").unwrap_or(&after[1..]);
        if line.is_empty() {
            if data.is_empty() {
                event_type.clear();
                fields.clear();
                continue;
            }
            data.pop();
            out.events.push(SseEvent {
                event_type: if event_type.is_empty() {
                    "message".to_owned()
                } else {
                    std::mem::take(&mut event_type)
                },
                data: std::mem::take(&mut data),
                last_event_id: last_event_id.clone(),
                fields: std::mem::take(&mut fields),
            });
            event_type.clear();
            continue;
        }
        if let Some(comment) = line.strip_prefix(':') {
            out.comments.push(comment.to_owned());
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        fields.push((field.to_owned(), value.to_owned()));
        match field {
            "event" => event_type = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => last_event_id = value.to_owned(),
            _ => {}
        }
    }
    out.pending_fields = fields;
    out
}
