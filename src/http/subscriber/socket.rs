//! A subscriber's socket once its stream is open: the stream's task ([`pump`]) and
//! the publishers that write to the socket directly ([`SharedIo`], the broker's
//! [`Sink`](crate::broker::Sink)) share it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::stream::EventStream;
use crate::transport::TrySend;

/// Writes a subscriber's event stream on its socket until either ends. The socket is
/// shared with publishers: while the stream waits with nothing to write, an append
/// may write its event to the socket directly (see [`SharedIo`]), which spares a
/// task wake per subscriber per event.
pub(super) async fn pump<Io>(io: Io, first: Bytes, mut stream: EventStream, _held: impl Send)
where
    Io: AsyncRead + AsyncWrite + TrySend + Unpin + Send + 'static,
{
    let io = Arc::new(SharedIo(Mutex::new(io)));
    stream.attach(io.clone());
    let mut pending = Some(first);
    let mut probe = [0u8; 16];
    std::future::poll_fn(|cx| {
        let mut io = io.lock();
        loop {
            // The client closing its side ends the subscription; anything it sends
            // on a stream connection is ignored.
            let mut read = ReadBuf::new(&mut probe);
            match Pin::new(&mut *io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(()),
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => continue,
                Poll::Pending => {}
            }
            if let Some(buf) = &mut pending {
                match Pin::new(&mut *io).poll_write(cx, buf) {
                    Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(()),
                    Poll::Ready(Ok(n)) => buf.advance(n),
                    Poll::Pending => return Poll::Pending,
                }
                if !buf.is_empty() {
                    continue;
                }
                pending = None;
            }
            match stream.poll_chunk(cx) {
                Poll::Ready(Some(chunk)) => pending = Some(chunk),
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    // Unsubscribes, so no publisher writes to the socket any more.
    drop(stream);
    let _ = std::future::poll_fn(|cx| Pin::new(&mut *io.lock()).poll_shutdown(cx)).await;
}

/// A subscriber's socket, shared by its stream's task and the publishers that write
/// to it directly ([`crate::broker::Sink`]). The stream's rules keep the two from
/// ever interleaving; the mutex only makes the sharing sound, and is uncontended
/// but for a moment.
///
/// Aligned to a cache line: a direct write touches the mutex and the socket's
/// descriptor right behind it, one line that [`crate::broker::Sink::warm`] can
/// fetch ahead of the write.
#[repr(align(64))]
struct SharedIo<Io>(Mutex<Io>);

impl<Io> SharedIo<Io> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Io> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<Io: AsyncWrite + TrySend + Unpin + Send> crate::broker::Sink for SharedIo<Io> {
    fn warm(&self) {
        // A plain load from the mutex's line: no lock, and nothing is done with it.
        std::hint::black_box(self.0.is_poisoned());
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut io = self.lock();
        // A kernel socket: one non-blocking send.
        if let Some(result) = io.try_send(buf) {
            return result;
        }
        // Otherwise a write polled with a waker that does nothing: readiness-based
        // sockets (turmoil's) write what fits or say `Pending`, which is all a
        // non-blocking write is. The stream's task registers its own waker again
        // when it next writes.
        //
        // Unconstrained: these writes are made by whichever task appended (a
        // publisher's, a relay's), many per poll, and are not its own I/O. Counted
        // against its cooperative budget, every write past the 128th of one poll
        // would say `Pending` with room in the socket, and go the slow way through
        // the subscriber's task.
        let mut write = tokio::task::unconstrained(std::future::poll_fn(|cx| {
            Pin::new(&mut *io).poll_write(cx, buf)
        }));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match std::future::Future::poll(Pin::new(&mut write), &mut cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;

    use super::*;

    /// A direct write locks a subscriber's connection and reads the socket's
    /// descriptor: the lock and the whole tokio socket must lie in the first cache
    /// line of `SharedIo` (the one `Sink::warm` fetches). A field put before the
    /// stream in `Conn`, or a much larger tokio `TcpStream`, would split them.
    #[tokio::test]
    async fn the_lock_and_the_socket_of_a_shared_connection_share_a_cache_line() {
        use crate::transport::{Conn, Guarded};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut guarded = Guarded::new(listener, Arc::default(), Duration::from_secs(1));
        let (conn, _) = axum::serve::Listener::accept(&mut guarded).await;
        let shared = SharedIo(Mutex::new(conn));
        assert_eq!(std::mem::align_of_val(&shared), 64);
        let start = &shared as *const SharedIo<_> as usize;
        let guard = shared.lock();
        // The mutex's lock word first, then the connection, its stream first.
        let conn_at = &*guard as *const Conn<_> as usize - start;
        let stream_at = guard.get_ref() as *const tokio::net::TcpStream as usize - start;
        let end = stream_at + std::mem::size_of::<tokio::net::TcpStream>();
        assert!(
            conn_at > 0 && stream_at == conn_at && end <= 64,
            "lock word at 0, connection at {conn_at}, socket at {stream_at}..{end}"
        );
    }

    /// One append writes to every parked subscriber within a single poll of the
    /// appending task: none of those writes may be refused for the task's
    /// cooperative budget (128 operations a poll) while its socket has room.
    /// Polled writes are the ones the budget could refuse.
    #[tokio::test]
    async fn direct_writes_in_one_poll_are_not_refused_for_the_tasks_budget() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut sinks = Vec::new();
        let mut readers = Vec::new();
        for _ in 0..300 {
            let client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            sinks.push(SharedIo(Mutex::new(crate::transport::Polled(server))));
            readers.push(client);
        }
        // No await from here on: all of it runs in one poll of this task, as an
        // append's writes do.
        let frame = b"data: x\n\n";
        let refused = sinks
            .iter()
            .filter(|sink| !matches!(crate::broker::Sink::try_write(*sink, frame), Ok(n) if n == frame.len()))
            .count();
        assert_eq!(refused, 0, "direct writes refused with room in the socket");
        for mut reader in readers {
            let mut got = vec![0u8; frame.len()];
            reader.read_exact(&mut got).await.unwrap();
            assert_eq!(&got[..], &frame[..]);
        }
    }

    /// A direct write asks the kernel itself, behind the runtime's back: once it
    /// has filled the socket, it must say `WouldBlock` (never a partial frame
    /// without saying how much), and the stream's task, writing next, must still
    /// be woken when the client reads and room returns.
    #[tokio::test]
    async fn a_direct_write_that_fills_the_socket_leaves_the_task_able_to_wait_for_room() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let sink = Arc::new(SharedIo(Mutex::new(server)));
        let frame = vec![b'x'; 4096];
        let mut sent = 0usize;
        let mut direct = 0;
        loop {
            match crate::broker::Sink::try_write(&*sink, &frame) {
                Ok(n) => {
                    assert!(n > 0 && n <= frame.len(), "wrote {n} of {}", frame.len());
                    sent += n;
                    direct += 1;
                }
                Err(error) => {
                    assert_eq!(error.kind(), io::ErrorKind::WouldBlock, "{error}");
                    break;
                }
            }
            assert!(direct < 100_000, "the socket never filled");
        }
        assert!(direct > 1, "filled at the first write");
        // The task's turn: its write finds no room, waits, and is woken by the
        // client's reads.
        let task = {
            let sink = sink.clone();
            tokio::spawn(async move {
                std::future::poll_fn(|cx| Pin::new(&mut *sink.lock()).poll_write(cx, b"tail")).await
            })
        };
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while got.len() < sent + 4 {
            let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
                .await
                .expect("the task's write never went out")
                .unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(task.await.unwrap().unwrap(), 4);
        assert!(got[..sent].iter().all(|&b| b == b'x'));
        assert_eq!(&got[sent..], b"tail");
    }
}
