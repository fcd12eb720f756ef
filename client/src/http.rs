//! HTTP/1.1 over a plain TCP connection per request (hyper's client connection, no
//! pool), the node addresses the client is given, and its error type.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a request or a stream failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A node address is not `http://host:port` (with an optional path prefix).
    InvalidNode(String),
    /// No node addresses were given.
    NoNodes,
    /// The connection could not be made: nothing was sent.
    Connect(std::io::Error),
    /// Sending or reading failed after connecting.
    Io(std::io::Error),
    /// HTTP failed (malformed answer, connection closed mid-answer).
    Http(hyper::Error),
    /// No answer (or no stream bytes) within the configured time.
    Timeout,
    /// The node answered with a status other than 200; `body` is its text (the
    /// broker's `{"error": ...}`).
    Status { status: u16, body: String },
    /// A 200 answer that is not what the broker sends.
    Answer(String),
    /// The request could not be built (a header value with a line break, say).
    Request(String),
}

impl Error {
    /// Whether another node, or the same one a little later, may succeed: network
    /// failures and the statuses of a node that is overloaded or draining.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connect(_) | Error::Io(_) | Error::Http(_) | Error::Timeout => true,
            Error::Status { status, .. } => matches!(status, 502..=504),
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidNode(node) => {
                write!(f, "node address {node:?} is not http://host:port")
            }
            Error::NoNodes => f.write_str("no node addresses given"),
            Error::Connect(e) => write!(f, "connect: {e}"),
            Error::Io(e) => write!(f, "network: {e}"),
            Error::Http(e) => write!(f, "http: {e}"),
            Error::Timeout => f.write_str("timed out"),
            Error::Status { status, body } => write!(f, "status {status}: {body}"),
            Error::Answer(e) => write!(f, "unexpected answer: {e}"),
            Error::Request(e) => write!(f, "bad request: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Connect(e) | Error::Io(e) => Some(e),
            Error::Http(e) => Some(e),
            _ => None,
        }
    }
}

/// A node's address: where to connect and what to put before the API's paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    /// `host:port`, connected to as given (names are resolved on each connect).
    pub(crate) authority: String,
    /// A path prefix without a trailing slash; empty for none.
    pub(crate) prefix: String,
}

impl Node {
    /// Reads `http://host:port` or `http://host:port/prefix`; the port defaults to 80.
    pub(crate) fn parse(url: &str) -> Result<Node, Error> {
        let invalid = || Error::InvalidNode(url.to_owned());
        let rest = url.strip_prefix("http://").ok_or_else(invalid)?;
        let (authority, prefix) = match rest.find('/') {
            Some(slash) => (&rest[..slash], rest[slash..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty()
            || authority.contains(['@', '?', '#'])
            || authority
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            || prefix.contains(['?', '#'])
        {
            return Err(invalid());
        }
        let has_port = match authority.rsplit_once(':') {
            // `[::1]` alone has colons but no port.
            Some((host, port)) => {
                !host.ends_with(':') && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
            }
            None => false,
        } && !authority.ends_with(']');
        let authority = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Node {
            authority,
            prefix: prefix.to_owned(),
        })
    }

    pub(crate) fn parse_all<I>(nodes: I) -> Result<Vec<Node>, Error>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let nodes = nodes
            .into_iter()
            .map(|n| Node::parse(n.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if nodes.is_empty() {
            return Err(Error::NoNodes);
        }
        Ok(nodes)
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

/// Refuses a path segment that would change the request's path or break its head.
pub(crate) fn check_segment(segment: &str) -> Result<(), Error> {
    if segment.is_empty()
        || segment
            .bytes()
            .any(|b| !b.is_ascii_graphic() || matches!(b, b'/' | b'?' | b'#' | b'%'))
    {
        return Err(Error::Request(format!(
            "{segment:?} is not a channel or client name"
        )));
    }
    Ok(())
}

/// Sends one request on a new connection and returns the answer's head, its body
/// still streaming. Connecting and the head are bounded by `timeout`.
pub(crate) async fn send(
    node: &Node,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Bytes>,
    timeout: Duration,
) -> Result<Response<Incoming>, Error> {
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(format!("{}{path}", node.prefix))
        .header("host", node.authority.as_str());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(Full::new(body.unwrap_or_default()))
        .map_err(|e| Error::Request(e.to_string()))?;
    let attempt = async {
        let stream = TcpStream::connect(node.authority.as_str())
            .await
            .map_err(Error::Connect)?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(Error::Http)?;
        // Ends when the answer's body is read or dropped.
        tokio::spawn(connection);
        sender.send_request(request).await.map_err(Error::Http)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| Error::Timeout)?
}

/// The whole body of an answer, bounded by `timeout` and `limit` bytes.
pub(crate) async fn read_body(
    response: Response<Incoming>,
    timeout: Duration,
    limit: usize,
) -> Result<Bytes, Error> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(response.into_body(), limit);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(Error::Timeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) => match e.downcast::<hyper::Error>() {
            Ok(e) => Err(Error::Http(*e)),
            Err(e) => Err(Error::Answer(e.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_node_addresses() {
        let node = |url| Node::parse(url).map(|n| (n.authority, n.prefix));
        assert_eq!(
            node("http://127.0.0.1:8080").unwrap(),
            ("127.0.0.1:8080".into(), String::new())
        );
        assert_eq!(
            node("http://sse.example:81/").unwrap(),
            ("sse.example:81".into(), String::new())
        );
        assert_eq!(
            node("http://sse.example/broker/").unwrap(),
            ("sse.example:80".into(), "/broker".into())
        );
        assert_eq!(node("http://[::1]").unwrap().0, "[::1]:80");
        assert_eq!(node("http://[::1]:9").unwrap().0, "[::1]:9");
        for bad in [
            "https://a:1",
            "a:1",
            "http://",
            "http://u@a:1",
            "http://a b:1",
        ] {
            assert!(node(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            Node::parse_all(Vec::<String>::new()),
            Err(Error::NoNodes)
        ));
    }
}
