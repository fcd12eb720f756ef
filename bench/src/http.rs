//! Just enough HTTP/1.1 for a load generator: URL templates, response heads and a
//! streaming chunked decoder. Hand-written so the client costs as little CPU as
//! possible and measures the server, not a client library.

/// A `http://host:port/path` URL whose path may contain `{channel}`.
#[derive(Debug, Clone)]
pub(crate) struct UrlTemplate {
    /// `host:port` to connect to.
    pub(crate) connect: String,
    /// The `Host` header value.
    pub(crate) host: String,
    path: String,
}

impl UrlTemplate {
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        // A port follows the last ':' unless that ':' is inside an IPv6 literal.
        let has_port = authority
            .rfind(':')
            .is_some_and(|i| !authority[i..].contains(']'));
        let connect = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(UrlTemplate {
            connect,
            host: authority.to_owned(),
            path: path.to_owned(),
        })
    }

    pub(crate) fn path(&self, channel: &str) -> String {
        self.path.replace("{channel}", channel)
    }
}

/// The parts of a response head the load generator acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    pub(crate) status: u16,
    pub(crate) chunked: bool,
    pub(crate) content_length: Option<usize>,
    pub(crate) close: bool,
}

/// Heads larger than this are treated as an error rather than buffered forever.
const MAX_HEAD: usize = 64 * 1024;

/// Parses a response head at the start of `buf`. `Ok(None)` means incomplete; on
/// success, returns the head and its length in bytes (the body starts there).
pub(crate) fn parse_response_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err("response head larger than 64 KiB".into());
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 response: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut head = ResponseHead {
        status,
        chunked: false,
        content_length: None,
        close: version == "HTTP/1.0",
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(
                value
                    .parse()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(Some((head, end + 4)))
}

/// Decodes `Transfer-Encoding: chunked` incrementally: input may be cut anywhere.
#[derive(Debug, Default)]
pub(crate) struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size; `ext` once a `;` extension started.
    #[default]
    SizeStart,
    Size {
        value: u64,
        ext: bool,
    },
    SizeLf {
        value: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines until an empty one.
    Trailer {
        line_len: usize,
    },
    Done,
}

impl ChunkedDecoder {
    pub(crate) fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Appends the payload bytes in `input` to `out`. Returns how many input bytes
    /// were consumed: all of them, unless the body ended inside `input`.
    pub(crate) fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let mut i = 0;
        while i < input.len() {
            let byte = input[i];
            match self.state {
                ChunkState::Done => return Ok(i),
                ChunkState::Data(left) => {
                    let take = (left as usize).min(input.len() - i);
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(left)
                    };
                    continue;
                }
                ChunkState::SizeStart => {
                    let digit = hex_value(byte).ok_or("chunk size is not hex")?;
                    self.state = ChunkState::Size {
                        value: digit,
                        ext: false,
                    };
                }
                ChunkState::Size { value, ext } => match byte {
                    b'\r' => self.state = ChunkState::SizeLf { value },
                    b'\n' => self.state = after_size(value),
                    b';' => self.state = ChunkState::Size { value, ext: true },
                    _ if ext => {}
                    _ => {
                        let digit = hex_value(byte).ok_or("chunk size is not hex")?;
                        let value = value
                            .checked_mul(16)
                            .and_then(|v| v.checked_add(digit))
                            .ok_or("chunk size overflows")?;
                        self.state = ChunkState::Size { value, ext };
                    }
                },
                ChunkState::SizeLf { value } => {
                    if byte != b'\n' {
                        return Err("chunk size line not ended by CRLF".into());
                    }
                    self.state = after_size(value);
                }
                ChunkState::DataCr => match byte {
                    b'\r' => self.state = ChunkState::DataLf,
                    b'\n' => self.state = ChunkState::SizeStart,
                    _ => return Err("chunk data not followed by CRLF".into()),
                },
                ChunkState::DataLf => {
                    if byte != b'\n' {
                        return Err("chunk data not followed by CRLF".into());
                    }
                    self.state = ChunkState::SizeStart;
                }
                ChunkState::Trailer { line_len } => match byte {
                    b'\n' if line_len == 0 => {
                        self.state = ChunkState::Done;
                        return Ok(i + 1);
                    }
                    b'\n' => self.state = ChunkState::Trailer { line_len: 0 },
                    b'\r' => {}
                    _ => {
                        self.state = ChunkState::Trailer {
                            line_len: line_len + 1,
                        }
                    }
                },
            }
            i += 1;
        }
        Ok(i)
    }
}

fn after_size(value: u64) -> ChunkState {
    if value == 0 {
        ChunkState::Trailer { line_len: 0 }
    } else {
        ChunkState::Data(value)
    }
}

fn hex_value(byte: u8) -> Option<u64> {
    (byte as char).to_digit(16).map(u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_template_splits_authority_and_fills_the_channel() {
        let url = UrlTemplate::parse("http://127.0.0.1:8080/sub/{channel}?x=1").unwrap();
        assert_eq!(url.connect, "127.0.0.1:8080");
        assert_eq!(url.host, "127.0.0.1:8080");
        assert_eq!(url.path("news"), "/sub/news?x=1");
        let url = UrlTemplate::parse("http://example.org").unwrap();
        assert_eq!(url.connect, "example.org:80");
        assert_eq!(url.path("a"), "/");
        let url = UrlTemplate::parse("http://[::1]/c/{channel}").unwrap();
        assert_eq!(url.connect, "[::1]:80");
        assert!(UrlTemplate::parse("https://example.org/").is_err());
        assert!(UrlTemplate::parse("http:///x").is_err());
    }

    #[test]
    fn response_head_waits_for_the_blank_line_then_reads_framing() {
        let full = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\nbody";
        assert_eq!(parse_response_head(&full[..30]).unwrap(), None);
        let (head, len) = parse_response_head(full).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert!(head.chunked);
        assert!(!head.close);
        assert_eq!(&full[len..], b"body");

        let (head, _) = parse_response_head(
            b"HTTP/1.1 202 Accepted\r\ncontent-length: 12\r\nConnection: close\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.status, 202);
        assert_eq!(head.content_length, Some(12));
        assert!(head.close);
        assert!(parse_response_head(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_decoder_handles_input_cut_at_every_byte() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for cut in 0..=wire.len() - b"NEXT".len() {
            let mut decoder = ChunkedDecoder::default();
            let mut out = Vec::new();
            let first = decoder.decode(&wire[..cut], &mut out).unwrap();
            assert_eq!(first, cut);
            let second = decoder.decode(&wire[cut..], &mut out).unwrap();
            assert_eq!(out, b"hello, world", "cut at {cut}");
            assert!(decoder.is_done());
            assert_eq!(&wire[cut + second..], b"NEXT", "cut at {cut}");
        }
    }

    #[test]
    fn chunked_decoder_rejects_garbage() {
        let mut decoder = ChunkedDecoder::default();
        assert!(decoder.decode(b"zz\r\n", &mut Vec::new()).is_err());
        let mut decoder = ChunkedDecoder::default();
        assert!(decoder.decode(b"2\r\nabX", &mut Vec::new()).is_err());
    }
}
